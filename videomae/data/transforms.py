"""Spatial augmentation of uint8 clips, shared by the CPU workers and `gpu_aug`.

Layouts: frames from the decoder are `[T, H, W, 3]`; `as_tchw` views them as `[T, 3, H, W]`
(channels-last strides, the fast path of uint8 `interpolate`); model input is `[3, T, H, W]` float,
ImageNet-normalized. Crop boxes are `(y0, x0, h, w)` in pixels. Randomness comes from a
`numpy.random.Generator` handed in, so a clip is a pure function of (frames, rng state).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from videomae.constants import IMAGENET_MEAN, IMAGENET_STD

PRETRAIN_SCALES = (1.0, 0.875, 0.75, 0.66)

Box = tuple[int, int, int, int]


def as_tchw(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> [T, 3, H, W] view (no copy)."""
    return torch.as_tensor(frames).permute(0, 3, 1, 2)


# ---------------------------------------------------------------- crop boxes


def fixed_offsets(image_w: int, image_h: int, crop_w: int, crop_h: int) -> list[tuple[int, int]]:
    """The 13 `(x0, y0)` of `GroupMultiScaleCrop.fill_fix_offset(more_fix_crop=True)`:
    corners, center, edge centers and quarter points on a 4x4 step grid."""
    ws, hs = (image_w - crop_w) // 4, (image_h - crop_h) // 4
    grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
    return [(i * ws, j * hs) for i, j in grid]


def multiscale_crop_box(
    h: int, w: int, size: int, rng: np.random.Generator, scales=PRETRAIN_SCALES, max_distort: int = 1
) -> Box:
    """Official pretraining crop (`GroupMultiScaleCrop`): side lengths `int(min(h, w) * s)` snapped to
    `size` when within 2 pixels, a (width, height) pair whose scale indices differ by <= max_distort,
    and one of the 13 fixed offsets."""
    base = min(h, w)
    sides = [int(base * s) for s in scales]
    sides = [size if abs(s - size) < 3 else s for s in sides]
    pairs = [(cw, ch) for i, ch in enumerate(sides) for j, cw in enumerate(sides) if abs(i - j) <= max_distort]
    cw, ch = pairs[rng.integers(len(pairs))]
    offsets = fixed_offsets(w, h, cw, ch)
    x0, y0 = offsets[rng.integers(len(offsets))]
    return y0, x0, ch, cw


def random_resized_crop_box(
    h: int, w: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts: int = 10
) -> Box:
    """SlowFast/VideoMAE `_get_param_spatial_crop`: area fraction uniform in `scale`, log-uniform aspect
    ratio, 10 attempts, then a central crop clamped to `ratio`."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        cw, ch = int(round(h * max(ratio))), h
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def center_crop_box(h: int, w: int, size: int) -> Box:
    return (h - size) // 2, (w - size) // 2, size, size


def three_crop_box(h: int, w: int, size: int, view: int, num_views: int) -> Box:
    """Test crops along the long side after a short-side resize (V1 `spatial_step`)."""
    step = (max(h, w) - size) / (num_views - 1) if num_views > 1 else (max(h, w) - size) / 2
    start = int(view * step) if num_views > 1 else int(step)
    return (start, (w - size) // 2, size, size) if h >= w else ((h - size) // 2, start, size, size)


def short_side_hw(h: int, w: int, short: int) -> tuple[int, int]:
    """Output (h, w) of a resize that makes the short side `short` (V1 `video_transforms.Resize`)."""
    if h <= w:
        return short, int(round(w * short / h))
    return int(round(h * short / w)), short


# ---------------------------------------------------------------- pixel ops


def resize(
    clip: torch.Tensor, hw: tuple[int, int], antialias: bool = True, via_float: bool | None = None
) -> torch.Tensor:
    """[T, 3, H, W] -> [T, 3, h, w] bilinear, same dtype. uint8 stays uint8 (rounded): on CPU through
    torch's uint8 kernel, elsewhere (`via_float`, default: not CPU) in float32 then rounded, so both
    give the same uint8 levels up to +-1."""
    if tuple(clip.shape[-2:]) == tuple(hw):
        return clip
    if via_float is None:
        via_float = clip.device.type != "cpu"
    if clip.dtype == torch.uint8 and via_float:
        out = F.interpolate(clip.float(), size=hw, mode="bilinear", antialias=antialias, align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return F.interpolate(clip, size=hw, mode="bilinear", antialias=antialias, align_corners=False)


def crop_resize(clip: torch.Tensor, box: Box, size: int, antialias: bool = True) -> torch.Tensor:
    """[T, 3, H, W] -> [T, 3, size, size]: crop `box` then bilinear resize."""
    y0, x0, h, w = box
    return resize(clip[:, :, y0:y0 + h, x0:x0 + w], (size, size), antialias)


def normalize(
    clip: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD, out: torch.Tensor | None = None
) -> torch.Tensor:
    """uint8 (or float in [0, 1]) [..., T, 3, H, W] -> float32 [..., 3, T, H, W], `(x/255 - mean) / std`.

    `out`: a float32 [..., 3, T, H, W] tensor to write into (saves a copy when clips are batched)."""
    # Reorder while still uint8 (a quarter of the bytes), then two in-place passes on the floats.
    x = clip.transpose(-3, -4)
    if out is None:
        out = x.contiguous().float()
    else:
        out.copy_(x)
    scale = 255.0 if clip.dtype == torch.uint8 else 1.0
    a = torch.tensor([1.0 / (scale * s) for s in std], dtype=torch.float32, device=clip.device).view(3, 1, 1, 1)
    b = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32, device=clip.device).view(3, 1, 1, 1)
    return out.mul_(a).add_(b)


def random_erasing(clip: torch.Tensor, rng: np.random.Generator, prob: float = 0.25, min_area: float = 0.02,
                   max_area: float = 1 / 3, min_aspect: float = 0.3) -> torch.Tensor:
    """timm `RandomErasing(mode='pixel')` as VideoMAE applies it: on `[T, C, H, W]` every frame is
    its own image, erased with probability `prob` by a box of N(0, 1) noise. In place; returns clip."""
    t, c, h, w = clip.shape
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    for i in range(t):
        if rng.random() > prob:
            continue
        for _ in range(10):
            target = rng.uniform(min_area, max_area) * h * w
            aspect = math.exp(rng.uniform(*log_aspect))
            eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if ew < w and eh < h:
                top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
                noise = rng.standard_normal((c, eh, ew), dtype=np.float32)
                clip[i, :, top:top + eh, left:left + ew] = torch.from_numpy(noise)
                break
    return clip


# ---------------------------------------------------------------- batch-level mixing


def mixup_cutmix(
    x: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    rng: np.random.Generator,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    switch_prob: float = 0.5,
    prob: float = 1.0,
    smoothing: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official fine-tuning's Mixup (VideoMAE V1's copy of timm's, mode 'batch', correct_lam) on clips:
    x [B, C, T, H, W], target [B] int -> (mixed x, soft targets [B, num_classes]); x itself is left as it is.

    Each sample mixes with its mirror `x.flip(0)`; a cutmix box covers every frame and channel. Soft targets:
    `lam * smooth(y) + (1 - lam) * smooth(y.flip(0))`, smooth = one-hot with `1 - smoothing + smoothing/K` on the
    class and `smoothing/K` elsewhere. B must be even. The draws are the official ones (same order, numpy's legacy
    algorithms) from a RandomState seeded by one draw of `rng`: the official code seeded that way gives the same
    batch, and mixing stays a pure function of `rng`.

    Ours, not `timm.data.Mixup`: timm >= 1.0 ends a cutmix box at `cy + (cut + 1) // 2` where the official code
    (V1's own copy of timm's mixup; V2 pins timm 0.4.12) ends it at `cy + cut // 2`. On 224x224 clips with the official
    recipe that is another box in 43.5% of cutmix batches, lam off by up to 0.0087 (mean 0.0015).
    """
    if x.shape[0] % 2:
        raise ValueError(f"mixup/cutmix pairs each sample with its mirror: batch size must be even, got {x.shape[0]}")
    draw = np.random.RandomState(int(rng.integers(2**32)))  # noqa: NPY002  (the official's legacy algorithms)
    lam, use_cutmix = 1.0, False
    if draw.rand() < prob and (mixup_alpha > 0 or cutmix_alpha > 0):
        use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or draw.rand() < switch_prob)
        lam = float(draw.beta(cutmix_alpha, cutmix_alpha) if use_cutmix else draw.beta(mixup_alpha, mixup_alpha))
    if lam != 1.0 and use_cutmix:
        h, w = x.shape[-2:]
        cut = math.sqrt(1 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = draw.randint(0, h), draw.randint(0, w)
        y0, y1 = np.clip([cy - ch // 2, cy + ch // 2], 0, h)
        x0, x1 = np.clip([cx - cw // 2, cx + cw // 2], 0, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
        lam = 1.0 - float((y1 - y0) * (x1 - x0)) / (h * w)  # the area actually pasted
    elif lam != 1.0:
        x = x * lam + x.flip(0) * (1.0 - lam)
    off = smoothing / num_classes
    y = torch.full((target.shape[0], num_classes), off, dtype=torch.float32, device=target.device)
    y.scatter_(1, target.view(-1, 1).long(), 1.0 - smoothing + off)
    return x, y * lam + y.flip(0) * (1.0 - lam)
