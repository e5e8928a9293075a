"""Pixel reconstruction loss of VideoMAE (V1 engine, V2 dual masking) and MAE-ST.

This is the eager reference every fused loss kernel is checked against.
"""

from __future__ import annotations

import torch
from einops import rearrange

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

STYLES = ("videomae", "mae_st")


def patchify(videos: torch.Tensor, tubelet_size: int = 2, patch_size: int = 16) -> torch.Tensor:
    """videos: [B, C, T, H, W] -> cubes [B, N, t*p*p, C] in (t, h, w) raster order."""
    return rearrange(
        videos, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=tubelet_size, p1=patch_size, p2=patch_size
    )


def unpatchify(
    cubes: torch.Tensor, grid: tuple[int, int, int], tubelet_size: int = 2, patch_size: int = 16
) -> torch.Tensor:
    """cubes: [B, N, t*p*p*C] (channel fastest) -> videos [B, C, T, H, W]."""
    t, h, w = grid
    return rearrange(
        cubes,
        "b (t h w) (p0 p1 p2 c) -> b c (t p0) (h p1) (w p2)",
        t=t, h=h, w=w, p0=tubelet_size, p1=patch_size, p2=patch_size,
    )


def pixel_targets(
    videos: torch.Tensor,
    *,
    normalize_target: bool = True,
    tubelet_size: int = 2,
    patch_size: int = 16,
    style: str = "videomae",
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """Per-cube regression targets for every cube, fp32, no gradient.

    videos: [B, C, T, H, W], normalized with (mean, std) -> [B, N, t*p*p*C], channel fastest.
    - videomae: un-normalize to [0, 1]; per cube and channel `(x - mu) / (std_unbiased + 1e-6)`.
    - mae_st: the normalized input; per cube jointly over all values `(x - mu) / sqrt(var_unbiased + 1e-6)`.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    with torch.no_grad():
        x = videos.detach().float()
        if style == "videomae":
            m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1, 1)
            s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1, 1)
            x = x * s + m
        cubes = patchify(x, tubelet_size, patch_size)  # [B, N, P, C]
        if normalize_target and style == "videomae":
            mu = cubes.mean(dim=-2, keepdim=True)
            sd = cubes.var(dim=-2, unbiased=True, keepdim=True).sqrt()
            cubes = (cubes - mu) / (sd + 1e-6)
        cubes = rearrange(cubes, "b n p c -> b n (p c)")
        if normalize_target and style == "mae_st":
            mu = cubes.mean(dim=-1, keepdim=True)
            var = cubes.var(dim=-1, unbiased=True, keepdim=True)
            cubes = (cubes - mu) / (var + 1e-6) ** 0.5
        return cubes


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
    """MSE between decoder predictions and the pixel targets of the cubes it reconstructs, in fp32.

    pred: [B, N_dec, t*p*p*C]; videos: [B, C, T, H, W]; mask: [B, N] Bool, True = masked.
    decode_mask: [B, N] Bool, True = not decoded (VideoMAE V2's `decode_masked_pos`); None means
    the decoder reconstructs exactly the masked cubes (V1).
    V1: mean over all values of the masked cubes. V2: per-cube mean, averaged over cubes that are
    both decoded and masked. -> scalar loss
    """
    target = pixel_targets(
        videos, normalize_target=normalize_target, tubelet_size=tubelet_size, patch_size=patch_size,
        style=style, mean=mean, std=std,
    )
    b, _, c = target.shape
    decoded = mask if decode_mask is None else ~decode_mask
    labels = target[decoded].reshape(b, -1, c)
    if pred.shape != labels.shape:
        raise ValueError(f"pred must have shape {list(labels.shape)} (decoded cubes x values), got {list(pred.shape)}")
    err = (pred.float() - labels) ** 2
    if decode_mask is None:
        return err.mean()
    weight = mask[decoded].reshape(b, -1).float()  # decoded cubes that the encoder did not see
    return (err.mean(dim=-1) * weight).sum() / weight.sum()
