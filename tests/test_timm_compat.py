import pytest

import videomae

timm = pytest.importorskip("timm")


def test_models_register_with_timm_without_clobbering_its_vits():
    names = videomae.register_timm_models()
    assert "pretrain_videomae_base_patch16_224" in names and "videomae_vit_base_patch16_224" in names
    assert "vit_base_patch16_224" not in names  # timm's image ViT keeps its name
    model = timm.create_model("videomae_vit_tiny_patch16_224", num_classes=3, img_size=32, num_frames=4)
    assert isinstance(model, videomae.VisionTransformer) and model.num_classes == 3
    with pytest.raises(ValueError, match="load_checkpoint"):
        timm.create_model("pretrain_videomae_tiny_patch16_224", pretrained=True)
    assert videomae.register_timm_models() == names  # idempotent
