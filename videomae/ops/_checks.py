"""Input validation shared by every backend: bad input is one line, a ValueError that names the argument.

Validation runs once, in the public op, before dispatch, so a call fails the same way whichever backend would
have run it. Shapes, dtypes, devices and the per-channel statistics are always checked. Token id values (in
[0, N), none repeated within a row: `masking.check_ids`, the one copy of those rules) are checked here only
where the host can read them without waiting: CPU tensors, outside `torch.compile`. A GPU's ids are checked
where they are made, on the CPU (`masking.TokenIds.validated_for`, which the model requires); and whatever an
id holds, no kernel reads or writes outside its buffers (an id outside [0, N) reads and writes nothing).

Degenerate inputs, the same on every backend: an empty batch or no visible cube gives empty outputs
(`cube_embed`, `decoder_input`); a loss over no decoded cube is refused here; `std` must be positive.
"""

from __future__ import annotations

import math

import torch

from videomae.masking import check_ids

FLOATS = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
VIDEO_DTYPES = (*FLOATS, torch.uint8)


def _tensor(x, name: str, ndims: tuple[int, ...], dtypes: tuple[torch.dtype, ...]) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in ndims:
        raise ValueError(f"{name} must have rank {' or '.join(map(str, ndims))}, got shape {list(x.shape)}")
    if x.dtype not in dtypes:
        raise ValueError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {x.dtype}")
    if not x.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous()), got strides {x.stride()}")
    return x


def _same_device(ref: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.device != ref.device:
            raise ValueError(f"{name} must be on {ref.device} like the other inputs, got {t.device}")


def _ids(ids, name: str, batch: int, num_tokens: int, count: int | None = None) -> int:
    """Token ids [B, K] int64 (K <= N, or K == count when given), values checked when readable (module doc) -> K."""
    _tensor(ids, name, (2,), (torch.int64,))
    k = ids.shape[1]
    if ids.shape[0] != batch or k > num_tokens or (count is not None and k != count):
        want = f"[B={batch}, {'K<=' + str(num_tokens) if count is None else count}]"
        raise ValueError(f"{name} must be int64 token ids of shape {want}, got {list(ids.shape)}")
    # `type(...) is` excludes fake and functional tensors (tracing), whose values do not exist.
    if not torch.compiler.is_compiling() and type(ids) is torch.Tensor and ids.device.type == "cpu":
        check_ids(ids, name, num_tokens)
    return k


def _pos(pos, name: str, num_tokens: int, width: int) -> None:
    _tensor(pos, name, (2, 3), FLOATS)
    want = (1, num_tokens, width) if pos.dim() == 3 else (num_tokens, width)
    if tuple(pos.shape) != want:
        raise ValueError(f"{name} must have shape {list(want)} (or [N, D]), got {list(pos.shape)}")


def _stats(mean, std, channels: int) -> None:
    """Per-channel statistics: one finite value each, std positive (a zero std would divide by zero)."""
    for name, values in (("mean", mean), ("std", std)):
        if len(values) != channels:
            raise ValueError(f"{name} must have one value per channel ({channels}), got {len(values)}")
    if not all(math.isfinite(m) for m in mean):
        raise ValueError(f"mean must be finite, got {tuple(mean)}")
    if not all(math.isfinite(s) and s > 0 for s in std):
        raise ValueError(f"std must be positive and finite, got {tuple(std)}")


def grid_of(videos: torch.Tensor, tubelet: int, patch: int, name: str = "videos") -> tuple[int, int, int]:
    """videos [B, C, T, H, W] -> token grid (T', H', W'); the cube must divide T, H and W."""
    _, _, t, h, w = videos.shape
    if tubelet < 1 or patch < 1 or t % tubelet or h % patch or w % patch:
        raise ValueError(
            f"{name} frames x height x width {t}x{h}x{w} must be divisible by the cube {tubelet}x{patch}x{patch}"
        )
    return t // tubelet, h // patch, w // patch


def check_cube_embed(videos, weight, bias, pos, visible, mean, std) -> None:
    _tensor(videos, "videos", (5,), VIDEO_DTYPES)
    _tensor(weight, "weight", (5,), FLOATS)
    b, c = videos.shape[:2]
    d, wc, kt, kh, kw = weight.shape
    if wc != c:
        raise ValueError(f"weight must have {c} input channels like videos, got shape {list(weight.shape)}")
    if kh != kw:
        raise ValueError(f"weight must have a square spatial kernel, got shape {list(weight.shape)}")
    tt, hh, ww = grid_of(videos, kt, kh)
    if bias is not None:
        _tensor(bias, "bias", (1,), FLOATS)
        if bias.shape[0] != d:
            raise ValueError(f"bias must have shape [{d}], got {list(bias.shape)}")
    if pos is not None:
        _pos(pos, "pos", tt * hh * ww, d)
    _ids(visible, "visible", b, tt * hh * ww)
    _same_device(videos, weight=weight, bias=bias, pos=pos, visible=visible)
    if videos.dtype == torch.uint8:  # a float clip is used as it is: mean and std play no part
        _stats(mean, std, c)


def check_decoder_input(x_vis, mask_token, pos, visible, decoded) -> None:
    _tensor(x_vis, "x_vis", (3,), FLOATS)
    b, nv, d = x_vis.shape
    _tensor(mask_token, "mask_token", (1, 2, 3), FLOATS)
    if mask_token.numel() != d or mask_token.shape[-1] != d:
        raise ValueError(f"mask_token must have shape [1, 1, {d}] or [{d}], got {list(mask_token.shape)}")
    _tensor(pos, "pos", (2, 3), FLOATS)
    n = pos.shape[-2]
    _pos(pos, "pos", n, d)
    if visible.dim() == 2 and visible.shape[1] != nv:
        raise ValueError(f"x_vis must have one row per visible id ({visible.shape[1]}), got shape {list(x_vis.shape)}")
    _ids(visible, "visible", b, n, nv)
    _ids(decoded, "decoded", b, n)
    _same_device(x_vis, mask_token=mask_token, pos=pos, visible=visible, decoded=decoded)


def check_norm_pix_mse(pred, videos, decoded, scored, tubelet, patch, style, mean, std) -> None:
    _tensor(pred, "pred", (3,), FLOATS)
    _tensor(videos, "videos", (5,), VIDEO_DTYPES)
    b, c = videos.shape[:2]
    if style not in ("videomae", "mae_st"):
        raise ValueError(f"style must be 'videomae' or 'mae_st', got {style!r}")
    tt, hh, ww = grid_of(videos, tubelet, patch)
    n_dec = _ids(decoded, "decoded", b, tt * hh * ww)
    if n_dec == 0 or b == 0:
        raise ValueError(f"decoded must list at least one cube (the loss is a mean over them), got shape "
                         f"{list(decoded.shape)}")
    want = (b, n_dec, c * tubelet * patch * patch)
    if tuple(pred.shape) != want:
        raise ValueError(f"pred must have shape {list(want)} (decoded cubes x values), got {list(pred.shape)}")
    if scored is not None:
        _tensor(scored, "scored", (2,), (torch.bool,))
        if tuple(scored.shape) != (b, n_dec):
            raise ValueError(f"scored must be Bool of decoded's shape {[b, n_dec]}, got {list(scored.shape)}")
    _same_device(pred, videos=videos, decoded=decoded, scored=scored)
    _stats(mean, std, c)
