"""Eager references of the fused ops, written the way the official code computes them.

Tests and benchmarks both import these (one definition of "correct"). They are never dispatched to:
the `torch` backend has its own, cheaper eager implementation in `torch_backend.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from videomae.loss import IMAGENET_MEAN, IMAGENET_STD, pixel_loss


def normalize_uint8(videos: torch.Tensor, mean, std, dtype: torch.dtype) -> torch.Tensor:
    """uint8 [B, C, T, H, W] -> `(x / 255 - mean) / std` in fp32 (fp64 for an fp64 oracle), cast to `dtype`."""
    ct = torch.float64 if dtype == torch.float64 else torch.float32
    m = torch.as_tensor(mean, dtype=ct, device=videos.device).view(1, -1, 1, 1, 1)
    s = torch.as_tensor(std, dtype=ct, device=videos.device).view(1, -1, 1, 1, 1)
    return ((videos.to(ct) / 255 - m) / s).to(dtype)


def cube_embed_ref(
    videos: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pos: torch.Tensor | None,
    mask: torch.Tensor,
    *,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
) -> torch.Tensor:
    """Conv3d on every cube, add pos (cast to the output dtype, like the official `type_as`), keep visible.

    videos: [B, C, T, H, W]; weight: [D, C, t, p, p]; pos: [1, N, D] or [N, D]; mask: [B, N] -> [B, N_vis, D]
    """
    if videos.dtype == torch.uint8:
        videos = normalize_uint8(videos, mean, std, weight.dtype)
    x = F.conv3d(videos, weight, bias, stride=weight.shape[2:])
    x = rearrange(x, "b d t h w -> b (t h w) d")
    if pos is not None:
        x = x + pos.reshape(1, x.shape[1], -1).to(x.dtype)
    return x[~mask].reshape(x.shape[0], -1, x.shape[-1])


def decoder_input_ref(
    x_vis: torch.Tensor,
    mask_token: torch.Tensor,
    pos: torch.Tensor,
    mask: torch.Tensor,
    decode_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """`cat([x_vis + pos[~mask], mask_token + pos[decoded]], 1)`, sums in fp32 (fp64 for fp64), output in x_vis's dtype.

    x_vis: [B, N_vis, Dd]; mask_token: [1, 1, Dd]; pos: [1, N, Dd] or [N, Dd]; mask, decode_mask: [B, N]
    -> [B, N_vis + N_dec, Dd]; decoded = mask (V1) or ~decode_mask (V2).
    """
    b, _, d = x_vis.shape
    ct = torch.float64 if x_vis.dtype == torch.float64 else torch.float32
    pos = pos.reshape(1, -1, d).expand(b, -1, -1).to(ct)
    decoded = mask if decode_mask is None else ~decode_mask
    vis = x_vis.to(ct) + pos[~mask].reshape(b, -1, d)
    dec = mask_token.reshape(1, 1, d).to(ct) + pos[decoded].reshape(b, -1, d)
    return torch.cat([vis, dec], dim=1).to(x_vis.dtype)


def norm_pix_mse_ref(
    pred: torch.Tensor,
    videos: torch.Tensor,
    mask: torch.Tensor,
    *,
    tubelet_size: int = 2,
    patch_size: int = 16,
    normalize_target: bool = True,
    decode_mask: torch.Tensor | None = None,
    style: str = "videomae",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
) -> torch.Tensor:
    """`videomae.loss.pixel_loss`; uint8 clips are ImageNet-normalized first. -> scalar fp32 loss"""
    if videos.dtype == torch.uint8:
        videos = normalize_uint8(videos, mean, std, torch.float32)
    return pixel_loss(
        pred, videos, mask, normalize_target, tubelet_size, patch_size, decode_mask, style=style, mean=mean, std=std
    )


def to_fp64(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """Detached fp64 leaf copies (uint8 and Bool stay as they are), with requires_grad copied: the test oracle."""
    out = []
    for t in tensors:
        if t is None or not t.is_floating_point():
            out.append(t)
            continue
        out.append(t.detach().double().requires_grad_(t.requires_grad))
    return out


def norm_pix_mse_fp64(
    pred: torch.Tensor,
    videos: torch.Tensor,
    mask: torch.Tensor,
    *,
    tubelet_size: int = 2,
    patch_size: int = 16,
    normalize_target: bool = True,
    decode_mask: torch.Tensor | None = None,
    style: str = "videomae",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
) -> torch.Tensor:
    """The loss of `pixel_loss` computed entirely in fp64 (pixel_loss itself works in fp32): the test oracle.

    pred: [B, N_dec, t*p*p*C] (any float dtype, grad flows to it) -> scalar fp64
    """
    m = torch.as_tensor(mean, dtype=torch.float64, device=videos.device).view(1, -1, 1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float64, device=videos.device).view(1, -1, 1, 1, 1)
    x = videos.detach().double()
    x = x / 255 if videos.dtype == torch.uint8 else x * s + m  # [0, 1] pixels
    if style == "mae_st":
        x = (x - m) / s
    cubes = rearrange(x, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=tubelet_size, p1=patch_size,
                      p2=patch_size)
    if normalize_target and style == "videomae":
        cubes = (cubes - cubes.mean(-2, keepdim=True)) / (cubes.var(-2, keepdim=True).sqrt() + 1e-6)
    cubes = cubes.reshape(*cubes.shape[:2], -1)
    if normalize_target and style == "mae_st":
        cubes = (cubes - cubes.mean(-1, keepdim=True)) / (cubes.var(-1, keepdim=True) + 1e-6) ** 0.5
    b = cubes.shape[0]
    decoded = mask if decode_mask is None else ~decode_mask
    err = (pred.double() - cubes[decoded].reshape(b, -1, cubes.shape[-1])) ** 2
    if decode_mask is None:
        return err.mean()
    w = mask[decoded].reshape(b, -1).double()
    return (err.mean(-1) * w).sum() / w.sum()
