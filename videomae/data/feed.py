"""The device side of the input pipeline: `DeviceFeed` is the `prepare` of `videomae pretrain` and of the benchmarked
step (bench/train_step.py). A loader batch in pinned host memory -> clips and masks on the device, never waiting on
the host:

- the uint8 frames, crop boxes and TokenIds are copied on a side stream, so the copy of batch i+1 overlaps step i
  (the host runs ahead of the device: nothing in a step waits); the compute stream waits for the copy with an event
  and the tensors are recorded on it (`record_stream`) so the allocator never reuses them early;
- crop + bilinear resize (antialiased, as `F.interpolate(antialias=True)`) of the whole batch is two batched matrix
  products with per-sample weight matrices built on the device from the boxes: no per-sample loop, no host read of
  the boxes; a horizontal flip is the weight matrix reversed;
- clips stay uint8 `[B, 3, T, S, S]`: `ops.cube_embed` and `ops.norm_pix_mse` normalize uint8 as they read it, so
  no fp32 clip is ever materialized.

Layouts (as `gpu_aug`): frames uint8 `[B, T, H, W, 3]` (zero-padded to the batch's largest frame), boxes int64
`[B, 4]` `(y0, x0, h, w)` inside each sample's own frame.
"""

from __future__ import annotations

import torch

from videomae.masking import TokenIds


def resize_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-sample antialiased bilinear weights `[B, out_size, in_size]` that crop `[start, start + length)` of an
    axis of `in_size` pixels and resize it to `out_size` (rows sum to 1).

    torch's antialiased bilinear filter (PIL's): output i of a crop of `length` is centred at `c = s (i + 0.5)`,
    s = length / out_size, and pixel p of the crop weighs `max(0, 1 - |p + 0.5 - c| / max(s, 1))`, normalized over
    the crop (so the crop's edges clamp as torch's do). Weights are computed in fp32, then cast to `dtype`.
    start, length: int64 [B] on the device of the result."""
    device = start.device
    scale = length.to(torch.float32) / out_size  # [B]
    inv_support = 1.0 / scale.clamp(min=1.0)
    centers = scale[:, None] * (torch.arange(out_size, device=device, dtype=torch.float32) + 0.5)  # [B, out]
    p = torch.arange(in_size, device=device, dtype=torch.float32)[None, :] - start[:, None].to(torch.float32)
    w = (1.0 - ((p[:, None, :] + 0.5 - centers[:, :, None]) * inv_support[:, None, None]).abs()).clamp(min=0.0)
    inside = (p >= 0) & (p < length[:, None].to(torch.float32))  # [B, in]
    w = w * inside[:, None, :]
    return (w / w.sum(-1, keepdim=True)).to(dtype)


def crop_resize_batch(frames: torch.Tensor, boxes: torch.Tensor, size: int, flips: torch.Tensor | None = None,
                      dtype: torch.dtype | None = None) -> torch.Tensor:
    """uint8 frames `[B, T, H, W, 3]`, boxes int64 `[B, 4]` `(y0, x0, h, w)` -> uint8 clips `[B, 3, T, size, size]`:
    each sample's box cropped and resized (antialiased bilinear, rounded), flipped where `flips` [B] is True.

    dtype: of the two matrix products (default fp16 on CUDA, whose 11-bit significand keeps the result within one
    uint8 level of the exact resize, and fp32 elsewhere)."""
    if frames.dtype != torch.uint8 or frames.dim() != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [B, T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    b, t, h, w, c = frames.shape
    if boxes.shape != (b, 4):
        raise ValueError(f"boxes must be [B={b}, 4], got {list(boxes.shape)}")
    dtype = dtype or (torch.float16 if frames.device.type == "cuda" else torch.float32)
    boxes = boxes.to(frames.device)
    wy = resize_weights(boxes[:, 0], boxes[:, 2], h, size, dtype)  # [B, S, H]
    wx = resize_weights(boxes[:, 1], boxes[:, 3], w, size, dtype)  # [B, S, W]
    if flips is not None:
        wx = torch.where(flips.to(frames.device).view(b, 1, 1), wx.flip(1), wx)
    x = frames.permute(0, 2, 1, 4, 3).to(dtype).reshape(b, h * t * c, w)  # [B, H, T, 3, W] -> rows of W
    x = torch.bmm(x, wx.transpose(1, 2)).view(b, h, t * c * size)  # [B, H, T*3*S]
    x = torch.bmm(wy, x).view(b, size, t, c, size)  # [B, S_y, T, 3, S_x]
    out = torch.empty((b, c, t, size, size), dtype=torch.uint8, device=frames.device)
    return out.copy_(x.round_().clamp_(0, 255).permute(0, 3, 2, 1, 4))


class DeviceFeed:
    """`prepare(batch) -> (clips, ids)` on `device` (see the module docstring).

    batch: `(frames, boxes, ids)` from the GPU-augmentation loader (`gpu_aug=True`), or `(clips, ids)` already
    cropped (the CPU workers' path; moved as they are). ids: `TokenIds` or any tensor."""

    def __init__(self, device: torch.device | str, input_size: int = 224):
        self.device, self.size = torch.device(device), input_size
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def _to_device(self, leaves: list):
        """Tensors moved; other leaves (None, TokenIds.validated_for) kept as they are."""
        if self.stream is None:
            return [x.to(self.device) if isinstance(x, torch.Tensor) else x for x in leaves]
        compute = torch.cuda.current_stream(self.device)
        # No wait on the compute stream: the copy must overlap the step queued there. Its buffers come from the
        # side stream's pool and are recorded on the compute stream below, so neither frees them early.
        with torch.cuda.stream(self.stream):
            moved = [x.to(self.device, non_blocking=True) if isinstance(x, torch.Tensor) else x for x in leaves]
        compute.wait_stream(self.stream)
        for x in moved:
            if isinstance(x, torch.Tensor):
                x.record_stream(compute)
        return moved

    def __call__(self, batch):
        *data, ids = batch
        leaves = list(ids) if isinstance(ids, TokenIds) else [ids]
        moved = self._to_device([*data, *leaves])
        data, leaves = moved[:len(data)], moved[len(data):]
        ids = TokenIds(*leaves) if isinstance(ids, TokenIds) else leaves[0]
        if len(data) == 2:  # frames, boxes: crop and resize here
            return crop_resize_batch(data[0], data[1], self.size), ids
        return data[0], ids
