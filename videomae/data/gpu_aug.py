"""Crop, resize and normalize a uint8 batch on whatever device it is given (GPU when training on one).

The workers then only decode and draw crop boxes, and ship uint8 frames (1 byte per pixel instead
of 4: a 16-frame 320x428 source clip is 6.6 MB, its float 224x224 crop 9.6 MB). Layouts:
- frames: uint8 `[B, T, H, W, 3]`, zero-padded to the largest H, W of the batch (`pad_frames`)
- boxes:  int64 `[B, 4]`, `(y0, x0, h, w)` inside each sample's own (unpadded) frame
- output: float32 `[B, 3, T, S, S]` ImageNet-normalized, or uint8 `[B, 3, T, S, S]` for a
  patch embedding that normalizes uint8 itself (`normalize=False`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from videomae.constants import IMAGENET_MEAN, IMAGENET_STD
from videomae.data.transforms import crop_resize, normalize


def pad_frames(clips: Sequence[torch.Tensor]) -> torch.Tensor:
    """uint8 `[..., T, H_i, W_i, 3]` of varying H_i, W_i -> one zero-padded tensor, stacked on dim 0."""
    h = max(c.shape[-3] for c in clips)
    w = max(c.shape[-2] for c in clips)
    if all(c.shape[-3] == h and c.shape[-2] == w for c in clips):
        return torch.stack(list(clips))
    out = clips[0].new_zeros((len(clips), *clips[0].shape[:-3], h, w, clips[0].shape[-1]))
    for i, c in enumerate(clips):
        out[i, ..., : c.shape[-3], : c.shape[-2], :] = c
    return out


class GpuAugment:
    """`(frames, boxes) -> clips` on `frames.device` or `device` (moved there first, non-blocking)."""

    def __init__(self, input_size: int = 224, normalize: bool = True, antialias: bool = True,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.size, self.normalize, self.antialias = input_size, normalize, antialias
        self.mean, self.std = mean, std

    def __call__(self, frames: torch.Tensor, boxes: torch.Tensor, device: torch.device | str | None = None,
                 flips: torch.Tensor | None = None) -> torch.Tensor:
        if frames.dtype != torch.uint8 or frames.dim() != 5 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 [B, T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
        if boxes.shape != (frames.shape[0], 4):
            raise ValueError(f"boxes must be [B={frames.shape[0]}, 4], got {list(boxes.shape)}")
        if device is not None:
            frames = frames.to(device, non_blocking=True)
        tchw = frames.permute(0, 1, 4, 2, 3)  # [B, T, 3, H, W], channels-last strides
        # One resize per sample: boxes differ in size, and per-sample calls keep the GPU result
        # equal to the CPU worker path (same function, same rounding to uint8 levels).
        out = torch.stack([
            crop_resize(clip, tuple(int(v) for v in box), self.size, self.antialias)
            for clip, box in zip(tchw, boxes.tolist())
        ])  # [B, T, 3, S, S] uint8
        if flips is not None:
            out = torch.where(flips.to(out.device).view(-1, 1, 1, 1, 1), out.flip(-1), out)
        if self.normalize:
            return normalize(out, self.mean, self.std)
        return out.transpose(1, 2).contiguous()
