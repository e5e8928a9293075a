"""pytest-benchmark suite of the eager paths on CPU (the torch backend and the references).

Figures, not tests: skipped unless asked for, e.g.
    pytest tests/test_ops_bench_cpu.py --benchmark-enable
"""

import pytest
import torch

import videomae.ops as ops
from videomae.ops import testing as T
from videomae.ops.reference import cube_embed_ref, decoder_input_ref, norm_pix_mse_ref


@pytest.fixture(autouse=True)
def _only_when_enabled(request):
    if not request.config.getoption("benchmark_enable", default=False):
        pytest.skip("benchmarks run only with --benchmark-enable")


CASE = T.Case(4, 8, 64, 64, tubelet=2, patch=16, dim=192, dec_dim=96, ratio=0.9)


def _ops():
    def cube(impl):
        kw = T.cube_embed_inputs(CASE, torch.float32)
        kw["videos"].requires_grad_(False)
        fn = cube_embed_ref if impl == "reference" else ops.cube_embed
        return lambda: torch.autograd.grad(fn(**kw).sum(), [kw["weight"], kw["bias"]])

    def dec(impl):
        kw = T.decoder_input_inputs(CASE, torch.float32)
        fn = decoder_input_ref if impl == "reference" else ops.decoder_input
        return lambda: torch.autograd.grad(fn(**kw).sum(), [kw["x_vis"], kw["mask_token"]])

    def loss(impl):
        kw = T.norm_pix_mse_inputs(CASE, torch.float32)
        fn = norm_pix_mse_ref if impl == "reference" else ops.norm_pix_mse
        return lambda: torch.autograd.grad(fn(**kw), [kw["pred"]])

    return {"cube_embed": cube, "decoder_input": dec, "norm_pix_mse": loss}


@pytest.mark.parametrize("impl", ["torch", "reference"])
@pytest.mark.parametrize("op", ["cube_embed", "decoder_input", "norm_pix_mse"])
def test_bench_eager_forward_backward(benchmark, op, impl):
    fn = _ops()[op](impl)
    benchmark.group = op
    with ops.use_backend("torch"):
        benchmark(fn)
