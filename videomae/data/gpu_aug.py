"""The worker side of GPU augmentation: uint8 crops of different sizes in one zero-padded block.

The workers only decode and draw crop boxes, and ship uint8 frames (1 byte per pixel instead of 4: a 16-frame
320x428 source clip is 6.6 MB, its float 224x224 crop 9.6 MB); `videomae.data.feed.DeviceFeed` copies the block
to the device and resizes the whole batch there. Layouts:
- frames: uint8 `[B, T, H, W, 3]`, zero-padded to the largest H, W of the batch (`pad_frames`)
- boxes:  int64 `[B, 4]`, `(y0, x0, h, w)` inside each sample's own (unpadded) frame
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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
