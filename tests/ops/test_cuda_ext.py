"""The CUDA extension `videomae._C` (csrc/): build, load, registration.

It is built where a toolkit is, loads, implements a CUDA kernel per op of `library.SCHEMAS` (schemas defined in
Python only, by cuda_backend); fake kernels and autograd give the right shapes; the loader falls back with one
warning; setup.py's switches. The kernels themselves: test_cuda_emu.py (CPU emulation, CI) and test_cuda_gpu.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import videomae.ops as ops
from videomae import _ext
from videomae.loss import IMAGENET_MEAN, IMAGENET_STD
from videomae.ops import cuda_backend, dispatch, library

ROOT = Path(__file__).resolve().parents[2]
OPS = [op for op in library.SCHEMAS]  # forward and backward ops
MEAN, STD = list(IMAGENET_MEAN), list(IMAGENET_STD)

needs_ext = pytest.mark.skipif(not _ext.available(), reason=f"videomae._C unavailable: {_ext.reason()}")


def toolkit_present() -> bool:
    home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    return torch.version.cuda is not None and (shutil.which("nvcc") is not None or Path(home, "bin/nvcc").exists())


# ---------------------------------------------------------------------------------------------- build and load


def test_extension_built_where_a_toolkit_is():
    if not toolkit_present() or os.environ.get("VIDEOMAE_SKIP_CUDA_BUILD") == "1":
        pytest.skip("no CUDA toolkit or CUDA torch here: the pure-Python install is expected")
    other_stack = _ext._abi_mismatch(_ext.build_info())
    if other_stack:  # one tree, two venvs (CI's pinned stack): the build belongs to the other one
        pytest.skip(f"this tree's videomae._C is another stack's: {other_stack}")
    assert _ext.available(), _ext.reason()
    assert _ext.reason() == ""


@needs_ext
def test_build_info_recorded():
    info = _ext.build_info()
    assert {"archs", "torch", "torch_cuda", "nvcc"} <= info.keys()
    assert info["torch"] == torch.__version__  # the loader refuses other torch versions
    for arch in info["archs"].replace(" ", ";").split(";"):
        cuda_backend._arch(arch)  # parses: '9.0', '8.0+PTX'


@needs_ext
@pytest.mark.parametrize("op", OPS)
def test_op_has_cuda_kernel_and_shared_schema(op):
    name = library.qualname(op, "cuda")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")
    assert not torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU")  # CPU tensors never reach it
    schema = library.torch_op(op, "cuda").default._schema
    assert str(schema) == str(torch._C.parse_schema(name + library.SCHEMAS[op]))


def test_schemas_written_once():
    # The C++ side only implements: a schema there would be a second table to keep equal to library.SCHEMAS.
    cpp = (ROOT / "csrc" / "bindings.cpp").read_text()
    assert re.search(r"\bTORCH_LIBRARY\s*\(|\.def\s*\(", cpp) is None
    assert cpp.count("m.impl(") == len(library.SCHEMAS)


def test_stale_extension_reports_rebuild(monkeypatch):
    # An extension built from other sources: the dispatcher rejects the schemas when they are defined.
    def mismatch(namespace="videomae"):
        raise RuntimeError("Inferred operator schema for a C++ kernel function doesn't match the expected function "
                           "schema.\n  operator: videomae::cube_embed_cuda")

    monkeypatch.setattr(_ext, "available", lambda: True)
    monkeypatch.setattr(cuda_backend, "define_schemas", mismatch)
    reason = cuda_backend._register()
    assert "videomae._C does not match the op schemas" in reason and "Inferred operator schema" in reason
    assert "rebuild: pip install --no-build-isolation -e ." in reason and "\n" not in reason


@needs_ext
def test_cuda_backend_registered():
    assert "cuda" in dispatch.registered()
    report = ops.backend_report()
    for op in library.OPS:
        if torch.cuda.is_available():
            assert report[op]["cuda"] == {"available": True, "reasons": []}
        else:
            assert report[op]["cuda"] == {"available": False, "reasons": ["no CUDA device"]}


def test_cpu_inputs_are_not_supported():
    backend = cuda_backend.CudaBackend()
    videos = torch.zeros(1, 5, 2, 16, 16, dtype=torch.uint8)
    reasons = backend.not_supported_reasons("cube_embed", dict(videos=videos, weight=torch.zeros(8, 5, 2, 16, 16)))
    assert any("videos on cpu" in r for r in reasons)
    assert any("5 channels" in r for r in reasons)
    pos64 = torch.zeros(8, 8, dtype=torch.float64)
    reasons = backend.not_supported_reasons("decoder_input", dict(x_vis=torch.zeros(1, 2, 8), pos=pos64,
                                                                  visible=torch.zeros(1, 2, dtype=torch.long)))
    assert any("pos has dtype torch.float64" in r for r in reasons)
    assert not any("visible" in r for r in reasons)  # int64 ids are not a float input


@pytest.mark.parametrize(
    "archs, capability, runs",
    [
        ("8.0;9.0", (8, 0), True),
        ("8.0;9.0", (8, 9), True),  # sm_80 cubins run on any 8.x
        ("8.0;9.0", (7, 5), False),
        ("9.0", (8, 0), False),
        ("9.0", (10, 0), False),  # cubins do not cross majors
        ("9.0+PTX", (10, 0), True),  # PTX is JIT-compiled for newer devices
        ("9.0a", (9, 0), True),
    ],
)
def test_arch_coverage(archs, capability, runs):
    assert cuda_backend._runs_on(capability, cuda_backend._built_archs(archs)) is runs


# ---------------------------------------------------------------------------------------------- loader fallback


@pytest.fixture
def fresh_loader(monkeypatch):
    """The loader as if nothing were probed yet, with no build record (this tree's may be another stack's);
    `module` names what it imports."""
    monkeypatch.setattr(_ext, "_state", None)
    monkeypatch.setattr(_ext, "build_info", lambda: {})
    return lambda module: monkeypatch.setattr(_ext, "_MODULE", module)


def test_loader_warns_once_when_extension_missing_on_gpu_machine(fresh_loader, monkeypatch):
    fresh_loader("videomae._C_not_built")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.warns(RuntimeWarning, match="not built"):
        assert not _ext.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        assert not _ext.available()
        assert "videomae._C_not_built is not built" in _ext.reason()


def test_loader_quiet_when_missing_without_gpu(fresh_loader, monkeypatch):
    fresh_loader("videomae._C_not_built")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not _ext.available()
    assert "not built" in _ext.reason()


def test_loader_falls_back_on_abi_mismatch(fresh_loader, monkeypatch, tmp_path):
    # An extension compiled against another torch fails with undefined symbols at import.
    (tmp_path / "broken_videomae_ext.py").write_text(
        "raise ImportError('broken_videomae_ext.so: undefined symbol: _ZN3c106detail14torchCheckFail')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh_loader("broken_videomae_ext")
    with pytest.warns(RuntimeWarning, match="undefined symbol"):
        assert not _ext.available()
    assert "rebuild" in _ext.reason()


def test_loader_refuses_extension_built_for_other_torch(fresh_loader, monkeypatch):
    monkeypatch.setattr(_ext, "build_info", lambda: {"torch": "1.13.0+cu117", "torch_cuda": "11.7"})
    fresh_loader("videomae._C_never_imported")
    with pytest.warns(RuntimeWarning, match="built against torch 1.13.0"):
        assert not _ext.available()


# ---------------------------------------------------------------------------------------------- setup.py switches


def run_setup(**env) -> subprocess.CompletedProcess:
    """`python setup.py --name`: runs the extension decision, builds nothing."""
    full = {k: v for k, v in os.environ.items() if k not in ("TORCH_CUDA_ARCH_LIST", "VIDEOMAE_SKIP_CUDA_BUILD")}
    full.update(env)
    return subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=120)


def test_setup_skip_switch():
    out = run_setup(VIDEOMAE_SKIP_CUDA_BUILD="1")
    assert out.returncode == 0, out.stderr
    assert "VIDEOMAE_SKIP_CUDA_BUILD=1: skipping the CUDA extension videomae._C" in out.stderr


def test_setup_default_archs_and_force():
    if not toolkit_present():
        out = run_setup(VIDEOMAE_FORCE_CUDA="1")
        assert out.returncode != 0 and "VIDEOMAE_FORCE_CUDA=1" in out.stderr
        return
    out = run_setup(VIDEOMAE_FORCE_CUDA="1")
    assert out.returncode == 0, out.stderr
    assert "building videomae._C for TORCH_CUDA_ARCH_LIST=8.0;9.0" in out.stderr
    out = run_setup(TORCH_CUDA_ARCH_LIST="9.0")
    assert "TORCH_CUDA_ARCH_LIST=9.0 " in out.stderr


# ---------------------------------------------------------------------------------------------- fake kernels


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fakes_and_autograd_shapes(dtype):
    # Meta-device fake tensors: the autograd engine needs no GPU for them. Every shape is static (ids carry counts).
    with FakeTensorMode(shape_env=ShapeEnv()):
        kw = dict(device="meta", requires_grad=True)
        videos = torch.empty(2, 3, 4, 32, 48, **kw)  # an fp32 clip under a 16-bit weight: autocast's mix
        weight = torch.empty(40, 3, 2, 16, 16, dtype=dtype, **kw)
        bias = torch.empty(40, **kw)
        pos = torch.empty(1, 12, 40, **kw)  # fp32 table, cast to weight's dtype
        visible = torch.empty(2, 3, dtype=torch.long, device="meta")
        decoded = torch.empty(2, 9, dtype=torch.long, device="meta")
        out = torch.ops.videomae.cube_embed_cuda(videos, weight, bias, pos, visible, MEAN, STD)
        assert out.shape == (2, 3, 40) and out.dtype == dtype
        grads = torch.autograd.grad(out.sum(), [videos, weight, bias, pos])
        assert [(g.shape, g.dtype) for g in grads] == [(t.shape, t.dtype) for t in (videos, weight, bias, pos)]

        x_vis = torch.empty(2, 3, 24, dtype=dtype, **kw)
        token = torch.empty(1, 1, 24, **kw)
        dpos = torch.empty(12, 24, **kw)
        out = torch.ops.videomae.decoder_input_cuda(x_vis, token, dpos, visible, decoded)
        assert out.shape == (2, 12, 24) and out.dtype == dtype
        grads = torch.autograd.grad(out.sum(), [x_vis, token, dpos])
        assert [(g.shape, g.dtype) for g in grads] == [(t.shape, t.dtype) for t in (x_vis, token, dpos)]

        pred = torch.empty(2, 9, 1536, dtype=dtype, **kw)
        scored = torch.empty(2, 9, dtype=torch.bool, device="meta")
        loss = torch.ops.videomae.norm_pix_mse_cuda(pred, videos, decoded, scored, 2, 16, True, "videomae", MEAN, STD)
        assert loss.shape == () and loss.dtype == torch.float32
        (grad,) = torch.autograd.grad(loss, [pred])
        assert grad.shape == pred.shape and grad.dtype == dtype


@needs_ext
def test_backward_fakes_skip_unneeded_grads():
    with FakeTensorMode(shape_env=ShapeEnv()):
        videos = torch.empty(2, 3, 4, 32, 48, device="meta")
        weight = torch.empty(40, 3, 2, 16, 16, device="meta")
        visible = torch.empty(2, 3, dtype=torch.long, device="meta")
        grad = torch.empty(2, 3, 40, device="meta")
        gv, gw, gb, gp = torch.ops.videomae.cube_embed_cuda_backward(grad, videos, weight, visible, MEAN, STD,
                                                                     [False, True, True, False])
        assert gv.numel() == 0 and gp.numel() == 0
        assert gw.shape == weight.shape and gb.shape == (40,) and gb.dtype == torch.float32
