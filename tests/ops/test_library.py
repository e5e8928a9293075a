"""The op library: one schema table (library.SCHEMAS) that every Python backend's annotations reproduce (torch 2.11
infers the schema from them and ignores `schema=`) and that the CUDA extension only implements; the extension
`videomae._C` (csrc/) built where a toolkit is, loaded, registered with the shared fake kernels and autograd, the
loader's fallback with one warning, setup.py's switches; the GPU flavour of the Triton ops tracing down to their
kernels. The kernels themselves: tests/ops/test_<op>.py (every backend, the CUDA kernels in their CPU emulation)."""

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
from op_helpers import MEAN, STD, needs_ext
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import videomae.ops as ops
from videomae import _ext, dispatch
from videomae.ops import cuda_backend, library, torch_backend

ROOT = Path(__file__).resolve().parents[2]
OPS = [op for op in library.SCHEMAS]  # forward and backward ops


def toolkit_present() -> bool:
    home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    return torch.version.cuda is not None and (shutil.which("nvcc") is not None or Path(home, "bin/nvcc").exists())


# ---------------------------------------------------------------------------------------------- the schema table


def _python_backends():
    mods = [torch_backend]
    if "triton" in dispatch.registered():
        from videomae.ops import triton_backend

        mods.append(triton_backend)
    return mods


@pytest.mark.parametrize("op", list(library.SCHEMAS))
def test_annotations_infer_the_schema_table(op):
    for mod in _python_backends():
        assert torch.library.infer_schema(mod.IMPLS[op], mutates_args=()) == library.SCHEMAS[op], mod.__name__


def test_registered_schemas_match_the_table():
    for mod in _python_backends():
        backend = mod.__name__.rsplit(".", 1)[1].removesuffix("_backend")
        for op, schema in library.SCHEMAS.items():
            name = library.qualname(op, backend)
            assert str(library.torch_op(op, backend).default._schema) == str(torch._C.parse_schema(name + schema))


TRACE_GPU_PATH = """
import torch
from torch._dynamo.backends.common import aot_autograd
from videomae.ops import testing as T
from videomae.ops.library import torch_op
from videomae.kernels._common import INTERPRET

assert not INTERPRET
graphs = []


class Traced(Exception):
    pass


def capture(gm, example):
    graphs.append(gm.code)
    def run(*args):
        raise Traced()
    return run


case = T.Case(2, 4, 32, 64, dim=40, dec_dim=24, ratio=0.5)
k = T.cube_embed_inputs(case, torch.float32)
d = T.decoder_input_inputs(case, torch.float32, v2=True)
p = T.norm_pix_mse_inputs(case, torch.float32, v2=True)
stats = ([0.4] * 3, [0.2] * 3)


# The loss reads its own clip: without a GPU driver Triton's mutation analysis fails and every kernel argument
# counts as mutated, so a clip shared by two ops would look written (on a GPU the analysis sees only the stores).
def f(videos, weight, bias, pos, visible, x_vis, token, dpos, dvis, ddec, pred, clip, decoded, scored):
    x = torch_op("cube_embed", "triton")(videos, weight, bias, pos, visible, *stats)
    y = torch_op("decoder_input", "triton")(x_vis, token, dpos, dvis, ddec)
    loss = torch_op("norm_pix_mse", "triton")(pred, clip, decoded, scored, 2, 16, True, "videomae", *stats)
    return x.sum() + y.sum() + loss


try:
    torch.compile(f, backend=aot_autograd(fw_compiler=capture), fullgraph=True)(
        k["videos"].detach(), k["weight"], k["bias"], k["pos"], k["visible"],
        d["x_vis"], d["mask_token"], d["pos"], d["visible"], d["decoded"], p["pred"], p["videos"], p["decoded"],
        p["scored"])
except Traced:
    pass
print(graphs[0])
"""


def test_compile_traces_triton_ops_for_gpu():
    """The GPU flavour (triton_op, no interpreter) traces with fullgraph: every shape is static, so each op
    decomposes into its Triton kernels and no op stays a whole node. Nothing runs: the captured graph is
    checked, so this needs no GPU."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", TRACE_GPU_PATH], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "triton_kernel_wrapper_functional" in res.stdout
    for op in ("cube_embed_triton", "decoder_input_triton", "norm_pix_mse_triton"):
        assert op not in res.stdout, op


COMPILE_FOR_SM90 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import videomae  # maps videomae.kernels
from videomae.kernels import _common, cube_embed, decoder_input, norm_pix_mse


def compile_(fn, types, **const):
    # types: of the launchers' runtime arguments, in order (bf16 tensors, int64 ids, int32 scalars)
    runtime = [a for a in fn.arg_names if a not in const]
    sig = {**dict(zip(runtime, types.split(), strict=True)), **{k: "constexpr" for k in const}}
    triton.compile(ASTSource(fn, sig, const), target=GPUTarget("cuda", 90, 32))
    print(fn.__name__)


I32 = lambda n: " i32" * n
compile_(_common._token_sum_kernel, "*bf16 *i32 *i32 *fp32" + I32(5), B=4, HAS_B=True, BLOCK_T=16, BLOCK_D=128)
compile_(cube_embed._cube_embed_fwd_kernel, "*u8 *i64 *bf16 *fp32 *fp32 *fp32 *fp32 *bf16" + I32(11), K=1536, TUB=2,
         P=16, HAS_BIAS=True, HAS_POS=True, IS_UINT8=True, PRECISION=None, UPCAST=False, BLOCK_M=64, BLOCK_N=64,
         BLOCK_K=32)
for scatter in (False, True):
    compile_(cube_embed._cube_gather_kernel, "*bf16 *i64 *fp32 *fp32 *bf16" + I32(11), TUB=2, P=16, IS_UINT8=False,
             SCATTER=scatter, BLOCK_M=32, BLOCK_K=128)
compile_(decoder_input._decoder_input_kernel, "*bf16 *fp32 *fp32 *i64 *bf16" + I32(4), BLOCK_R=16, BLOCK_D=256)
for backward in (False, True):
    compile_(norm_pix_mse._norm_pix_mse_kernel, "*bf16 *bf16 *i64 *fp32 *fp32 *fp32 *fp32 *bf16" + I32(9), C=3, TUB=2,
             P=16, MAE_ST=False, NORMALIZE=True, IS_UINT8=False, BACKWARD=backward, BLOCK_P=512, BLOCK_C=4)
"""


def test_triton_kernels_compile_for_sm90_without_a_gpu():
    """The interpreter runs the kernels' Python; this compiles each one for Hopper (LLVM and ptxas need no GPU),
    so a construct only the compiler refuses fails in CI, not on the GPU machine."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", COMPILE_FOR_SM90], capture_output=True, text=True, env=env,
                         timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split() == ["_token_sum_kernel", "_cube_embed_fwd_kernel", *["_cube_gather_kernel"] * 2,
                                  "_decoder_input_kernel", *["_norm_pix_mse_kernel"] * 2]


# ---------------------------------------------------------------------------------------------- build and load


def test_extension_built_where_a_toolkit_is():
    if not toolkit_present() or os.environ.get("VIDEOMAE_SKIP_CUDA_BUILD") == "1":
        pytest.skip("no CUDA toolkit or CUDA torch here: the pure-Python install is expected")
    other_stack = _ext._abi_mismatch(_ext.build_info()) or (not _ext.build_info() and ", ".join(_ext.other_builds()))
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
