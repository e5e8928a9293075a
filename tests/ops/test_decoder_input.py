"""decoder_input on every backend that runs here, forward and backward, against the fp64 oracle
(`decoder_input_ref(upcast=True)`); the torch backend's official dtype promotion; bad input; opcheck; reruns."""

import pytest
import torch
from op_helpers import BACKENDS, CASES, LOW, V2_CASES, close, grads, noncontig, to_fp64
from tolerances import TOL

import videomae.ops as ops
from videomae.ops import testing as T
from videomae.ops.decoder_input import decoder_input_ref
from videomae.ops.library import torch_op

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
    ref = decoder_input_ref(**kw64, upcast=True)
    # The torch backend promotes as the official code (16-bit x_vis + fp32 pos -> fp32); fused ones keep x_vis'.
    assert out.dtype == (torch.float32 if backend == "torch" else dtype) and out.shape == ref.shape
    close(out.to(dtype), ref, TOL[dtype])
    names = ["x_vis", "mask_token", "pos"]
    for name, g, r in zip(names, grads(out, [kw[k] for k in names]), grads(ref, [kw64[k] for k in names])):
        assert g.dtype == kw[name].dtype and g.shape == kw[name].shape, name
        close(g, r, TOL[dtype])


def test_torch_backend_is_the_official_promotion():
    """bf16 x_vis with the fp32 table: the official sums are fp32, bit for bit."""
    kw = T.decoder_input_inputs(V2_CASES[0], torch.bfloat16, v2=True)
    with ops.use_backend("torch"):
        out = ops.decoder_input(**kw)
    b, d = kw["x_vis"].shape[0], kw["x_vis"].shape[2]
    pos = kw["pos"].expand(b, -1, -1)
    mask = torch.ones(b, pos.shape[1], dtype=torch.bool).scatter_(1, kw["visible"], False)
    decoded = torch.zeros_like(mask).scatter_(1, kw["decoded"], True)
    want = torch.cat([kw["x_vis"] + pos[~mask].reshape(b, -1, d),
                      kw["mask_token"] + pos[decoded].reshape(b, -1, d)], dim=1)
    assert out.dtype == want.dtype == torch.float32
    assert torch.equal(out, want)


def test_decoder_input_without_pos_grad():
    kw = T.decoder_input_inputs(CASES[0], torch.float32)
    out = ops.decoder_input(**kw)
    gx, gm = torch.autograd.grad(out.sum(), [kw["x_vis"], kw["mask_token"]])
    assert torch.equal(gx, torch.ones_like(gx))
    assert torch.equal(gm, torch.full_like(gm, out.shape[0] * (out.shape[1] - gx.shape[1])))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bitwise_rerun(backend):
    def run():
        kw = T.decoder_input_inputs(CASES[1], torch.float32, pos_grad=True)
        with ops.use_backend(backend):
            out = ops.decoder_input(**kw)
        return [out.detach(), *grads(out, [kw[k] for k in ("x_vis", "mask_token", "pos")])]

    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


CASE = T.Case(2, 4, 32, 64, tubelet=2, patch=16, dim=40, dec_dim=24, ratio=0.5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v2", [False, True])
def test_opcheck(backend, v2):
    k = T.decoder_input_inputs(CASE, torch.float32, v2=v2, pos_grad=True)
    torch.library.opcheck(torch_op("decoder_input", backend),
                          (k["x_vis"], k["mask_token"], k["pos"], k["visible"], k["decoded"]))


BAD = {
    "x_vis rows": ("x_vis", lambda k: k.update(x_vis=k["x_vis"][:, :-1].contiguous())),
    "x_vis dtype": ("x_vis", lambda k: k.update(x_vis=k["x_vis"].long())),
    "mask_token width": ("mask_token", lambda k: k.update(mask_token=k["mask_token"][..., :-1])),
    "pos width": ("pos", lambda k: k.update(pos=k["pos"][..., :-1].contiguous())),
    "pos layout": ("pos", lambda k: k.update(pos=noncontig(k["pos"][0]))),
    "visible batch": ("visible", lambda k: k.update(visible=k["visible"][:1])),
    "visible dtype": ("visible", lambda k: k.update(visible=k["visible"].int())),
    "decoded more ids than tokens": ("decoded", lambda k: k.update(decoded=k["decoded"].repeat(1, 3))),
    "decoded rank": ("decoded", lambda k: k.update(decoded=k["decoded"][0])),
}


@pytest.mark.parametrize("what", list(BAD))
def test_bad_input(what):
    name, spoil = BAD[what]
    kw = T.decoder_input_inputs(V2_CASES[0], torch.float32, v2=True)
    spoil(kw)
    with pytest.raises(ValueError, match=rf"^{name} "):
        ops.decoder_input(**kw)
