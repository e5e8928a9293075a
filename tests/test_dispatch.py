"""The one dispatcher (`videomae.dispatch`) as the fused ops see it: forced backends explain themselves, `auto`
falls back quietly in the order of the priority table, the switch (API, context, env var), registration,
the per-call cache and the report. Attention's side of the same dispatcher is in tests/test_attention.py."""

from __future__ import annotations

import os
import threading

import pytest
import torch

import videomae.ops as ops
from videomae import dispatch
from videomae.ops import dispatch as ops_dispatch

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.fixture(autouse=True)
def _isolated():
    """Registries, switches and table as they were, and no cached choice left behind."""
    saved = ({f: dict(r) for f, r in dispatch._REGISTRY.items()}, {f: dict(b) for f, b in dispatch._BROKEN.items()},
             dict(dispatch._SWITCH), dict(dispatch.PRIORITY))
    yield
    for live, old in zip((dispatch._REGISTRY, dispatch._BROKEN, dispatch._SWITCH, dispatch.PRIORITY), saved):
        live.clear()
        live.update(old)
    dispatch.clear_cache()


def cube_embed_inputs(dtype=torch.float32) -> dict:
    """The tensors of a cube_embed call (1 clip of 2x16x16, one cube, 8 channels), as dispatch sees them."""
    return dict(videos=torch.randn(1, 3, 2, 16, 16, dtype=dtype), weight=torch.randn(8, 3, 2, 16, 16, dtype=dtype),
                bias=torch.zeros(8, dtype=dtype), pos=torch.zeros(1, 1, 8, dtype=dtype),
                visible=torch.zeros(1, 1, dtype=torch.int64))


def test_reexported_names_are_the_one_dispatcher():
    for name in ("Backend", "NotSupportedError", "TorchBackend", "register_backend", "select", "candidates"):
        assert getattr(ops_dispatch, name) is getattr(dispatch, name)
    assert ops.NotSupportedError is dispatch.NotSupportedError and ops.Backend is dispatch.Backend
    assert ops_dispatch.BACKEND_NAMES == ("auto", "cuda", "triton", "torch")
    assert ops_dispatch.ENV == "VIDEOMAE_BACKEND"


def test_forced_backend_lists_reasons():
    kw = cube_embed_inputs(torch.float64)
    with ops.use_backend("cuda"), pytest.raises(ops.NotSupportedError, match="'cuda' cannot run cube_embed"):
        dispatch.select("cube_embed", kw)
    if "triton" in ops_dispatch.registered():
        with ops.use_backend("triton"), pytest.raises(ops.NotSupportedError, match="dtype torch.float64"):
            dispatch.select("cube_embed", kw)


def test_auto_falls_back_quietly():
    kw = cube_embed_inputs(torch.float64)  # fp64: only the torch backend takes it
    assert ops_dispatch.select("cube_embed", kw).name == "torch"
    fast = cube_embed_inputs(torch.float32)
    assert ops_dispatch.select("cube_embed", fast).name == ("triton" if INTERPRET else "torch")


def test_env_var_and_context(monkeypatch):
    kw = cube_embed_inputs(torch.float32)
    monkeypatch.setenv(ops_dispatch.ENV, "torch")
    assert ops_dispatch.forced() == "torch"
    assert ops_dispatch.select("cube_embed", kw).name == "torch"
    monkeypatch.setenv(ops_dispatch.ENV, "cuda")
    with pytest.raises(ops.NotSupportedError):
        ops_dispatch.select("cube_embed", kw)
    with ops.use_backend("torch"):  # the context manager wins over the environment
        assert ops_dispatch.select("cube_embed", kw).name == "torch"
    monkeypatch.setenv(ops_dispatch.ENV, "fast")
    with pytest.raises(ValueError, match=ops_dispatch.ENV):
        ops_dispatch.select("cube_embed", kw)
    with pytest.raises(ValueError, match="backend must be one of"), ops.use_backend("fast"):
        pass


class _Picky(dispatch.Backend):
    name = "cuda"

    def not_supported_reasons(self, op, inputs):
        return ["picky says no"] if op == "cube_embed" else []


def test_registered_backend_and_priority_table():
    ops.register_backend(_Picky())
    kw = cube_embed_inputs(torch.float32)
    assert ops_dispatch.select("cube_embed", kw).name != "cuda"  # auto skips it
    assert ops_dispatch.candidates("norm_pix_mse")[0].name == "cuda"  # first in the table
    dispatch.set_priority(("norm_pix_mse", "*", "*", 0), ["torch", "cuda"])
    assert [b.name for b in ops_dispatch.candidates("norm_pix_mse")][:2] == ["torch", "cuda"]
    with ops.use_backend("cuda"), pytest.raises(ops.NotSupportedError, match="picky says no"):
        ops_dispatch.select("cube_embed", kw)
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
    attention = dispatch.backend_report("attention")
    assert set(attention) == {"attention"} and attention["attention"]["eager"]["available"]
    assert dispatch.switches()["ops"] == {"switch": ops_dispatch.forced(), "env": "VIDEOMAE_BACKEND"}


def test_unregistered_and_broken_backends_are_reasons():
    dispatch._REGISTRY["ops"].pop("cuda", None)
    dispatch.mark_broken("cuda", "import failed: no libcuda")
    kw = cube_embed_inputs()
    with ops.use_backend("cuda"), pytest.raises(ops.NotSupportedError, match="import failed: no libcuda"):
        dispatch.select("cube_embed", kw)
    assert ops.backend_report()["norm_pix_mse"]["cuda"]["reasons"] == ["import failed: no libcuda"]
    with pytest.raises(ValueError, match="op must be one of"):
        dispatch.select("conv", kw)
    with pytest.raises(ValueError, match="op_or_family must be one of"):
        dispatch.set_backend("kernels", "torch")


def test_base_backend_reasons_name_the_inputs():
    class CudaOnly(dispatch.Backend):
        name, devices, dtypes = "cuda", ("cuda",), (torch.bfloat16,)
        ops = ("norm_pix_mse",)

    reasons = CudaOnly().not_supported_reasons("cube_embed", cube_embed_inputs())
    assert reasons == ["op cube_embed not implemented",
                       "videos on cpu: device cpu not in ['cuda']",
                       "dtype torch.float32 not in ['bfloat16'] on cpu"]
    # uint8 clips: the first float input (the weight) sets the dtype that matters.
    kw = cube_embed_inputs(torch.float64)
    kw["videos"] = torch.zeros(1, 3, 2, 16, 16, dtype=torch.uint8)
    assert dispatch.TorchBackend().not_supported_reasons("cube_embed", kw) == []
    assert dispatch.priority_key("cube_embed", kw) == ("cube_embed", "cpu", "float64", 0)


def test_choice_is_cached_per_signature_and_cleared_by_the_switch():
    kw = cube_embed_inputs()
    dispatch.clear_cache()
    misses = dispatch.cache_info()["misses"]
    first = dispatch.select("cube_embed", kw)
    for _ in range(3):
        assert dispatch.select("cube_embed", cube_embed_inputs()) is first  # new tensors, same signature
    assert dispatch.cache_info()["misses"] == misses + 1
    assert dispatch.select("cube_embed", cube_embed_inputs(torch.float64)).name == "torch"
    assert dispatch.cache_info()["misses"] == misses + 2 and dispatch.cache_info()["size"] == 2
    with ops.use_backend("torch"):
        assert dispatch.cache_info()["size"] == 0
        assert dispatch.select("cube_embed", kw).name == "torch"
    assert dispatch.cache_info()["size"] == 0
    ops.register_backend(dispatch.TorchBackend())
    assert dispatch.cache_info()["size"] == 0


def test_switch_is_process_global():
    """Set in one thread, seen in another (DataLoader workers, autograd threads run the same choice)."""
    seen = []
    with ops.use_backend("torch"):
        t = threading.Thread(target=lambda: seen.append(ops_dispatch.forced()))
        t.start()
        t.join()
    assert seen == ["torch"]
