"""videomae: fast, exact VideoMAE pretraining and fine-tuning.

    model = videomae.create_model("pretrain_videomae_base_patch16_224")
    mask = videomae.masking.tube_mask(B, (8, 14, 14), 0.9)
    pred = model(videos, mask)               # [B, N_masked, 1536]
    loss = model.forward_loss(videos, pred, mask)
"""

from videomae import _layout, masking  # noqa: F401  (_layout first: it maps videomae.kernels)
from videomae.checkpoint import LoadReport, load_checkpoint, save_checkpoint
from videomae.models import PretrainVisionTransformer, VisionTransformer
from videomae.ops.norm_pix_mse import pixel_loss
from videomae.registry import create_model, list_models, register_model
from videomae.timm_compat import register_if_timm_imported, register_timm_models

__version__ = "0.1.0"

register_if_timm_imported()

__all__ = [
    "PretrainVisionTransformer", "VisionTransformer", "create_model", "list_models", "masking", "pixel_loss",
    "register_model", "LoadReport", "load_checkpoint", "save_checkpoint", "register_timm_models",
]
