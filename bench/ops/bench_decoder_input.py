"""decoder_input: the decoder's input rows (visible rows + pos, then mask token + pos at the decoded ids), as
training calls it: x_vis from a bf16 linear, fp32 mask token and sinusoid table; gradients of x_vis and the
mask token.

    pytest bench/ops/bench_decoder_input.py --benchmark-only [--bench-impls triton,eager]
"""

from __future__ import annotations

import pytest
import torch

from bench.ops.opbench import MODES, OpBench, impls, nbytes, time_op
from videomae import ops
from videomae.ops import testing as T


def inputs(case: T.Case, device: str, dtype: torch.dtype = torch.bfloat16) -> dict:
    return T.decoder_input_inputs(case, dtype, device)


def bytes_moved(kw: dict, out: torch.Tensor, mode: str) -> int:
    """x_vis, the mask token and both id tables read, each pos row once at most, the output written; backward:
    the output's gradient read, d x_vis and d mask_token written (no ids: the rows are in order)."""
    pos, rows = kw["pos"], kw["visible"].numel() + kw["decoded"].numel()
    pos_rows = min(nbytes(pos), rows * pos.shape[-1] * pos.element_size())
    fwd = nbytes(kw["x_vis"], kw["mask_token"], kw["visible"], kw["decoded"], out) + pos_rows
    bwd = nbytes(out, kw["x_vis"], kw["mask_token"])
    return {"forward": fwd, "backward": bwd, "both": fwd + bwd}[mode]


BENCH = OpBench("decoder_input", ops.decoder_input, ops.decoder_input_ref, inputs, ("x_vis", "mask_token"),
                bytes_moved)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", impls(BENCH))
def test_decoder_input(benchmark, bench_session, case, impl, mode):
    time_op(benchmark, bench_session, BENCH, case, impl, mode)
