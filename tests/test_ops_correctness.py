"""Every op, forward and backward, on every backend that runs on CPU, against an fp64 oracle.

The triton backend runs under the interpreter (`TRITON_INTERPRET=1`, which `make test` exports).
Shapes are tiny and odd (widths 40/56, 32x48 frames, tubelet 1, patch 8) to keep the interpreter quick.
"""

import pytest
import torch
from tolerances import LOSS_GRAD_TOL, LOSS_TOL, TOL

import videomae.ops as ops
from videomae.kernels import INTERPRET
from videomae.ops import testing as T
from videomae.ops.reference import cube_embed_ref, decoder_input_ref, norm_pix_mse_fp64, norm_pix_mse_ref, to_fp64

BACKENDS = [
    "torch",
    pytest.param("triton", marks=pytest.mark.skipif(
        not INTERPRET, reason="triton on CPU needs TRITON_INTERPRET=1 (GPU runs are in test_ops_gpu.py)")),
]

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


def close(out, ref, tol):
    """assert_close with atol scaled by the reference's largest magnitude (at least 1), see tolerances.py."""
    ref = ref.detach().double()
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    torch.testing.assert_close(out.double(), ref, atol=tol[0] * scale, rtol=tol[1])


def grads(out, inputs, seed=7):
    """d inputs of <out, g> for a fixed random g (same g for the op and the oracle)."""
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.autograd.grad(out, inputs, g.to(out.dtype), allow_unused=False)


# ------------------------------------------------------------------------------------------------- cube_embed

CUBE_PARAMS = (
    [(c, torch.float32, False, True) for c in CASES]
    + [(CASES[1], d, False, True) for d in LOW]
    + [(CASES[0], torch.float32, True, True), (CASES[1], torch.bfloat16, True, True)]  # uint8 clips
    + [(CASES[2], torch.float32, False, False)]  # no bias, no pos
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case,dtype,uint8,extras", CUBE_PARAMS, ids=lambda p: str(p))
def test_cube_embed(backend, case, dtype, uint8, extras):
    kw = T.cube_embed_inputs(case, dtype, uint8=uint8, bias=extras, pos=extras)
    with ops.use_backend(backend):
        out = ops.cube_embed(**kw)
    kw64 = dict(zip(kw, to_fp64(*kw.values())))
    ref = cube_embed_ref(**kw64)
    assert out.dtype == dtype and out.shape == ref.shape
    tol = TOL[dtype]
    close(out, ref, tol)
    names = [k for k in ("videos", "weight", "bias", "pos") if kw[k] is not None and kw[k].requires_grad]
    for name, g, r in zip(names, grads(out, [kw[k] for k in names]), grads(ref, [kw64[k] for k in names])):
        assert g.dtype == kw[name].dtype, name
        close(g, r, tol)


# ------------------------------------------------------------------------------------------------- decoder_input

DEC_PARAMS = (
    [(c, torch.float32, False) for c in CASES]
    + [(c, torch.float32, True) for c in V2_CASES]
    + [(V2_CASES[0], d, v2) for d in LOW for v2 in (False, True)]
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case,dtype,v2", DEC_PARAMS, ids=lambda p: str(p))
def test_decoder_input(backend, case, dtype, v2):
    kw = T.decoder_input_inputs(case, dtype, v2=v2, pos_grad=True)
    with ops.use_backend(backend):
        out = ops.decoder_input(**kw)
    kw64 = dict(zip(kw, to_fp64(*kw.values())))
    ref = decoder_input_ref(**kw64)
    assert out.dtype == dtype and out.shape == ref.shape
    close(out, ref, TOL[dtype])
    names = ["x_vis", "mask_token", "pos"]
    for name, g, r in zip(names, grads(out, [kw[k] for k in names]), grads(ref, [kw64[k] for k in names])):
        assert g.dtype == kw[name].dtype and g.shape == kw[name].shape, name
        close(g, r, TOL[dtype])


def test_decoder_input_without_pos_grad():
    kw = T.decoder_input_inputs(CASES[0], torch.float32)
    out = ops.decoder_input(**kw)
    gx, gm = torch.autograd.grad(out.sum(), [kw["x_vis"], kw["mask_token"]])
    assert torch.equal(gx, torch.ones_like(gx))
    assert torch.equal(gm, torch.full_like(gm, out.shape[0] * (out.shape[1] - gx.shape[1])))


# ------------------------------------------------------------------------------------------------- norm_pix_mse

MODES = [(s, n) for s in ("videomae", "mae_st") for n in (True, False)]
LOSS_PARAMS = (
    [(V2_CASES[0], torch.float32, s, n, v2, False) for s, n in MODES for v2 in (False, True)]  # every mode
    + [(c, torch.float32, "videomae", True, False, False) for c in CASES[1:]]
    + [(V2_CASES[1], torch.float32, "videomae", True, True, False)]
    + [(V2_CASES[0], d, s, True, False, False) for d in LOW for s in ("videomae", "mae_st")]
    + [(V2_CASES[0], torch.float32, s, True, v2, True) for s in ("videomae", "mae_st") for v2 in (False, True)]
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case,dtype,style,normalize,v2,uint8", LOSS_PARAMS, ids=lambda p: str(p))
def test_norm_pix_mse(backend, case, dtype, style, normalize, v2, uint8):
    kw = T.norm_pix_mse_inputs(case, dtype, v2=v2, uint8=uint8)
    kw.update(style=style, normalize_target=normalize)
    with ops.use_backend(backend):
        loss = ops.norm_pix_mse(**kw)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    pred64 = kw["pred"].detach().double().requires_grad_()
    ref = norm_pix_mse_fp64(**{**kw, "pred": pred64})
    close(loss, ref, LOSS_TOL)
    close(loss, norm_pix_mse_ref(**kw), LOSS_TOL)  # == videomae.loss.pixel_loss (fp32)
    (g,) = torch.autograd.grad(loss, kw["pred"])
    (r,) = torch.autograd.grad(ref, pred64)
    assert g.dtype == dtype
    close(g, r, LOSS_GRAD_TOL[dtype])


@pytest.mark.parametrize("style", ["videomae", "mae_st"])
@pytest.mark.parametrize("v2", [False, True])
def test_fp64_oracle_matches_pixel_loss(style, v2):
    """The oracle is an independent rewrite of pixel_loss: check it before trusting it."""
    kw = T.norm_pix_mse_inputs(V2_CASES[0], torch.float32, v2=v2)
    kw["style"] = style
    close(norm_pix_mse_fp64(**kw), norm_pix_mse_ref(**kw), LOSS_TOL)


# ------------------------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("backend", BACKENDS)
def test_bitwise_rerun(backend):
    """Two runs, forward and backward of every op, give identical bits (no atomics in any backward)."""
    def run():
        case = CASES[1]
        kw = T.cube_embed_inputs(case, torch.float32)
        dk = T.decoder_input_inputs(case, torch.float32, pos_grad=True)
        lk = T.norm_pix_mse_inputs(V2_CASES[0], torch.float32, v2=True)
        with ops.use_backend(backend):
            outs = [ops.cube_embed(**kw), ops.decoder_input(**dk)]
            outs.append(ops.norm_pix_mse(**lk))
        gs = grads(outs[0], [kw[k] for k in ("videos", "weight", "bias", "pos")])
        gs += grads(outs[1], [dk[k] for k in ("x_vis", "mask_token", "pos")])
        gs += torch.autograd.grad(outs[2], lk["pred"])
        return [o.detach() for o in outs] + list(gs)

    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


def test_cube_embed_autocast():
    """Under autocast the op computes in the autocast dtype, like conv3d, and grads keep the params' dtype."""
    kw = T.cube_embed_inputs(CASES[0], torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ops.cube_embed(**kw)
        ref = cube_embed_ref(**kw)
    assert out.dtype == ref.dtype == torch.bfloat16
    close(out, ref, TOL[torch.bfloat16])
    (gw,) = torch.autograd.grad(out.float().sum(), kw["weight"])
    assert gw.dtype == torch.float32
