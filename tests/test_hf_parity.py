"""Hugging Face transformers VideoMAE weights give transformers' own predictions, loss and logits."""

import pytest
import torch

import videomae
from videomae import from_pretrained
from videomae.dispatch import use_backend
from videomae.interop.hf import model_from_hf_config, official_to_hf
from videomae.masking import tube_mask

transformers = pytest.importorskip("transformers")

# Tiny but complete: 2 encoder blocks, 1 decoder block, 2x2x2 token grid. MLP ratio 4 in both.
CONFIG = dict(
    image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=64, num_hidden_layers=2,
    num_attention_heads=4, intermediate_size=256, decoder_hidden_size=32, decoder_num_hidden_layers=1,
    decoder_num_attention_heads=4, decoder_intermediate_size=128, norm_pix_loss=True, attn_implementation="eager",
)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """HF's init leaves LayerNorms at (1, 0) and biases at 0, which would hide swapped or dropped
    tensors: give every parameter distinct random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.2 if p.dim() == 1 else p.shape[-1] ** -0.5
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if "layernorm" in name or "norm." in name else 0))


def _clips(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, CONFIG["num_frames"], 3, 32, 32, generator=g)  # HF layout [B, T, C, H, W]


def _ours(clips):
    """HF [B, T, C, H, W] -> ours [B, C, T, H, W] (the fused ops want it contiguous)."""
    return clips.permute(0, 2, 1, 3, 4).contiguous()


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _layout(sd, layout):
    """Either HF layout from the installed transformers' own: "old" stores the q/v biases as
    `attention.attention.{q_bias,v_bias}`, "new" as `attention.attention.{query,value}.bias`."""
    names = [("query.bias", "q_bias"), ("value.bias", "v_bias")]
    out = {}
    for k, v in sd.items():
        for new, old in names:
            src, dst = (old, new) if layout == "new" else (new, old)
            k = k.replace(f"attention.attention.{src}", f"attention.attention.{dst}")
        out[k] = v
    return out


def _native(sd):
    return "new" if any(k.endswith("attention.attention.query.bias") for k in sd) else "old"


def hf_pretrain(norm_pix_loss=True, **kw):
    cfg = transformers.VideoMAEConfig(**{**CONFIG, "norm_pix_loss": norm_pix_loss, "use_mean_pooling": False, **kw})
    cfg.architectures = ["VideoMAEForPreTraining"]  # as in the hub's config.json
    model = transformers.VideoMAEForPreTraining(cfg).eval()
    _randomize(model, 1)
    return model


@pytest.mark.parametrize("layout", ["new", "old"])
@pytest.mark.parametrize("norm_pix_loss", [True, False])
@pytest.mark.parametrize("backend", ["torch", "auto"])  # the eager reference ops and the fused ones
def test_pretraining_predictions_and_loss_match_transformers(layout, norm_pix_loss, backend):
    hf = hf_pretrain(norm_pix_loss)
    sd = _layout(hf.state_dict(), layout)
    assert any(k.endswith("q_bias" if layout == "old" else "query.bias") for k in sd)
    ours = model_from_hf_config(hf.config, task="pretrain").eval()
    report = videomae.load_checkpoint(ours, sd, strict=True)
    assert report.layout == "hf" and report.exact and not report.missing and not report.unexpected

    clips = _clips()
    mask = tube_mask(2, (2, 2, 2), 0.5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), use_backend(backend):
        want = hf(clips, bool_masked_pos=mask)
        videos = _ours(clips)
        pred = ours(videos, mask)
        loss = ours.forward_loss(videos, pred, mask)
    assert pred.shape == want.logits.shape
    assert _rel(pred, want.logits) < 1e-4
    assert abs(loss.item() - want.loss.item()) / want.loss.item() < 1e-4


def test_decoder_norm_eps_is_hfs_fixed_1e5_not_layer_norm_eps():
    # A large config eps changes every block's output, so only the right eps per norm matches HF.
    hf = hf_pretrain(layer_norm_eps=0.1)
    ours = model_from_hf_config(hf.config, task="pretrain").eval()
    videomae.load_checkpoint(ours, hf.state_dict(), strict=True)
    assert ours.decoder.norm.eps == 1e-5 and ours.decoder.blocks[0].norm1.eps == 0.1
    clips = _clips(seed=5)
    mask = tube_mask(2, (2, 2, 2), 0.5, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert _rel(ours(_ours(clips), mask), hf(clips, bool_masked_pos=mask).logits) < 1e-4


@pytest.mark.parametrize("layout", ["new", "old"])
def test_classifier_logits_match_transformers(layout):
    cfg = transformers.VideoMAEConfig(**CONFIG, num_labels=5, use_mean_pooling=True)
    hf = transformers.VideoMAEForVideoClassification(cfg).eval()
    _randomize(hf, 2)
    sd = _layout(hf.state_dict(), layout)
    ours = model_from_hf_config(hf.config, task="classifier").eval()
    report = videomae.load_checkpoint(ours, sd, strict=True)
    assert report.exact and ours.head.out_features == 5
    clips = _clips(seed=1)
    with torch.no_grad():
        assert _rel(ours(_ours(clips)), hf(clips).logits) < 1e-4


def test_hf_pretrained_encoder_fine_tunes_into_our_classifier():
    hf = hf_pretrain()
    ours = model_from_hf_config(hf.config, task="classifier", num_classes=3)
    report = videomae.load_checkpoint(ours, hf.state_dict())
    # As official fine-tuning: decoder and encoder norm dropped, fresh fc_norm and head.
    assert sorted(report.missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert any(k == "encoder.norm.weight" for k, _ in report.dropped)
    torch.testing.assert_close(ours.blocks[1].attn.qkv.weight[:64], hf.state_dict()[
        "videomae.encoder.layer.1.attention.attention.query.weight"], rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["new", "old"])
def test_export_to_hf_and_back(layout):
    hf = hf_pretrain()
    ours = model_from_hf_config(hf.config, task="pretrain").eval()
    _randomize(ours, 7)
    native = layout == _native(hf.state_dict())
    key_bias = native and any(k.endswith("attention.attention.key.bias") for k in hf.state_dict())
    exported = official_to_hf(ours.state_dict(), layout=layout, key_bias=key_bias)  # a zero key bias, if it has one
    if native:
        hf.load_state_dict(exported, strict=True)  # the installed transformers accepts it as its own
    back = model_from_hf_config(hf.config, task="pretrain").eval()
    videomae.load_checkpoint(back, exported, strict=True)
    clips = _clips(seed=2)
    mask = tube_mask(2, (2, 2, 2), 0.5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pred = ours(_ours(clips), mask)
        torch.testing.assert_close(back(_ours(clips), mask), pred, rtol=0, atol=0)
        if native:
            assert _rel(hf(clips, bool_masked_pos=mask).logits, pred) < 1e-4


def test_config_json_dict_and_unrepresentable_configs():
    ours = model_from_hf_config({**CONFIG, "use_mean_pooling": False, "architectures": ["VideoMAEForPreTraining"]})
    assert isinstance(ours, videomae.PretrainVisionTransformer) and ours.encoder.blocks[0].norm1.eps == 1e-12
    with pytest.raises(ValueError, match="task"):
        model_from_hf_config(CONFIG)


def test_mean_pooling_pretraining_config_has_no_encoder_norm_and_matches_transformers():
    # transformers' default (use_mean_pooling=True) builds the pretraining encoder without a final LayerNorm.
    hf = hf_pretrain(use_mean_pooling=True)
    assert not any(k.startswith("videomae.layernorm") for k in hf.state_dict())
    ours = model_from_hf_config(hf.config, task="pretrain").eval()
    report = videomae.load_checkpoint(ours, hf.state_dict(), strict=True)
    assert report.exact and not report.missing and not report.unexpected
    clips, mask = _clips(seed=6), tube_mask(2, (2, 2, 2), 0.5, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert _rel(ours(_ours(clips), mask), hf(clips, bool_masked_pos=mask).logits) < 1e-4


def test_load_checkpoint_takes_a_hugging_face_folder(tmp_path):
    hf = hf_pretrain()
    hf.save_pretrained(tmp_path)
    ours = model_from_hf_config(hf.config, task="pretrain").eval()
    report = videomae.load_checkpoint(ours, tmp_path, strict=True)
    assert report.layout == "hf" and report.exact
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty: .*no config\.json"):
        videomae.load_checkpoint(ours, empty)


def test_from_pretrained_folder_written_by_transformers(tmp_path):
    hf = hf_pretrain()
    hf.save_pretrained(tmp_path)
    ours, report = from_pretrained(tmp_path)
    assert isinstance(ours, videomae.PretrainVisionTransformer) and report.exact
    clips, mask = _clips(seed=3), tube_mask(2, (2, 2, 2), 0.5, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert _rel(ours.eval()(_ours(clips), mask), hf(clips, bool_masked_pos=mask).logits) < 1e-4
