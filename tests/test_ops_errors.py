"""Bad input raises a ValueError naming the argument; dispatch errors list every reason."""

import pytest
import torch

import videomae.ops as ops
from videomae.kernels import INTERPRET
from videomae.ops import dispatch
from videomae.ops import testing as T

CASE = T.Case(2, 4, 32, 48, tubelet=2, patch=16, dim=40, dec_dim=24, ratio=0.5)
V2 = T.Case(2, 4, 32, 64, tubelet=2, patch=16, dim=40, ratio=0.5)


def _unequal(mask):
    bad = mask.clone()
    bad[0, ~mask[0]] = True  # sample 0 now masks everything, sample 1 half
    return bad


def _noncontig(x):
    return x.transpose(-1, -2).contiguous().transpose(-1, -2)


CUBE_BAD = {
    "videos dtype": ("videos", lambda k: k.update(videos=k["videos"].to(torch.int32))),
    "videos rank": ("videos", lambda k: k.update(videos=k["videos"][0])),
    "videos layout": ("videos", lambda k: k.update(videos=_noncontig(k["videos"]))),
    "videos vs weight dtype": ("videos", lambda k: k.update(videos=k["videos"].half())),
    "cube does not divide": ("videos", lambda k: k.update(videos=k["videos"][..., :40].contiguous())),
    "weight channels": ("weight", lambda k: k.update(weight=k["weight"][:, :2].contiguous())),
    "weight rank": ("weight", lambda k: k.update(weight=k["weight"].flatten(1))),
    "bias shape": ("bias", lambda k: k.update(bias=k["bias"][:-1])),
    "pos shape": ("pos", lambda k: k.update(pos=k["pos"][:, :-1])),
    "pos device": ("pos", lambda k: k.update(pos=k["pos"].to("meta"))),
    "mask dtype": ("mask", lambda k: k.update(mask=k["mask"].to(torch.uint8))),
    "mask batch": ("mask", lambda k: k.update(mask=k["mask"][:1])),
    "mask counts": ("mask", lambda k: k.update(mask=_unequal(k["mask"]))),
    "mean length": ("mean", lambda k: k.update(videos=T.clip(CASE, torch.uint8), mean=(0.5, 0.5))),
}


@pytest.mark.parametrize("what", list(CUBE_BAD))
def test_cube_embed_bad_input(what):
    name, spoil = CUBE_BAD[what]
    kw = T.cube_embed_inputs(CASE, torch.float32, grad=False)
    spoil(kw)
    with pytest.raises(ValueError, match=rf"^{name} "):
        ops.cube_embed(**kw)


DEC_BAD = {
    "x_vis rows": ("x_vis", lambda k: k.update(x_vis=k["x_vis"][:, :-1].contiguous())),
    "x_vis dtype": ("x_vis", lambda k: k.update(x_vis=k["x_vis"].long())),
    "mask_token width": ("mask_token", lambda k: k.update(mask_token=k["mask_token"][..., :-1])),
    "pos width": ("pos", lambda k: k.update(pos=k["pos"][..., :-1].contiguous())),
    "pos layout": ("pos", lambda k: k.update(pos=_noncontig(k["pos"][0]))),
    "mask batch": ("mask", lambda k: k.update(mask=k["mask"][:1])),
    "decode_mask counts": ("decode_mask", lambda k: k.update(decode_mask=_unequal(k["decode_mask"]))),
    "decode_mask tokens": ("decode_mask", lambda k: k.update(decode_mask=k["decode_mask"][:, :-1])),
}


@pytest.mark.parametrize("what", list(DEC_BAD))
def test_decoder_input_bad_input(what):
    name, spoil = DEC_BAD[what]
    kw = T.decoder_input_inputs(V2, torch.float32, v2=True)
    spoil(kw)
    with pytest.raises(ValueError, match=rf"^{name} "):
        ops.decoder_input(**kw)


LOSS_BAD = {
    "pred rows": ("pred", lambda k: k.update(pred=k["pred"][:, 1:].contiguous())),
    "pred values": ("pred", lambda k: k.update(pred=k["pred"][..., 1:].contiguous())),
    "pred batch": ("pred", lambda k: k.update(pred=k["pred"][:1])),
    "videos rank": ("videos", lambda k: k.update(videos=k["videos"][0])),
    "patch does not divide": ("videos", lambda k: k.update(patch_size=12)),
    "mask counts": ("mask", lambda k: k.update(mask=_unequal(k["mask"]))),
    "decode_mask dtype": ("decode_mask", lambda k: k.update(decode_mask=k["decode_mask"].float())),
    "style": ("style", lambda k: k.update(style="mae")),
    "std length": ("std", lambda k: k.update(std=(1.0,))),
}


@pytest.mark.parametrize("what", list(LOSS_BAD))
def test_norm_pix_mse_bad_input(what):
    name, spoil = LOSS_BAD[what]
    kw = T.norm_pix_mse_inputs(V2, torch.float32, v2=True)
    spoil(kw)
    with pytest.raises(ValueError, match=rf"^{name} "):
        ops.norm_pix_mse(**kw)


# ------------------------------------------------------------------------------------------------- dispatch


def test_forced_backend_lists_reasons():
    kw = T.cube_embed_inputs(CASE, torch.float64, grad=False)
    with ops.use_backend("cuda"), pytest.raises(ops.NotSupportedError, match="'cuda' cannot run cube_embed"):
        ops.cube_embed(**kw)
    if "triton" in dispatch.registered():
        with ops.use_backend("triton"), pytest.raises(ops.NotSupportedError, match="dtype torch.float64"):
            ops.cube_embed(**kw)


def test_auto_falls_back_quietly():
    kw = T.cube_embed_inputs(CASE, torch.float64, grad=False)  # fp64: only the torch backend takes it
    assert dispatch.select("cube_embed", kw).name == "torch"
    assert ops.cube_embed(**kw).dtype == torch.float64
    fast = T.cube_embed_inputs(CASE, torch.float32, grad=False)
    assert dispatch.select("cube_embed", fast).name == ("triton" if INTERPRET else "torch")


def test_env_var_and_context(monkeypatch):
    kw = T.cube_embed_inputs(CASE, torch.float32, grad=False)
    monkeypatch.setenv(dispatch.ENV, "torch")
    assert dispatch.select("cube_embed", kw).name == "torch"
    monkeypatch.setenv(dispatch.ENV, "cuda")
    with pytest.raises(ops.NotSupportedError):
        ops.cube_embed(**kw)
    with ops.use_backend("torch"):  # the context manager wins over the environment
        assert dispatch.select("cube_embed", kw).name == "torch"
    monkeypatch.setenv(dispatch.ENV, "fast")
    with pytest.raises(ValueError, match=dispatch.ENV):
        ops.cube_embed(**kw)
    with pytest.raises(ValueError, match="backend must be one of"), ops.use_backend("fast"):
        pass


class _Picky(dispatch.Backend):
    name, priority = "cuda", 30

    def not_supported_reasons(self, op, inputs):
        return ["picky says no"] if op == "cube_embed" else []


def test_registered_backend_and_preference(monkeypatch):
    monkeypatch.setattr(dispatch, "_BACKENDS", dict(dispatch._BACKENDS))
    monkeypatch.setattr(dispatch, "_BROKEN", dict(dispatch._BROKEN))
    ops.register_backend(_Picky())
    kw = T.cube_embed_inputs(CASE, torch.float32, grad=False)
    assert dispatch.select("cube_embed", kw).name != "cuda"  # auto skips it
    assert dispatch.candidates("norm_pix_mse")[0].name == "cuda"  # highest priority
    monkeypatch.setattr(dispatch, "_PREFERENCE", {"norm_pix_mse": ["torch", "cuda"]})
    assert [b.name for b in dispatch.candidates("norm_pix_mse")][:2] == ["torch", "cuda"]
    with ops.use_backend("cuda"), pytest.raises(ops.NotSupportedError, match="picky says no"):
        dispatch.select("cube_embed", kw)
    with pytest.raises(ValueError, match="backend name"):
        ops.register_backend(type("Bad", (dispatch.Backend,), {"name": "fast"})())


def test_backend_report():
    report = ops.backend_report()
    assert set(report) == {"cube_embed", "decoder_input", "norm_pix_mse"}
    for per_backend in report.values():
        assert set(per_backend) == {"cuda", "triton", "torch"}
        assert per_backend["torch"] == {"available": True, "reasons": []}
        for entry in per_backend.values():
            assert entry["available"] == (not entry["reasons"])
    assert report["cube_embed"]["triton"]["available"] == (INTERPRET or torch.cuda.is_available())


def test_preference_file_loads():
    assert all(isinstance(v, list) for v in dispatch.load_preference().values())
