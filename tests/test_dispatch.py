"""The one dispatcher (`videomae.dispatch`) as the fused ops see it: forced backends explain themselves (through
the public ops too), `auto` falls back quietly in the order of the priority table, the one switch (`use_backend`
and the env vars), registration, the per-call cache, the report, and no import cycle among the modules around it.
Attention's side of the same dispatcher is in tests/test_attention.py."""

from __future__ import annotations

import ast
import os
import threading
from pathlib import Path

import pytest
import torch

import videomae.ops as ops
from videomae import dispatch
from videomae.dispatch import use_backend
from videomae.ops import testing as T

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
    for name in ("Backend", "NotSupportedError", "TorchBackend", "register_backend", "select", "use_backend",
                 "backend_report"):
        assert getattr(ops, name) is getattr(dispatch, name)
    assert dispatch.FAMILIES["ops"].switch_names == ("auto", "cuda", "triton", "torch")
    assert dispatch.FAMILIES["ops"].env == "VIDEOMAE_BACKEND" and dispatch.FAMILIES["attention"].env == "VIDEOMAE_ATTN"
    # One way to force a backend: no setter beside the context manager (and the env vars).
    assert not [n for n in dir(dispatch) if n.startswith("set_") and n != "set_priority"]


def test_forced_backend_lists_reasons():
    kw = cube_embed_inputs(torch.float64)
    with use_backend("cuda"), pytest.raises(ops.NotSupportedError, match="'cuda' cannot run cube_embed"):
        dispatch.select("cube_embed", kw)
    if "triton" in dispatch.registered():
        with use_backend("triton"), pytest.raises(ops.NotSupportedError, match="dtype torch.float64"):
            dispatch.select("cube_embed", kw)


def test_auto_falls_back_quietly():
    kw = cube_embed_inputs(torch.float64)  # fp64: only the torch backend takes it
    assert dispatch.select("cube_embed", kw).name == "torch"
    fast = cube_embed_inputs(torch.float32)
    assert dispatch.select("cube_embed", fast).name == ("triton" if INTERPRET else "torch")


def test_env_var_and_context(monkeypatch):
    kw = cube_embed_inputs(torch.float32)
    env = dispatch.FAMILIES["ops"].env
    monkeypatch.setenv(env, "torch")
    assert dispatch.forced() == "torch"
    assert dispatch.select("cube_embed", kw).name == "torch"
    monkeypatch.setenv(env, "cuda")
    with pytest.raises(ops.NotSupportedError):
        dispatch.select("cube_embed", kw)
    with use_backend("torch"):  # the context manager wins over the environment
        assert dispatch.select("cube_embed", kw).name == "torch"
    monkeypatch.setenv(env, "fast")
    with pytest.raises(ValueError, match=env):
        dispatch.select("cube_embed", kw)
    with pytest.raises(ValueError, match="^ops must be one of"), use_backend("fast"):
        pass


def test_use_backend_sets_both_families_and_restores_them(monkeypatch):
    for fam in dispatch.FAMILIES.values():
        monkeypatch.delenv(fam.env, raising=False)
    with use_backend("torch", attention="sdpa_math"):
        assert (dispatch.forced("ops"), dispatch.forced("attention")) == ("torch", "sdpa-math")
        with use_backend(attention="eager"):  # None leaves the other family's switch as it is
            assert (dispatch.forced("ops"), dispatch.forced("attention")) == ("torch", "eager")
        assert dispatch.forced("attention") == "sdpa-math"
    assert (dispatch.forced("ops"), dispatch.forced("attention")) == ("auto", "auto")
    with pytest.raises(KeyError), use_backend("torch", attention="eager"):
        raise KeyError("inside")
    assert (dispatch.forced("ops"), dispatch.forced("attention")) == ("auto", "auto")  # restored on error too
    with pytest.raises(ValueError, match="^attention must be one of"), use_backend("torch", attention="flash3000"):
        pass
    assert dispatch.forced("ops") == "auto"  # a refused switch changes nothing


# ------------------------------------------------------------------------------------- through the public ops
OP_CASE = T.Case(2, 4, 32, 48, tubelet=2, patch=16, dim=40, dec_dim=24, ratio=0.5)


def test_public_op_forced_backend_lists_reasons_and_auto_falls_back():
    kw = T.cube_embed_inputs(OP_CASE, torch.float64, grad=False)
    with use_backend("cuda"), pytest.raises(ops.NotSupportedError, match="'cuda' cannot run cube_embed"):
        ops.cube_embed(**kw)
    if "triton" in dispatch.registered():
        with use_backend("triton"), pytest.raises(ops.NotSupportedError, match="dtype torch.float64"):
            ops.cube_embed(**kw)
    assert dispatch.select("cube_embed", kw).name == "torch"
    assert ops.cube_embed(**kw).dtype == torch.float64
    fast = T.cube_embed_inputs(OP_CASE, torch.float32, grad=False)
    assert dispatch.select("cube_embed", fast).name == ("triton" if INTERPRET else "torch")


def test_public_op_env_var_and_context(monkeypatch):
    kw = T.cube_embed_inputs(OP_CASE, torch.float32, grad=False)
    env = dispatch.FAMILIES["ops"].env
    monkeypatch.setenv(env, "cuda")
    with pytest.raises(ops.NotSupportedError):
        ops.cube_embed(**kw)
    with use_backend("torch"):
        assert ops.cube_embed(**kw).shape == (2, 6, 40)
    monkeypatch.setenv(env, "fast")
    with pytest.raises(ValueError, match=env):
        ops.cube_embed(**kw)


class _Picky(dispatch.Backend):
    name = "cuda"

    def not_supported_reasons(self, op, inputs):
        return ["picky says no"] if op == "cube_embed" else []


def test_registered_backend_and_priority_table():
    ops.register_backend(_Picky())
    kw = cube_embed_inputs(torch.float32)
    assert dispatch.select("cube_embed", kw).name != "cuda"  # auto skips it
    assert dispatch.candidates("norm_pix_mse")[0].name == "cuda"  # first in the table
    dispatch.set_priority(("norm_pix_mse", "*", "*", 0), ["torch", "cuda"])
    assert [b.name for b in dispatch.candidates("norm_pix_mse")][:2] == ["torch", "cuda"]
    with use_backend("cuda"), pytest.raises(ops.NotSupportedError, match="picky says no"):
        dispatch.select("cube_embed", kw)
    with pytest.raises(ValueError, match="backend name"):
        ops.register_backend(type("Bad", (dispatch.Backend,), {"name": "fast"})())


def test_backend_report():
    report = ops.backend_report()
    assert set(report) == {"cube_embed", "decoder_input", "norm_pix_mse", "add_layer_norm"}
    for per_backend in report.values():
        assert set(per_backend) == {"cuda", "triton", "torch"}
        assert per_backend["torch"] == {"available": True, "reasons": []}
        for entry in per_backend.values():
            assert entry["available"] == (not entry["reasons"])
    assert report["cube_embed"]["triton"]["available"] == (INTERPRET or torch.cuda.is_available())
    attention = dispatch.backend_report("attention")
    assert set(attention) == {"attention"} and attention["attention"]["eager"]["available"]
    assert dispatch.switches()["ops"] == {"switch": dispatch.forced(), "env": "VIDEOMAE_BACKEND"}


def test_unregistered_and_broken_backends_are_reasons():
    dispatch._REGISTRY["ops"].pop("cuda", None)
    dispatch.mark_broken("cuda", "import failed: no libcuda")
    kw = cube_embed_inputs()
    with use_backend("cuda"), pytest.raises(ops.NotSupportedError, match="import failed: no libcuda"):
        dispatch.select("cube_embed", kw)
    assert ops.backend_report()["norm_pix_mse"]["cuda"]["reasons"] == ["import failed: no libcuda"]
    with pytest.raises(ValueError, match="op must be one of"):
        dispatch.select("conv", kw)
    with pytest.raises(ValueError, match="op_or_family must be one of"):
        dispatch.forced("kernels")


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
    with use_backend("torch"):
        assert dispatch.cache_info()["size"] == 0
        assert dispatch.select("cube_embed", kw).name == "torch"
    assert dispatch.cache_info()["size"] == 0
    ops.register_backend(dispatch.TorchBackend())
    assert dispatch.cache_info()["size"] == 0


def test_switch_is_process_global():
    """Set in one thread, seen in another (DataLoader workers, autograd threads run the same choice)."""
    seen = []
    with use_backend("torch"):
        t = threading.Thread(target=lambda: seen.append(dispatch.forced()))
        t.start()
        t.join()
    assert seen == ["torch"]


# ---------------------------------------------------------------------------------------------- import cycles
ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """The modules of `known` that `path` imports, at the top or inside a function (`from pkg import name` is
    the submodule `pkg.name` when there is one, else `pkg`)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return out & known


def test_no_import_cycle_around_the_dispatcher():
    """dispatch, attention and its tuner, the constants, masking, the ops and their kernels import each other
    in one direction only (the ops' modules reach `library` and back through importlib, by design)."""
    files = {"videomae.dispatch": "videomae/dispatch.py", "videomae.attention": "videomae/attention.py",
             "videomae.attention_tune": "videomae/attention_tune.py", "videomae.constants": "videomae/constants.py",
             "videomae.masking": "videomae/masking.py"}
    for folder, package in (("videomae/ops", "videomae.ops"), ("kernels", "videomae.kernels")):
        for f in sorted((ROOT / folder).glob("*.py")):
            files[package if f.stem == "__init__" else f"{package}.{f.stem}"] = f"{folder}/{f.name}"
    graph = {m: _imports(ROOT / f, m, set(files)) for m, f in files.items()}

    def cycle_from(start, node, seen):
        for nxt in graph[node]:
            if nxt == start:
                return [*seen, nxt]
            if nxt not in seen:
                found = cycle_from(start, nxt, [*seen, nxt])
                if found:
                    return found
        return None

    cycles = [c for m in graph if (c := cycle_from(m, m, [m]))]
    assert not cycles, " -> ".join(cycles[0])
