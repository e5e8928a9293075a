"""Fused VideoMAE ops with per-call backend dispatch: `cube_embed`, `decoder_input`, `norm_pix_mse`.

Backends (priority cuda > triton > torch; `VIDEOMAE_BACKEND=auto|cuda|triton|torch` or
`with use_backend(name):` forces one, see `dispatch.py`):
- `torch`:  eager torch, any device (`torch_backend.py`).
- `triton`: Triton kernels in `videomae.kernels` (CUDA; CPU under `TRITON_INTERPRET=1`).
- `cuda`:   the compiled extension `videomae._C`, registered by `cuda_backend.py` when present.

Torch op names: backend `X` owns `videomae::{op}_X` and `videomae::{op}_X_backward` for each op, e.g.
`videomae::cube_embed_torch`, `videomae::norm_pix_mse_triton_backward`, `videomae::decoder_input_cuda`;
schemas in `library.SCHEMAS`, fake kernels and autograd shared via `library.register_fakes_and_autograd`.
The public functions below validate (ValueError naming the argument), pick a backend and call its op.

Adding a backend `X` (how `cuda_backend.py` plugs in): define the six ops `videomae::{op}_X[_backward]` with
the schemas of `library.SCHEMAS` (Python: `library.define_ops("X", impls)`; C++: `TORCH_LIBRARY` then
`library.register_fakes_and_autograd("X")`), subclass `dispatch.Backend` (name, priority, devices, dtypes,
min_compute_capability, `not_supported_reasons`) and call `register_backend(XBackend())`; this package imports
`videomae/ops/X_backend.py` for X in (triton, cuda), and an import error becomes a reason in `backend_report()`.
`preference.json` can order the fused backends per op from the committed benchmark (fastest first).
"""

from __future__ import annotations

import importlib
import importlib.util

import torch

from videomae.loss import IMAGENET_MEAN, IMAGENET_STD

from . import _checks, torch_backend  # noqa: F401  (defines the videomae::*_torch ops)
from .dispatch import (
    Backend,
    NotSupportedError,
    TorchBackend,
    backend_report,
    mark_broken,
    register_backend,
    select,
    use_backend,
)
from .library import torch_op

__all__ = [
    "Backend",
    "NotSupportedError",
    "backend_report",
    "cube_embed",
    "decoder_input",
    "norm_pix_mse",
    "register_backend",
    "use_backend",
]

register_backend(TorchBackend())

for _name in ("triton", "cuda"):
    if importlib.util.find_spec(f"videomae.ops.{_name}_backend") is None:
        mark_broken(_name, f"videomae.ops.{_name}_backend not installed")
        continue
    try:  # the module calls register_backend itself
        importlib.import_module(f"videomae.ops.{_name}_backend")
    except Exception as e:  # noqa: BLE001  (any import failure is a reason, not a crash)
        mark_broken(_name, f"import failed: {type(e).__name__}: {e}")


def cube_embed(
    videos: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pos: torch.Tensor | None,
    mask: torch.Tensor,
    *,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """Embed only the visible cubes: `(conv3d(videos, weight, bias, stride=kernel) + pos)[~mask]`.

    videos: [B, C, T, H, W] in weight's dtype, or uint8 (normalized by `(x/255 - mean)/std` first);
    weight: [D, C, t, p, p]; bias: [D] or None; pos: [1, N, D], [N, D] or None (cast to weight's dtype);
    mask: Bool [B, N], True = masked, same count per sample -> [B, N_vis, D] in weight's dtype
    Under autocast, weight and float clips are cast to the autocast dtype first, as conv3d would be.
    """
    if torch.is_autocast_enabled(videos.device.type):
        dtype = torch.get_autocast_dtype(videos.device.type)
        weight = weight.to(dtype)
        videos = videos.to(dtype) if videos.is_floating_point() else videos
    _checks.check_cube_embed(videos, weight, bias, pos, mask, mean, std)
    backend = select("cube_embed", dict(videos=videos, weight=weight, bias=bias, pos=pos, mask=mask))
    return torch_op("cube_embed", backend.name)(videos, weight, bias, pos, mask, list(mean), list(std))


def decoder_input(
    x_vis: torch.Tensor,
    mask_token: torch.Tensor,
    pos: torch.Tensor,
    mask: torch.Tensor,
    decode_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The official decoder input: `cat([x_vis + pos[~mask], mask_token + pos[decoded]], 1)`.

    x_vis: [B, N_vis, Dd]; mask_token: [1, 1, Dd] or [Dd]; pos: [1, N, Dd] or [N, Dd];
    mask: Bool [B, N], True = masked; decode_mask: Bool [B, N], True = not decoded (V2), None: decoded = mask
    -> [B, N_vis + N_dec, Dd] in x_vis' dtype (sums in fp32), each part in raster order
    """
    _checks.check_decoder_input(x_vis, mask_token, pos, mask, decode_mask)
    inputs = dict(x_vis=x_vis, mask_token=mask_token, pos=pos, mask=mask, decode_mask=decode_mask)
    backend = select("decoder_input", inputs)
    return torch_op("decoder_input", backend.name)(x_vis, mask_token, pos, mask, decode_mask)


def norm_pix_mse(
    pred: torch.Tensor,
    videos: torch.Tensor,
    mask: torch.Tensor,
    *,
    tubelet_size: int = 2,
    patch_size: int = 16,
    normalize_target: bool = True,
    decode_mask: torch.Tensor | None = None,
    style: str = "videomae",
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """`videomae.loss.pixel_loss` without materializing the targets.

    pred: [B, N_dec, t*p*p*C]; videos: [B, C, T, H, W] normalized with (mean, std), or uint8;
    mask / decode_mask as in `pixel_loss` -> scalar fp32 loss; d pred comes back in pred's dtype
    """
    _checks.check_norm_pix_mse(pred, videos, mask, decode_mask, tubelet_size, patch_size, style, mean, std)
    backend = select("norm_pix_mse", dict(pred=pred, videos=videos, mask=mask, decode_mask=decode_mask))
    return torch_op("norm_pix_mse", backend.name)(
        pred, videos, mask, decode_mask, tubelet_size, patch_size, normalize_target, style, list(mean), list(std)
    )
