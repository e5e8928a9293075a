"""attention forward / backward on every attention backend vs the official eager order, at the encoder's and
the decoder's shapes of a pretraining step (q, k, v: [B, heads, N, 64] in bf16; the encoder sees the visible
tokens, the decoder all of them). Compute-bound: `extra_info` carries TFLOP/s beside GB/s.

    pytest bench/ops/bench_attention.py --benchmark-only [--bench-impls sdpa-cudnn,flash-attn,eager]
"""

from __future__ import annotations

import pytest
import torch

from bench.ops.opbench import MODES, OpBench, impls, nbytes, time_op
from videomae import attention
from videomae.dispatch import use_backend
from videomae.ops import testing as T

HEAD_DIM = 64


def _qkv(case: T.Case, device: str, width: int, tokens: int) -> dict:
    d = min(HEAD_DIM, width)
    gen = torch.Generator(device).manual_seed(0)
    q, k, v = (torch.randn(case.batch, max(1, width // d), tokens, d, device=device, generator=gen)
               .to(torch.bfloat16).requires_grad_() for _ in range(3))
    return dict(q=q, k=k, v=v, scale=d**-0.5)


def encoder_inputs(case: T.Case, device: str) -> dict:
    t, h, w = case.grid
    return _qkv(case, device, case.dim, case.tokens - int(case.ratio * h * w) * t)  # the tube mask's visible count


def decoder_inputs(case: T.Case, device: str) -> dict:
    return _qkv(case, device, case.dec_dim, case.tokens)  # visible + masked tokens (V1)


def flops(kw: dict, out: torch.Tensor, mode: str) -> int:
    """q k^T and P v: 4 B H N^2 d forward; the backward's four products (dV, dP, dQ, dK) twice that."""
    b, h, n, d = kw["q"].shape
    fwd = 4 * b * h * n * n * d
    return {"forward": fwd, "backward": 2 * fwd, "both": 3 * fwd}[mode]


def bytes_moved(kw: dict, out: torch.Tensor, mode: str) -> int:
    """q, k, v read and the output written; backward: q, k, v and d out read, d q, d k, d v written."""
    q = kw["q"]
    fwd = nbytes(q, kw["k"], kw["v"], out)
    bwd = nbytes(q, kw["k"], kw["v"], out) + 3 * nbytes(q)
    return {"forward": fwd, "backward": bwd, "both": fwd + bwd}[mode]


def backends() -> list[str]:
    return [name for name in attention.BACKENDS if name != "eager"]  # eager is the reference impl


def _bench(name: str, inputs) -> OpBench:
    return OpBench(name, attention.scaled_dot_product_attention, attention.eager_attention, inputs, ("q", "k", "v"),
                   bytes_moved, flops=flops, backends=backends, use=lambda name: use_backend(attention=name))


ENCODER = _bench("attention_encoder", encoder_inputs)
DECODER = _bench("attention_decoder", decoder_inputs)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", impls(ENCODER))
@pytest.mark.parametrize("where", [ENCODER, DECODER], ids=["encoder", "decoder"])
def test_attention(benchmark, bench_session, case, where, impl, mode):
    time_op(benchmark, bench_session, where, case, impl, mode)
