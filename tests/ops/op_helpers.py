"""Shared pieces of the per-op tests: the backends that run here, the cases, and the comparison rule."""

import pytest
import torch

from videomae.kernels._common import INTERPRET
from videomae.ops import testing as T

BACKENDS = [
    "torch",
    pytest.param("triton", marks=pytest.mark.skipif(
        not INTERPRET, reason="triton on CPU needs TRITON_INTERPRET=1 (GPU runs are in test_ops_gpu.py)")),
]

# Tiny and odd shapes (widths 40/56, 32x48 frames, tubelet 1, patch 8) keep the interpreter quick.
CASES = [
    T.Case(1, 4, 32, 48, tubelet=2, patch=16, dim=40, ratio=0.5),                       # 2x2x3 grid, K = 1536
    T.Case(2, 8, 32, 48, tubelet=2, patch=8, dim=56, ratio=0.75, mask_type="random"),   # 4x4x6, K = 384
    T.Case(3, 5, 32, 48, tubelet=1, patch=16, dim=40, ratio=0.9),                       # tubelet 1, 1 visible/frame
    T.Case(2, 6, 32, 48, tubelet=2, patch=8, dim=40, dec_dim=56, mask_type="frame"),    # whole slices masked
]
V2_CASES = [  # the running-cell decode mask needs an even spatial grid
    T.Case(2, 4, 32, 64, tubelet=2, patch=16, dim=40, ratio=0.75),
    T.Case(3, 8, 32, 32, tubelet=2, patch=8, dim=56, dec_dim=40, ratio=0.9, mask_type="random"),
]
LOW = [torch.bfloat16, torch.float16]
STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def close(out, ref, tol):
    """assert_close with atol scaled by the reference's largest magnitude (at least 1), see tolerances.py."""
    ref = ref.detach().double()
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    torch.testing.assert_close(out.double(), ref, atol=tol[0] * scale, rtol=tol[1])


def grads(out, inputs, seed=7):
    """d inputs of <out, g> for a fixed random g (same g for the op and the oracle)."""
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.autograd.grad(out, inputs, g.to(out.dtype), allow_unused=False)


def to_fp64(*tensors):
    """Detached fp64 leaf copies (integer and Bool tensors stay as they are), with requires_grad copied."""
    return [t if t is None or not t.is_floating_point() else t.detach().double().requires_grad_(t.requires_grad)
            for t in tensors]


def unequal(ids: torch.Tensor) -> torch.Tensor:
    return ids[:, :-1].contiguous()


def noncontig(x):
    return x.transpose(-1, -2).contiguous().transpose(-1, -2)
