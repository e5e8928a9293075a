"""cube_embed: the visible cubes' embedding, as training calls it (fp32 clip and parameters under bf16 autocast;
gradients of weight and bias only: the clip is data and the sinusoid table a fixed buffer).

    pytest bench/ops/bench_cube_embed.py --benchmark-only [--bench-impls triton,eager]
"""

from __future__ import annotations

import pytest
import torch

from bench.ops.opbench import MODES, OpBench, impls, nbytes, time_op
from videomae import ops
from videomae.ops import testing as T


def inputs(case: T.Case, device: str) -> dict:
    kw = T.cube_embed_inputs(case, torch.float32, device)
    kw["videos"].requires_grad_(False)
    kw["pos"].requires_grad_(False)
    return kw


def bytes_moved(kw: dict, out: torch.Tensor, mode: str) -> int:
    """Visible cubes and their ids read, weight / bias read once, each pos row once at most, the output written;
    backward: the output's gradient and the cubes read again, d weight and d bias written."""
    vis, weight, pos = kw["visible"], kw["weight"], kw["pos"]
    cubes = vis.numel() * weight[0].numel() * kw["videos"].element_size()
    pos_rows = min(nbytes(pos), vis.numel() * pos.shape[-1] * pos.element_size())
    fwd = cubes + nbytes(weight, kw["bias"], vis, out) + pos_rows
    bwd = nbytes(out) + cubes + nbytes(vis, weight, kw["bias"])
    return {"forward": fwd, "backward": bwd, "both": fwd + bwd}[mode]


BENCH = OpBench("cube_embed", ops.cube_embed, ops.cube_embed_ref, inputs, ("weight", "bias"), bytes_moved)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", impls(BENCH))
def test_cube_embed(benchmark, bench_session, case, impl, mode):
    time_op(benchmark, bench_session, BENCH, case, impl, mode)
