"""GPU checks of the fused backends at ViT-S/B/L pretraining shapes (B=32, 16x224x224, tube ratio 0.9).

Run: `pytest -m gpu tests/ops/test_ops_gpu.py` on a CUDA machine, without TRITON_INTERPRET (skipped otherwise).
Inputs are made on the GPU (`videomae.ops.testing`); masks on the CPU, as the loader makes them.
- error against fp64 <= ERROR_RATIO x PyTorch's own error in the same dtype (+ ERROR_FLOOR);
- a second run is bitwise equal;
- the pretraining model on the fused backends tracks the eager reference model (torch backend) over steps.
"""

import pytest
import torch
from op_helpers import STATS, to_fp64
from tolerances import ERROR_FLOOR, ERROR_RATIO

import videomae.ops as ops
from videomae.kernels._common import INTERPRET
from videomae.ops import dispatch
from videomae.ops import testing as T
from videomae.ops.cube_embed import cube_embed_ref
from videomae.ops.decoder_input import decoder_input_ref
from videomae.ops.norm_pix_mse import norm_pix_mse_ref

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    # Interpreted kernels at ViT-L shapes would take hours: these runs are for compiled Triton.
    pytest.mark.skipif(INTERPRET, reason="GPU tests need compiled Triton: run without TRITON_INTERPRET=1"),
]

DEVICE = "cuda"
FUSED = ["triton", "cuda"]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SIZES = list(T.VIT)


def _fused(name, op, inputs):
    if name not in dispatch.registered():
        pytest.skip(f"backend {name} not registered: {ops.backend_report()[op][name]['reasons']}")
    reasons = dispatch.registered()[name].not_supported_reasons(op, inputs)
    if reasons:
        pytest.skip(f"backend {name} cannot run {op}: {reasons}")


def _err(x, ref):
    return (x.double() - ref.double()).abs().max().item()


def _check(kernel, eager, oracle, dtype, what):
    ek, ee = _err(kernel, oracle), _err(eager, oracle)
    floor = ERROR_FLOOR[dtype] * oracle.detach().abs().max().item()
    assert ek <= ERROR_RATIO * ee + floor, f"{what}: kernel error {ek:.3g} vs eager {ee:.3g} (floor {floor:.3g})"


def _grads(out, inputs, seed=0):
    g = torch.randn(out.shape, generator=torch.Generator(out.device).manual_seed(seed), device=out.device)
    return torch.autograd.grad(out, inputs, g.to(out.dtype))


@pytest.fixture(autouse=True)
def _highest_precision(no_tf32):
    """Every test here compares fp32 like for like (the `no_tf32` fixture of conftest.py)."""


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", SIZES)
def test_cube_embed_gpu(backend, dtype, size):
    kw = T.cube_embed_inputs(T.VIT[size], dtype, DEVICE, grad=True)
    kw["videos"].requires_grad_(False)  # the clip is data in pretraining; its grad is covered on CPU
    _fused(backend, "cube_embed", kw)
    names = ["weight", "bias", "pos"]
    with ops.use_backend(backend):
        out = ops.cube_embed(**kw)
    eager = cube_embed_ref(**kw)
    kw64 = dict(zip(kw, to_fp64(*kw.values())))
    oracle = cube_embed_ref(**kw64, upcast=True)
    _check(out, eager, oracle, dtype, "out")
    kernel_grads = _grads(out, [kw[k] for k in names])
    for name, gk, ge, go in zip(names, kernel_grads, _grads(eager, [kw[k] for k in names]),
                                _grads(oracle, [kw64[k] for k in names])):
        _check(gk, ge, go, dtype, f"d {name}")
    with ops.use_backend(backend):
        again = ops.cube_embed(**kw)
    assert torch.equal(out, again)
    assert all(torch.equal(a, b) for a, b in zip(kernel_grads, _grads(again, [kw[k] for k in names])))


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("v2", [False, True])
def test_decoder_input_gpu(backend, dtype, size, v2):
    kw = T.decoder_input_inputs(T.VIT[size], dtype, DEVICE, v2=v2, pos_grad=True)
    _fused(backend, "decoder_input", kw)
    names = ["x_vis", "mask_token", "pos"]
    with ops.use_backend(backend):
        out = ops.decoder_input(**kw)
    eager = decoder_input_ref(**kw).to(dtype)  # PyTorch's sums (promoted) rounded to the fused output's dtype
    kw64 = dict(zip(kw, to_fp64(*kw.values())))
    oracle = decoder_input_ref(**kw64, upcast=True)
    _check(out, eager, oracle, dtype, "out")
    for name, gk, ge, go in zip(names, _grads(out, [kw[k] for k in names]), _grads(eager, [kw[k] for k in names]),
                                _grads(oracle, [kw64[k] for k in names])):
        _check(gk, ge, go, dtype, f"d {name}")
    with ops.use_backend(backend):
        again = ops.decoder_input(**kw)
    assert torch.equal(out, again)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("style,normalize,v2", [("videomae", True, False), ("videomae", True, True),
                                                ("videomae", False, False), ("mae_st", True, False)])
def test_norm_pix_mse_gpu(backend, dtype, size, style, normalize, v2):
    kw = T.norm_pix_mse_inputs(T.VIT[size], dtype, DEVICE, v2=v2)
    kw.update(style=style, normalize_target=normalize)
    _fused(backend, "norm_pix_mse", kw)
    with ops.use_backend(backend):
        loss = ops.norm_pix_mse(**kw)
    eager = norm_pix_mse_ref(**kw)
    pred64 = kw["pred"].detach().double().requires_grad_()
    oracle = norm_pix_mse_ref(**{**kw, "pred": pred64}, upcast=True)
    _check(loss, eager, oracle, torch.float32, "loss")  # the loss is fp32 whatever pred's dtype
    (gk,) = torch.autograd.grad(loss, kw["pred"])
    (ge,) = torch.autograd.grad(eager, kw["pred"])
    (go,) = torch.autograd.grad(oracle, pred64)
    assert gk.dtype == dtype
    _check(gk, ge.to(dtype), go, dtype, "d pred")
    with ops.use_backend(backend):
        again = ops.norm_pix_mse(**kw)
    assert torch.equal(loss, again)
    assert torch.equal(gk, torch.autograd.grad(again, kw["pred"])[0])


@pytest.mark.parametrize("backend", FUSED)
def test_opcheck_gpu(backend):
    case = T.Case(2, 4, 32, 64, tubelet=2, patch=16, dim=40, dec_dim=24, ratio=0.5)
    k = T.cube_embed_inputs(case, torch.float32, DEVICE)
    d = T.decoder_input_inputs(case, torch.float32, DEVICE, v2=True, pos_grad=True)
    p = T.norm_pix_mse_inputs(case, torch.float32, DEVICE, v2=True)
    calls = {
        "cube_embed": (k["videos"], k["weight"], k["bias"], k["pos"], k["visible"], *STATS),
        "decoder_input": (d["x_vis"], d["mask_token"], d["pos"], d["visible"], d["decoded"]),
        "norm_pix_mse": (p["pred"], p["videos"], p["decoded"], p["scored"], 2, 16, True, "videomae", *STATS),
    }
    for op, args in calls.items():
        _fused(backend, op, {f"t{i}": a for i, a in enumerate(args) if isinstance(a, torch.Tensor)})
        torch.library.opcheck(ops.library.torch_op(op, backend), args)


def run_model_steps(backend: str, steps: int = 3, batch: int = 2, seed: int = 0) -> list[float]:
    """Losses of a few AdamW steps of ViT-S pretraining from one seed on one ops backend."""
    from videomae.masking import token_ids, tube_mask
    from videomae.registry import create_model

    torch.manual_seed(seed)
    model = create_model("pretrain_videomae_small_patch16_224").to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    gen = torch.Generator(DEVICE).manual_seed(seed + 1)
    cpu_gen = torch.Generator().manual_seed(seed + 1)
    losses = []
    with ops.use_backend(backend):
        for _ in range(steps):
            videos = torch.randn(batch, 3, 16, 224, 224, generator=gen, device=DEVICE)
            ids = token_ids(tube_mask(batch, (8, 14, 14), 0.9, cpu_gen)).to(DEVICE)
            loss = model.forward_loss(videos, model(videos, ids), ids)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def test_model_fused_matches_reference():
    fused = run_model_steps("auto")
    ref = run_model_steps("torch")
    # fp32 without TF32: the paths differ only in summation order (~1e-6 relative per step).
    torch.testing.assert_close(torch.tensor(fused), torch.tensor(ref), rtol=1e-4, atol=1e-5)
