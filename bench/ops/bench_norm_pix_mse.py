"""norm_pix_mse: the normalized-pixel loss over the decoded cubes, as training calls it: bf16 predictions (the
head under autocast) against the fp32 clip; gradient of the predictions.

    pytest bench/ops/bench_norm_pix_mse.py --benchmark-only [--bench-impls triton,eager]
"""

from __future__ import annotations

import pytest
import torch

from bench.ops.opbench import MODES, OpBench, impls, nbytes, time_op
from videomae import ops
from videomae.ops import testing as T


def inputs(case: T.Case, device: str) -> dict:
    kw = T.norm_pix_mse_inputs(case, torch.bfloat16, device)
    kw["videos"] = T.clip(case, torch.float32, device)
    return kw


def bytes_moved(kw: dict, out: torch.Tensor, mode: str) -> int:
    """pred, the decoded cubes of the clip and the ids read (the loss is a scalar); backward: both read again
    (the targets are recomputed, not stored) and d pred written."""
    pred, dec = kw["pred"], kw["decoded"]
    cubes = dec.numel() * pred.shape[-1] * kw["videos"].element_size()
    fwd = nbytes(pred, dec, kw.get("scored")) + cubes
    bwd = fwd + nbytes(pred)
    return {"forward": fwd, "backward": bwd, "both": fwd + bwd}[mode]


BENCH = OpBench("norm_pix_mse", ops.norm_pix_mse, ops.norm_pix_mse_ref, inputs, ("pred",), bytes_moved)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", impls(BENCH))
def test_norm_pix_mse(benchmark, bench_session, case, impl, mode):
    time_op(benchmark, bench_session, BENCH, case, impl, mode)
