"""add_layer_norm: a block's residual add and the LayerNorm after it, `s = x + residual; y = LayerNorm(s)`, in one
pass forward and one backward.

One place for the op: the public function (validation once, dispatch), its reference `add_layer_norm_ref` written
the way the official block computes it (under autocast: the sum in the stream's dtype, LayerNorm in fp32), the
fake kernel, the autograd glue and the backends' kernels (`IMPLS`: the torch kernels here, the Triton ones in
`kernels/add_layer_norm.py`; no CUDA C++ kernel: a LayerNorm row is one Triton program, a C++ version would move
the same bytes).

What backward keeps: the LayerNorm input in the stream's own dtype (bf16 in the encoder under autocast, where
autocast's LayerNorm keeps an fp32 copy) and the per-row mean and rstd. `y` comes out in the dtype its consumer
computes in (the autocast dtype), so no fp32 LayerNorm output is written and cast again.

Under `torch.compile` the public function is the reference: inductor fuses the add, the LayerNorm and the cast
into one kernel and, given `videomae.layers.recompute.COMPILE_SETTINGS`, recomputes `y` in backward instead of
keeping it; an opaque op would have to keep `y` (bench/memory.py, bench/cost_model.py measure both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from videomae.dispatch import select

from . import _checks
from .library import torch_op


def add_layer_norm(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-6,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [..., D] (the residual stream); residual: [..., D] (a branch's output) or None; weight, bias: [D]
    -> (s = x + residual in their promoted dtype (x itself without a residual), LayerNorm(s) [..., D] in out_dtype).
    out_dtype: default the autocast dtype when autocast is on for x's device (the dtype a following Linear
    computes in), else s's dtype."""
    _check(x, residual, weight, bias)
    if out_dtype is None:
        dev = x.device.type
        stream = x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)
        out_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else stream
    if torch.compiler.is_compiling():
        s, y = add_layer_norm_ref(x, residual, weight, bias, eps)
        return s, y.to(out_dtype)
    backend = select("add_layer_norm", dict(x=x, residual=residual, weight=weight, bias=bias))
    s, y, _, _ = torch_op("add_layer_norm", backend.name)(x, residual, weight, bias, eps, out_dtype)
    return (x if residual is None else s), y


def add_layer_norm_ref(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-6,
    *,
    upcast: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official block: `s = x + residual` (torch's promotion), `F.layer_norm(s)` in fp32 (what autocast runs;
    fp64 with `upcast`, the test oracle) -> (s, y in fp32 / fp64). Arguments as `add_layer_norm`."""
    if upcast:
        x, residual, weight, bias = (None if t is None else t.double() for t in (x, residual, weight, bias))
    s = x if residual is None else x + residual
    ct = torch.float64 if upcast else torch.float32
    return s, F.layer_norm(s.to(ct), (s.shape[-1],), weight.to(ct), bias.to(ct), eps)


def _check(x, residual, weight, bias) -> None:
    _checks._tensor(x, "x", tuple(range(1, 9)), _checks.FLOATS)
    d = x.shape[-1]
    if residual is not None:
        _checks._tensor(residual, "residual", (x.dim(),), _checks.FLOATS)
        if residual.shape != x.shape:
            raise ValueError(f"residual must have x's shape {list(x.shape)}, got {list(residual.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        _checks._tensor(t, name, (1,), _checks.FLOATS)
        if t.shape[0] != d:
            raise ValueError(f"{name} must have shape [{d}] (x's last dim), got {list(t.shape)}")
    _checks._same_device(x, residual=residual, weight=weight, bias=bias)


# ---------------------------------------------------------------------------------------------- kernels


def _stream_dtype(x: torch.Tensor, residual: torch.Tensor | None) -> torch.dtype:
    return x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)


def torch_forward(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
                  eps: float, out_dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (s or empty, y [out_dtype], mean [M] fp32, rstd [M] fp32): aten's LayerNorm in fp32 (fp64 for fp64)."""
    s = x if residual is None else x + residual
    ct = torch.float64 if s.dtype == torch.float64 else torch.float32
    y, mean, rstd = torch.native_layer_norm(s.to(ct), (s.shape[-1],), weight.to(ct), bias.to(ct), eps)
    out = s if residual is not None else x.new_empty(0)
    return out, y.to(out_dtype), mean.reshape(-1).float(), rstd.reshape(-1).float()


def torch_backward(grad_y: torch.Tensor, grad_sum: torch.Tensor | None, saved: torch.Tensor, mean: torch.Tensor,
                   rstd: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (d LayerNorm input in saved's dtype, d weight fp32, d bias fp32): aten's LayerNorm backward."""
    ct = torch.float64 if saved.dtype == torch.float64 else torch.float32
    shape = (*saved.shape[:-1], 1)
    dx, dw, db = torch.ops.aten.native_layer_norm_backward(
        grad_y.to(ct), saved.to(ct), (saved.shape[-1],), mean.view(shape).to(ct), rstd.view(shape).to(ct),
        weight.to(ct), bias.to(ct), [True, True, True])
    if grad_sum is not None:
        dx = dx + grad_sum.to(ct)
    return dx.to(saved.dtype), dw.float(), db.float()


def triton_forward(x, residual, weight, bias, eps, out_dtype):
    from videomae.kernels.add_layer_norm import add_layer_norm_fwd

    return add_layer_norm_fwd(x, residual, weight, bias, eps, out_dtype)


def triton_backward(grad_y, grad_sum, saved, mean, rstd, weight, bias):
    from videomae.kernels.add_layer_norm import add_layer_norm_bwd

    return add_layer_norm_bwd(grad_y, grad_sum, saved, mean, rstd, weight)


# The signatures torch 2.11 reads the schema from (`library.SCHEMAS` says the same).
for _f in (torch_forward, triton_forward):
    _f.__annotations__ = torch_forward.__annotations__
for _f in (torch_backward, triton_backward):
    _f.__annotations__ = torch_backward.__annotations__

IMPLS = {
    "torch": {"add_layer_norm": torch_forward, "add_layer_norm_backward": torch_backward},
    "triton": {"add_layer_norm": triton_forward, "add_layer_norm_backward": triton_backward},
}


# ---------------------------------------------------------------------------------------------- fake kernels


def fake(backend: str):
    def add_layer_norm_fake(x, residual, weight, bias, eps, out_dtype):
        m = x.numel() // x.shape[-1]
        s = x.new_empty(x.shape, dtype=_stream_dtype(x, residual)) if residual is not None else x.new_empty(0)
        return (s, x.new_empty(x.shape, dtype=out_dtype), x.new_empty(m, dtype=torch.float32),
                x.new_empty(m, dtype=torch.float32))

    return add_layer_norm_fake


def backward_fake(grad_y, grad_sum, saved, mean, rstd, weight, bias):
    d = saved.shape[-1]
    return torch.empty_like(saved), saved.new_empty(d, dtype=torch.float32), saved.new_empty(d, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------- autograd


def setup(ctx, inputs, output):
    x, residual, weight, bias, _, _ = inputs
    s, _, mean, rstd = output
    ctx.save_for_backward(x if residual is None else s, mean, rstd, weight, bias)
    ctx.dtypes = (x.dtype, None if residual is None else residual.dtype, weight.dtype, bias.dtype)


def backward(backend: str):
    def add_layer_norm_backward(ctx, grad_s, grad_y, grad_mean, grad_rstd):
        saved, mean, rstd, weight, bias = ctx.saved_tensors
        x_dtype, r_dtype, w_dtype, b_dtype = ctx.dtypes
        if grad_y is None:
            grad_y = torch.zeros_like(saved)
        if r_dtype is None or grad_s is None or grad_s.numel() == 0:
            grad_s = None
        dx, dw, db = torch_op("add_layer_norm_backward", backend)(grad_y.contiguous(), None if grad_s is None else
                                                                  grad_s.contiguous(), saved, mean, rstd, weight, bias)
        return (dx.to(x_dtype), None if r_dtype is None else dx.to(r_dtype), dw.to(w_dtype), db.to(b_dtype), None,
                None)

    return add_layer_norm_backward
