"""ImageNet constants, the cube layout, and the loss's public names kept for users.

The loss itself is one op, `videomae.ops.norm_pix_mse` (its targets and reference in `videomae/ops/norm_pix_mse.py`);
this module stays import-light (data pipelines import the constants) and forwards the old names lazily.
"""

from __future__ import annotations

import torch
from einops import rearrange

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def patchify(videos: torch.Tensor, tubelet_size: int = 2, patch_size: int = 16) -> torch.Tensor:
    """videos: [B, C, T, H, W] -> cubes [B, N, t*p*p, C] in (t, h, w) raster order."""
    return rearrange(
        videos, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=tubelet_size, p1=patch_size, p2=patch_size
    )


def pixel_loss(
    pred: torch.Tensor,
    videos: torch.Tensor,
    mask: torch.Tensor,
    normalize_target: bool = True,
    tubelet_size: int = 2,
    patch_size: int = 16,
    decode_mask: torch.Tensor | None = None,
    *,
    style: str = "videomae",
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """`videomae.ops.norm_pix_mse` for Bool masks (mask: [B, N] True = masked; decode_mask: [B, N] True = not
    decoded, V2), converted by `masking.token_ids` (validates; syncs on a GPU: not for a training step)."""
    from videomae import ops
    from videomae.masking import token_ids

    ids = token_ids(mask, decode_mask)
    return ops.norm_pix_mse(pred, videos, ids.decoded, ids.scored, tubelet_size=tubelet_size, patch_size=patch_size,
                            normalize_target=normalize_target, style=style, mean=mean, std=std)


def __getattr__(name: str):
    if name == "pixel_targets":  # the targets are defined once, with their op
        from videomae.ops.norm_pix_mse import pixel_targets

        return pixel_targets
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
