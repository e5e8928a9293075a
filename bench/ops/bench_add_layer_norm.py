"""add_layer_norm: a decoder block's first residual add and its second LayerNorm, as training calls them: the bf16
residual stream and attention output of the decoder ([B, N, Dd], every token), fp32 LayerNorm parameters, the
normalized rows out in bf16; gradients of the stream, the branch and both parameters.

    pytest bench/ops/bench_add_layer_norm.py --benchmark-only [--bench-impls triton,eager]
"""

from __future__ import annotations

import pytest
import torch

from bench.ops.opbench import MODES, OpBench, impls, nbytes, time_op
from videomae import ops
from videomae.ops import testing as T


def inputs(case: T.Case, device: str, dtype: torch.dtype = torch.bfloat16) -> dict:
    g = torch.Generator(device).manual_seed(0)
    shape = (case.batch, case.tokens, case.dec_dim)
    x = torch.randn(shape, generator=g, device=device).to(dtype).requires_grad_()
    residual = torch.randn(shape, generator=g, device=device).to(dtype).requires_grad_()
    weight = (1 + 0.1 * torch.randn(case.dec_dim, generator=g, device=device)).requires_grad_()
    bias = (0.1 * torch.randn(case.dec_dim, generator=g, device=device)).requires_grad_()
    return dict(x=x, residual=residual, weight=weight, bias=bias)


def fused(**kw) -> torch.Tensor:
    return ops.add_layer_norm(**kw)[1]


def reference(**kw) -> torch.Tensor:
    s, y = ops.add_layer_norm_ref(**kw)
    return y.to(torch.get_autocast_dtype(s.device.type)) if torch.is_autocast_enabled(s.device.type) else y


def bytes_moved(kw: dict, out: torch.Tensor, mode: str) -> int:
    """Forward: the stream and the branch read, their sum and the normalized rows written, fp32 mean and rstd per
    row; backward: the rows' gradient, the saved sum and the statistics read, the input gradient written (the
    branch's is the same tensor), the parameters read and their gradients written."""
    x, w = kw["x"], kw["weight"]
    stats = 2 * 4 * (x.numel() // x.shape[-1])
    params = nbytes(kw["weight"], kw["bias"])
    fwd = nbytes(x, kw["residual"], out) + nbytes(x) + stats + params
    bwd = nbytes(out, x, x) + stats + 2 * params + nbytes(w)
    return {"forward": fwd, "backward": bwd, "both": fwd + bwd}[mode]


BENCH = OpBench("add_layer_norm", fused, reference, inputs, ("x", "residual", "weight", "bias"), bytes_moved)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", impls(BENCH))
def test_add_layer_norm(benchmark, bench_session, case, impl, mode):
    time_op(benchmark, bench_session, BENCH, case, impl, mode)
