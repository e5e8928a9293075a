"""cube_embed on every backend that runs here, forward and backward, against the fp64 oracle
(`cube_embed_ref(upcast=True)`); bad input; opcheck; bitwise reruns."""

import pytest
import torch
from op_helpers import BACKENDS, CASES, LOW, STATS, close, grads, noncontig, to_fp64
from tolerances import ERROR_FLOOR, ERROR_RATIO, TOL

import videomae.ops as ops
from videomae.ops import testing as T
from videomae.ops.cube_embed import cube_embed_ref
from videomae.ops.library import torch_op

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
    ref = cube_embed_ref(**kw64, upcast=True)
    assert out.dtype == dtype and out.shape == ref.shape
    tol = TOL[dtype]
    close(out, ref, tol)
    names = [k for k in ("videos", "weight", "bias", "pos") if kw[k] is not None and kw[k].requires_grad]
    for name, g, r in zip(names, grads(out, [kw[k] for k in names]), grads(ref, [kw64[k] for k in names])):
        assert g.dtype == kw[name].dtype, name
        close(g, r, tol)


def max_err(x, oracle):
    return (x.detach().double() - oracle.detach()).abs().max().item()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_error_at_most_twice_pytorchs(backend, dtype):
    """flash-attention's rule: error against fp64 at most 2x that of PyTorch's own computation in the dtype."""
    kw = T.cube_embed_inputs(CASES[1], dtype)
    with ops.use_backend(backend):
        out = ops.cube_embed(**kw)
    oracle = cube_embed_ref(**dict(zip(kw, to_fp64(*kw.values()))), upcast=True)
    floor = ERROR_FLOOR[dtype] * oracle.abs().max().item()
    assert max_err(out, oracle) <= ERROR_RATIO * max_err(cube_embed_ref(**kw), oracle) + floor


def test_fp32_clip_and_any_float_bias_pos_with_16bit_weight():
    """The kernels read an fp32 clip and fp32/bf16 bias and pos as they are, converting in registers: the result
    is the reference's, which casts them first (conv3d under autocast)."""
    kw = T.cube_embed_inputs(CASES[1], torch.bfloat16)
    kw.update(videos=kw["videos"].detach().float(), pos=kw["pos"].detach(), bias=kw["bias"].detach().float())
    for backend in ("torch", *(["triton"] if "triton" in ops.dispatch.registered() else [])):
        with ops.use_backend(backend):
            out = ops.cube_embed(**kw)
        assert out.dtype == torch.bfloat16
        close(out, cube_embed_ref(**kw), TOL[torch.bfloat16])


def test_cube_embed_autocast():
    """Under autocast the op computes in the autocast dtype, like conv3d, and grads keep the params' dtype."""
    kw = T.cube_embed_inputs(CASES[0], torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ops.cube_embed(**kw)
        ref = cube_embed_ref(**{**kw, "weight": kw["weight"].to(torch.bfloat16)})
    assert out.dtype == ref.dtype == torch.bfloat16
    close(out, ref, TOL[torch.bfloat16])
    (gw,) = torch.autograd.grad(out.float().sum(), kw["weight"])
    assert gw.dtype == torch.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_bitwise_rerun(backend):
    """Two runs, forward and backward, give identical bits (no atomics in any backward)."""
    def run():
        kw = T.cube_embed_inputs(CASES[1], torch.float32)
        with ops.use_backend(backend):
            out = ops.cube_embed(**kw)
        return [out.detach(), *grads(out, [kw[k] for k in ("videos", "weight", "bias", "pos")])]

    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------- torch op

CASE = T.Case(2, 4, 32, 64, tubelet=2, patch=16, dim=40, dec_dim=24, ratio=0.5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("uint8", [False, True])
def test_opcheck(backend, uint8):
    k = T.cube_embed_inputs(CASE, torch.float32, uint8=uint8)
    torch.library.opcheck(torch_op("cube_embed", backend), (k["videos"], k["weight"], k["bias"], k["pos"],
                                                            k["visible"], *STATS))


# ------------------------------------------------------------------------------------------------- bad input

BAD_CASE = T.Case(2, 4, 32, 48, tubelet=2, patch=16, dim=40, dec_dim=24, ratio=0.5)

BAD = {
    "videos dtype": ("videos", lambda k: k.update(videos=k["videos"].to(torch.int32))),
    "videos rank": ("videos", lambda k: k.update(videos=k["videos"][0])),
    "videos layout": ("videos", lambda k: k.update(videos=noncontig(k["videos"]))),
    "cube does not divide": ("videos", lambda k: k.update(videos=k["videos"][..., :40].contiguous())),
    "weight channels": ("weight", lambda k: k.update(weight=k["weight"][:, :2].contiguous())),
    "weight rank": ("weight", lambda k: k.update(weight=k["weight"].flatten(1))),
    "bias shape": ("bias", lambda k: k.update(bias=k["bias"][:-1])),
    "pos shape": ("pos", lambda k: k.update(pos=k["pos"][:, :-1])),
    "pos device": ("pos", lambda k: k.update(pos=k["pos"].to("meta"))),
    "visible dtype": ("visible", lambda k: k.update(visible=k["visible"].int())),
    "visible batch": ("visible", lambda k: k.update(visible=k["visible"][:1])),
    "visible more ids than tokens": ("visible", lambda k: k.update(visible=k["visible"].repeat(1, 5))),
    "visible layout": ("visible", lambda k: k.update(visible=k["visible"].t().contiguous().t())),
    "mean length": ("mean", lambda k: k.update(videos=T.clip(BAD_CASE, torch.uint8), mean=(0.5, 0.5))),
}


@pytest.mark.parametrize("what", list(BAD))
def test_bad_input(what):
    name, spoil = BAD[what]
    kw = T.cube_embed_inputs(BAD_CASE, torch.float32, grad=False)
    spoil(kw)
    with pytest.raises(ValueError, match=rf"^{name} "):
        ops.cube_embed(**kw)
