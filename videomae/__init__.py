"""videomae: fast, exact VideoMAE pretraining and fine-tuning.

    model = videomae.create_model("pretrain_videomae_base_patch16_224")
    mask = videomae.masking.tube_mask(B, (8, 14, 14), 0.9)
    pred = model(videos, mask)               # [B, N_masked, 1536]
    loss = model.forward_loss(videos, pred, mask)
    model, report = videomae.from_pretrained("MCG-NJU/videomae-base")   # Hugging Face folder or Hub id

The public names below are imported on first use (PEP 562), so `import videomae` and the command line's
`--help` do not pay for the models, the fused ops or torch.compile's machinery until something needs them.
"""

from __future__ import annotations

import importlib

from videomae import _layout  # noqa: F401  (first: it maps videomae.kernels)
from videomae.timm_compat import register_if_timm_imported

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "PretrainVisionTransformer": "videomae.models", "VisionTransformer": "videomae.models",
    "create_model": "videomae.registry", "list_models": "videomae.registry", "register_model": "videomae.registry",
    "LoadReport": "videomae.checkpoint", "load_checkpoint": "videomae.checkpoint",
    "save_checkpoint": "videomae.checkpoint", "from_pretrained": "videomae.interop.pretrained",
    "pixel_loss": "videomae.ops.norm_pix_mse", "register_timm_models": "videomae.timm_compat",
}
_SUBMODULES = {"masking", "checkpoint", "models", "ops", "data", "interop", "integrity", "registry", "train"}

register_if_timm_imported()

__all__ = sorted([*_EXPORTS, "masking"])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"videomae.{name}")
    else:
        raise AttributeError(f"module 'videomae' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)
