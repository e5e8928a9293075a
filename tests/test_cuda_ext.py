"""The CUDA extension `videomae._C` (csrc/).

CPU (CI): it is built where a toolkit is, loads, registers a CUDA kernel per op with the schemas of
`library.SCHEMAS`; fake kernels and autograd give the right shapes; the loader falls back with one warning;
setup.py's switches; and csrc/ compiled for the CPU (csrc/emu/cuda_emu.h) runs the real kernels and bindings
against the fp64 oracle, bad-input errors included.
GPU (`-m gpu`): the ops against an fp64 oracle (error at most 2x PyTorch's own in the same dtype) on small, odd
and grid-striding shapes, uint8 clips, optional bias / pos, the videos grad; bitwise reruns; bad inputs.
tests/test_ops_gpu.py runs the shared suite (ViT-S/B/L, opcheck) on the cuda backend too.
One command on a GPU machine: bash bench/gpu_cuda_check.sh.
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
from tolerances import ERROR_FLOOR, ERROR_RATIO, LOSS_GRAD_TOL, LOSS_TOL, TOL
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import videomae.ops as ops
from videomae import _ext
from videomae.loss import IMAGENET_MEAN, IMAGENET_STD
from videomae.masking import running_cell_mask, tube_mask
from videomae.ops import cuda_backend, dispatch, library
from videomae.ops.reference import cube_embed_ref, decoder_input_ref, norm_pix_mse_fp64, norm_pix_mse_ref, to_fp64

ROOT = Path(__file__).resolve().parents[1]
OPS = [op for op in library.SCHEMAS]  # forward and backward ops
MEAN, STD = list(IMAGENET_MEAN), list(IMAGENET_STD)

needs_ext = pytest.mark.skipif(not _ext.available(), reason=f"videomae._C unavailable: {_ext.reason()}")


def gpu_test(fn):
    """Marked `gpu`; skipped without a CUDA device or without the extension."""
    fn = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(fn)
    return pytest.mark.gpu(needs_ext(fn))


def toolkit_present() -> bool:
    home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    return torch.version.cuda is not None and (shutil.which("nvcc") is not None or Path(home, "bin/nvcc").exists())


# ---------------------------------------------------------------------------------------------- build and load


def test_extension_built_where_a_toolkit_is():
    if not toolkit_present() or os.environ.get("VIDEOMAE_SKIP_CUDA_BUILD") == "1":
        pytest.skip("no CUDA toolkit or CUDA torch here: the pure-Python install is expected")
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
    reasons = backend.not_supported_reasons("decoder_input", dict(x_vis=torch.zeros(1, 2, 8), pos=pos64))
    assert any("pos has dtype torch.float64" in r for r in reasons)


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
def test_arch_coverage(monkeypatch, archs, capability, runs):
    monkeypatch.setattr(_ext, "build_info", lambda: {"archs": archs})
    cuda_backend._runs_on.cache_clear()
    try:
        assert cuda_backend._runs_on(capability) is runs
    finally:
        cuda_backend._runs_on.cache_clear()


# ---------------------------------------------------------------------------------------------- loader fallback


@pytest.fixture
def fresh_loader(monkeypatch):
    """The loader as if nothing were probed yet; `module` names what it imports."""
    monkeypatch.setattr(_ext, "_state", None)
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
    # Meta-device fake tensors: the autograd engine needs no GPU for them.
    with FakeTensorMode(shape_env=ShapeEnv()):
        kw = dict(device="meta", requires_grad=True)
        videos = torch.empty(2, 3, 4, 32, 48, dtype=dtype, **kw)
        weight = torch.empty(40, 3, 2, 16, 16, dtype=dtype, **kw)
        bias = torch.empty(40, dtype=dtype, **kw)
        pos = torch.empty(1, 12, 40, **kw)  # fp32 table, cast to weight's dtype
        mask = torch.zeros(2, 12, dtype=torch.bool, device="meta")
        out = torch.ops.videomae.cube_embed_cuda(videos, weight, bias, pos, mask, MEAN, STD)
        assert out.shape[0] == 2 and out.shape[2] == 40 and out.dtype == dtype
        grads = torch.autograd.grad(out.sum(), [videos, weight, bias, pos])
        assert [(g.shape, g.dtype) for g in grads] == [(t.shape, t.dtype) for t in (videos, weight, bias, pos)]

        x_vis = torch.empty(2, 3, 24, dtype=dtype, **kw)
        token = torch.empty(1, 1, 24, **kw)
        dpos = torch.empty(12, 24, **kw)
        out = torch.ops.videomae.decoder_input_cuda(x_vis, token, dpos, mask, None)
        assert out.shape == (2, 12, 24) and out.dtype == dtype
        grads = torch.autograd.grad(out.sum(), [x_vis, token, dpos])
        assert [(g.shape, g.dtype) for g in grads] == [(t.shape, t.dtype) for t in (x_vis, token, dpos)]
        out = torch.ops.videomae.decoder_input_cuda(x_vis, token, dpos, mask, mask)
        assert out.shape[0] == 2 and out.shape[2] == 24  # V2: the decoded count is data-dependent

        pred = torch.empty(2, 9, 1536, dtype=dtype, **kw)
        loss = torch.ops.videomae.norm_pix_mse_cuda(pred, videos, mask, None, 2, 16, True, "videomae", MEAN, STD)
        assert loss.shape == () and loss.dtype == torch.float32
        (grad,) = torch.autograd.grad(loss, [pred])
        assert grad.shape == pred.shape and grad.dtype == dtype


@needs_ext
def test_backward_fakes_skip_unneeded_grads():
    with FakeTensorMode(shape_env=ShapeEnv()):
        videos = torch.empty(2, 3, 4, 32, 48, device="meta")
        weight = torch.empty(40, 3, 2, 16, 16, device="meta")
        mask = torch.zeros(2, 12, dtype=torch.bool, device="meta")
        grad = torch.empty(2, 3, 40, device="meta")
        gv, gw, gb, gp = torch.ops.videomae.cube_embed_cuda_backward(grad, videos, weight, mask, MEAN, STD,
                                                                     [False, True, True, False])
        assert gv.numel() == 0 and gp.numel() == 0
        assert gw.shape == weight.shape and gb.shape == (40,) and gb.dtype == torch.float32


# ---------------------------------------------------------------------------------------------- CPU emulation
# csrc/ compiled for the CPU (csrc/emu/cuda_emu.h): the real kernels and bindings run on CPU tensors as ops
# `videomae_emu::*`, checked against the fp64 oracle. Catches indexing, layout and reduction bugs without a GPU.

LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)<<<(.*?)>>>\(", re.S)


def cuda_include() -> Path | None:
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda", *sorted(Path("/usr/local").glob("cuda-*"))):
        if home and Path(home, "include", "cuda_runtime_api.h").exists():
            return Path(home, "include")
    return None


@pytest.fixture(scope="module")
def emu():
    include = cuda_include()
    from torch.utils.cpp_extension import is_ninja_available, load

    if include is None or shutil.which("c++") is None or not is_ninja_available():
        pytest.skip("needs the CUDA headers, a C++ compiler and ninja")

    build = ROOT / "build" / "emu"
    build.mkdir(parents=True, exist_ok=True)
    sources = []
    for src in [*sorted((ROOT / "csrc").glob("*.cu")), ROOT / "csrc" / "bindings.cpp"]:
        text = LAUNCH.sub(lambda m: f"::emu::launch({m.group(2)}, {m.group(1)})(", src.read_text())
        dst = build / f"{src.stem}.cpp"
        if not dst.exists() or dst.read_text() != text:  # keep ninja's incremental build
            dst.write_text(text)
        sources.append(str(dst))
    flags = ["-DVIDEOMAE_EMULATE", "-include", str(ROOT / "csrc" / "emu" / "cuda_emu.h"), f"-I{ROOT / 'csrc'}",
             f"-I{include}", "-O1", "-g0", "-pthread"]
    load(name="videomae_emu", sources=sources, extra_cflags=flags, extra_ldflags=["-pthread"],
         build_directory=str(build), is_python_module=False)
    return torch.ops.videomae_emu


def assert_oracle(name, out, oracle, dtype):
    """The table of tests/tolerances.py: atol relative to the oracle's largest entry (at least 1)."""
    atol, rtol = TOL[dtype]
    scale = max(1.0, oracle.double().abs().max().item())
    torch.testing.assert_close(out.double(), oracle.double(), atol=atol * scale, rtol=rtol,
                               msg=lambda m: f"{name}: {m}")


EMU_CASES = [  # B, C, T, H, W, tubelet, patch, ratio
    (2, 3, 4, 32, 48, 2, 16, 0.75),  # 16-byte accesses
    (3, 3, 4, 28, 28, 2, 14, 0.5),  # scalar path: rows of 14 pixels
    (1, 1, 2, 16, 32, 2, 16, 0.5),  # one channel
]


def emu_inputs(case, dtype, uint8, d=40, seed=0):
    b, c, t, h, w, tub, p, ratio = case
    gen = torch.Generator().manual_seed(seed)
    grid = (t // tub, h // p, w // p)
    if uint8:
        videos = torch.randint(0, 256, (b, c, t, h, w), generator=gen, dtype=torch.uint8)
    else:
        videos = torch.randn(b, c, t, h, w, generator=gen).to(dtype)
    weight = (torch.randn(d, c, tub, p, p, generator=gen) / (c * tub * p * p) ** 0.5).to(dtype)
    bias = torch.randn(d, generator=gen).to(dtype)
    pos = torch.randn(1, grid[0] * grid[1] * grid[2], d, generator=gen)
    mask = tube_mask(b, grid, ratio, gen)
    return videos, weight, bias, pos, mask, grid


# A few cases that together take every path: vector / scalar accesses, fp32 / bf16, float / uint8, one channel.
@pytest.mark.parametrize("case,dtype,uint8", [
    (EMU_CASES[0], torch.float32, False), (EMU_CASES[0], torch.bfloat16, True),
    (EMU_CASES[1], torch.float32, False), (EMU_CASES[2], torch.bfloat16, False),
])
def test_emulated_cube_embed(emu, case, dtype, uint8):
    videos, weight, bias, pos, mask, _ = emu_inputs(case, dtype, uint8)
    stats = ([0.45] * videos.shape[1], [0.225] * videos.shape[1])
    out = emu.cube_embed_cuda(videos, weight, bias, pos, mask, *stats)
    args64 = [t.detach().double().requires_grad_() if t.is_floating_point() else t for t in (videos, weight, bias, pos)]
    oracle = cube_embed_ref(*args64, mask, mean=stats[0], std=stats[1])
    assert out.dtype == dtype
    assert_oracle("out", out, oracle, dtype)
    assert torch.equal(emu.cube_embed_cuda(videos, weight, None, None, mask, *stats),
                       emu.cube_embed_cuda(videos, weight, None, None, mask, *stats))
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    needs = [not uint8, True, True, True]
    gv, gw, gb, gp = emu.cube_embed_cuda_backward(grad, videos, weight, mask, *stats, needs)
    wanted = [t for t, need in zip(args64, needs) if need]
    oracle_grads = torch.autograd.grad(oracle, wanted, grad.double())
    got = [g for g, need in zip((gv, gw, gb, gp), needs) if need]
    for name, g, o in zip(("d videos", "d weight", "d bias", "d pos")[4 - len(got):], got, oracle_grads):
        assert_oracle(name, g.view(o.shape), o, dtype)
    assert gb.dtype == torch.float32 and gp.shape == (pos.shape[1], pos.shape[2])
    if uint8:
        assert gv.numel() == 0


@pytest.mark.parametrize("dtype,v2,d", [(torch.float32, False, 40), (torch.bfloat16, True, 56),
                                        (torch.float32, True, 13), (torch.bfloat16, False, 13)])  # 13: scalar path
def test_emulated_decoder_input(emu, dtype, v2, d):
    b, grid = 3, (2, 2, 4)
    gen = torch.Generator().manual_seed(0)
    mask = tube_mask(b, grid, 0.75, gen)
    decode_mask = running_cell_mask(b, grid, 0.5, gen) if v2 else None
    n, nv = mask.shape[1], mask.shape[1] - int(mask[0].sum())
    x_vis = torch.randn(b, nv, d, generator=gen).to(dtype)
    token = torch.randn(1, 1, d, generator=gen)
    pos = torch.randn(n, d, generator=gen)
    out = emu.decoder_input_cuda(x_vis, token, pos, mask, decode_mask)
    args64 = [t.double().requires_grad_() for t in (x_vis, token, pos)]
    oracle = decoder_input_ref(*args64, mask, decode_mask)
    assert out.dtype == dtype and out.shape == oracle.shape
    assert_oracle("out", out, oracle, dtype)
    grad = torch.randn(out.shape, generator=gen).to(dtype)
    gx, gm, gp = emu.decoder_input_cuda_backward(grad, mask, decode_mask, nv, True)
    ox, om, op = torch.autograd.grad(oracle, args64, grad.double())
    assert gx.dtype == dtype and gm.dtype == gp.dtype == torch.float32
    assert_oracle("d x_vis", gx, ox, dtype)
    assert_oracle("d mask_token", gm, om.view(-1), torch.float32)
    assert_oracle("d pos", gp, op, torch.float32)


@pytest.mark.parametrize("case,dtype,style,normalize,v2,uint8", [
    (EMU_CASES[0], torch.float32, "videomae", True, False, False),
    (EMU_CASES[0], torch.bfloat16, "videomae", True, False, True),
    (EMU_CASES[0], torch.float32, "mae_st", True, False, False),
    (EMU_CASES[0], torch.bfloat16, "mae_st", True, False, True),
    (EMU_CASES[1], torch.float32, "videomae", True, True, False),  # scalar path, V2 weighting
    (EMU_CASES[1], torch.bfloat16, "mae_st", False, True, True),
    (EMU_CASES[2], torch.float32, "videomae", False, False, False),  # one channel
    (EMU_CASES[2], torch.bfloat16, "videomae", False, False, True),
    # Nearly flat cubes: std ~ 1e-4, where eps 1e-6 outside vs inside the sqrt tells the styles apart.
    (EMU_CASES[0], torch.float32, "videomae", True, False, "flat"),
    (EMU_CASES[0], torch.float32, "mae_st", True, False, "flat"),
])
def test_emulated_norm_pix_mse(emu, case, dtype, style, normalize, v2, uint8):
    videos, _, _, _, mask, grid = emu_inputs(case, dtype, uint8 is True)
    if uint8 == "flat":
        videos = videos * 1e-3
    c, tub, p = videos.shape[1], case[5], case[6]
    gen = torch.Generator().manual_seed(2)
    decode_mask = running_cell_mask(videos.shape[0], grid, 0.5, gen) if v2 else None
    n_dec = int((mask if decode_mask is None else ~decode_mask)[0].sum())
    pred = torch.randn(videos.shape[0], n_dec, c * tub * p * p, generator=gen).to(dtype)
    stats = ([0.45] * c, [0.225] * c)
    cfg = (decode_mask, tub, p, normalize, style, *stats)
    loss = emu.norm_pix_mse_cuda(pred, videos, mask, *cfg)
    pred64 = pred.double().requires_grad_()
    oracle = norm_pix_mse_fp64(pred64, videos, mask, tubelet_size=tub, patch_size=p, normalize_target=normalize,
                               decode_mask=decode_mask, style=style, mean=stats[0], std=stats[1])
    grad = emu.norm_pix_mse_cuda_backward(torch.tensor(0.75), pred, videos, mask, *cfg)
    (oracle_grad,) = torch.autograd.grad(oracle, pred64, torch.tensor(0.75, dtype=torch.float64))
    assert loss.dtype == torch.float32 and loss.shape == () and grad.dtype == dtype
    if uint8 == "flat":  # fp32 un-normalization (x*std + mean ~ 0.485 +- 2e-4) loses digits in any fp32 code
        pred32 = pred.detach().requires_grad_()
        ref = norm_pix_mse_ref(pred32, videos, mask, tubelet_size=tub, patch_size=p, normalize_target=normalize,
                               decode_mask=decode_mask, style=style, mean=stats[0], std=stats[1])
        (ref_grad,) = torch.autograd.grad(ref, pred32, torch.tensor(0.75))
        check_2x("loss", loss, ref, oracle)
        check_2x("d pred", grad, ref_grad, oracle_grad)
        return
    torch.testing.assert_close(loss.double(), oracle.detach(), **dict(zip(("atol", "rtol"), LOSS_TOL)))
    atol, rtol = LOSS_GRAD_TOL[dtype]
    torch.testing.assert_close(grad.double(), oracle_grad, atol=atol, rtol=rtol)


def test_emulated_bad_inputs(emu):
    videos, weight, _, _, mask, _ = emu_inputs(EMU_CASES[0], torch.float32, False)
    # The kernels' own checks: TORCH_CHECK_VALUE -> ValueError naming the argument, below the public validation.
    with pytest.raises(ValueError, match="videos must have weight's dtype"):
        emu.cube_embed_cuda(videos.half(), weight, None, None, mask, MEAN, STD)
    with pytest.raises(ValueError, match="videos must be contiguous"):
        emu.cube_embed_cuda(videos.transpose(3, 4), weight, None, None, mask, MEAN, STD)
    with pytest.raises(ValueError, match="mask must be"):
        emu.cube_embed_cuda(videos, weight, None, None, mask[:, :-1].contiguous(), MEAN, STD)
    with pytest.raises(ValueError, match="videos T=3, H=32, W=48 must be divisible"):
        emu.cube_embed_cuda(videos[:, :, :3].contiguous(), weight, None, None, mask, MEAN, STD)
    with pytest.raises(ValueError, match="mean and std must have one value per channel"):
        emu.cube_embed_cuda(videos.to(torch.uint8), weight, None, None, mask, MEAN[:2], STD)
    with pytest.raises(ValueError, match="needs must have 4 flags"):
        emu.cube_embed_cuda_backward(torch.zeros(2, 3, 40), videos, weight, mask, MEAN, STD, [True])
    x_vis = torch.randn(2, 3, 40)
    with pytest.raises(ValueError, match="pos must be"):
        emu.decoder_input_cuda(x_vis, torch.randn(40), torch.randn(11, 40), mask, None)
    with pytest.raises(ValueError, match="mask_token must have 40 values"):
        emu.decoder_input_cuda(x_vis, torch.randn(39), torch.randn(12, 40), mask, None)
    with pytest.raises(ValueError, match="x_vis must be float32, float16 or bfloat16"):
        emu.decoder_input_cuda(x_vis.double(), torch.randn(40), torch.randn(12, 40), mask, None)
    pred = torch.randn(2, 9, 1536)
    with pytest.raises(ValueError, match="style must be"):
        emu.norm_pix_mse_cuda(pred, videos, mask, None, 2, 16, True, "mae", MEAN, STD)
    with pytest.raises(ValueError, match="pred must be"):
        emu.norm_pix_mse_cuda(pred[..., :-1].contiguous(), videos, mask, None, 2, 16, True, "videomae", MEAN, STD)
    with pytest.raises(ValueError, match="decode_mask must be bool"):
        emu.norm_pix_mse_cuda(pred, videos, mask, mask.int(), 2, 16, True, "videomae", MEAN, STD)


# ---------------------------------------------------------------------------------------------- GPU correctness

CUBE_CASES = [  # B, C, T, H, W, tubelet, patch, D, ratio
    (2, 3, 4, 32, 48, 2, 16, 40, 0.75),
    (3, 3, 8, 32, 32, 2, 16, 56, 0.5),
    (1, 3, 6, 28, 42, 2, 14, 64, 0.9),  # p=14: rows of 14 pixels take the scalar path
    (2, 3, 16, 224, 224, 2, 16, 768, 0.9),  # ViT-B
    (64, 3, 16, 256, 32, 2, 16, 64, 0.75),  # > 65535 row blocks: the kernels' grid-stride loops
]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def check_2x(name, out, ref, oracle):
    """flash-attention's rule: error to the fp64 oracle at most twice PyTorch's own in the same dtype (+ the floor
    of tests/tolerances.py for outputs PyTorch happens to get exact)."""
    err = (out.double() - oracle.double()).abs().max().item()
    ref_err = (ref.double() - oracle.double()).abs().max().item()
    floor = ERROR_FLOOR[out.dtype]
    assert err <= ERROR_RATIO * ref_err + floor, f"{name}: error {err:.3g} > 2 x PyTorch's {ref_err:.3g} (+{floor:.3g})"


def grads_of(out, inputs, seed=0):
    g = torch.randn(out.shape, generator=torch.Generator(out.device).manual_seed(seed), device=out.device)
    return torch.autograd.grad(out, [t for t in inputs if t is not None and t.requires_grad], g.to(out.dtype))


def cube_inputs(case, dtype, uint8=False, seed=0):
    b, c, t, h, w, tub, p, d, ratio = case
    gen = torch.Generator("cuda").manual_seed(seed)
    if uint8:
        videos = torch.randint(0, 256, (b, c, t, h, w), generator=gen, device="cuda", dtype=torch.uint8)
    else:
        videos = torch.randn(b, c, t, h, w, generator=gen, device="cuda").to(dtype).requires_grad_()
    weight = (torch.randn(d, c, tub, p, p, generator=gen, device="cuda") * 0.02).to(dtype).requires_grad_()
    bias = (torch.randn(d, generator=gen, device="cuda") * 0.02).to(dtype).requires_grad_()
    grid = (t // tub, h // p, w // p)
    pos = torch.randn(1, grid[0] * grid[1] * grid[2], d, generator=gen, device="cuda").requires_grad_()
    mask = tube_mask(b, grid, ratio, torch.Generator().manual_seed(seed)).cuda()
    return videos, weight, bias, pos, mask


@pytest.mark.parametrize("case", CUBE_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("uint8", [False, True])
@pytest.mark.parametrize("with_bias_pos", [True, False])
@gpu_test
def test_cube_embed_gpu(case, dtype, uint8, with_bias_pos, no_tf32):
    videos, weight, bias, pos, mask = cube_inputs(case, dtype, uint8)
    if not with_bias_pos:
        bias = pos = None
    args = (videos, weight, bias, pos, mask)
    with ops.use_backend("cuda"):
        out = ops.cube_embed(*args)
        grads = grads_of(out, args)
        out2 = ops.cube_embed(*args)
        grads2 = grads_of(out2, args)
    ref = cube_embed_ref(*args)
    ref_grads = grads_of(ref, args)
    oracle_args = to_fp64(*args)
    oracle = cube_embed_ref(*oracle_args)
    oracle_grads = grads_of(oracle, oracle_args)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    check_2x("out", out, ref, oracle)
    names = [n for n, t in zip(("videos", "weight", "bias", "pos"), args[:4]) if t is not None and t.requires_grad]
    for name, g, r, o in zip(names, grads, ref_grads, oracle_grads):
        assert g.dtype == r.dtype and g.shape == r.shape, name
        check_2x(f"d {name}", g, r, o)
    assert torch.equal(out, out2) and all(torch.equal(a, b) for a, b in zip(grads, grads2)), "not bitwise"


DEC_CASES = [  # B, T', H', W', D, ratio
    (2, 2, 2, 3, 40, 0.75),
    (3, 4, 2, 2, 56, 0.5),
    (32, 8, 14, 14, 384, 0.9),  # ViT-B decoder
]


@pytest.mark.parametrize("case", DEC_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("v2", [False, True])
@gpu_test
def test_decoder_input_gpu(case, dtype, v2, no_tf32):
    b, t, h, w, d, ratio = case
    gen = torch.Generator("cuda").manual_seed(0)
    mask = tube_mask(b, (t, h, w), ratio, torch.Generator().manual_seed(0)).cuda()
    decode_mask = running_cell_mask(b, (t, h, w), 0.5, torch.Generator().manual_seed(1)).cuda() if v2 else None
    n, nv = t * h * w, t * h * w - int(mask[0].sum())
    x_vis = torch.randn(b, nv, d, generator=gen, device="cuda").to(dtype).requires_grad_()
    token = (torch.randn(1, 1, d, generator=gen, device="cuda") * 0.02).requires_grad_()
    pos = torch.randn(1, n, d, generator=gen, device="cuda").requires_grad_()
    args = (x_vis, token, pos, mask, decode_mask)
    with ops.use_backend("cuda"):
        out = ops.decoder_input(*args)
        grads = grads_of(out, args)
        out2 = ops.decoder_input(*args)
        grads2 = grads_of(out2, args)
    ref = decoder_input_ref(*args)
    ref_grads = grads_of(ref, args)
    oracle_args = to_fp64(*args)
    oracle = decoder_input_ref(*oracle_args)
    oracle_grads = grads_of(oracle, oracle_args)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    check_2x("out", out, ref, oracle)
    for name, g, r, o in zip(("x_vis", "mask_token", "pos"), grads, ref_grads, oracle_grads):
        assert g.dtype == r.dtype and g.shape == r.shape, name
        check_2x(f"d {name}", g, r, o)
    assert torch.equal(out, out2) and all(torch.equal(a, b) for a, b in zip(grads, grads2)), "not bitwise"


LOSS_CASES = [  # B, C, T, H, W, tubelet, patch, ratio
    (2, 3, 4, 32, 48, 2, 16, 0.75),
    (3, 3, 8, 28, 28, 2, 14, 0.5),  # scalar path
    (8, 3, 16, 224, 224, 2, 16, 0.9),  # ViT-B shapes, smaller batch
]


@pytest.mark.parametrize("case", LOSS_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("style", ["videomae", "mae_st"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("uint8", [False, True])
@gpu_test
def test_norm_pix_mse_gpu(case, dtype, style, normalize, v2, uint8, no_tf32):
    b, c, t, h, w, tub, p, ratio = case
    grid = (t // tub, h // p, w // p)
    gen = torch.Generator("cuda").manual_seed(0)
    if uint8:
        videos = torch.randint(0, 256, (b, c, t, h, w), generator=gen, device="cuda", dtype=torch.uint8)
    else:  # float clips are normalized; the reference targets are fp32 whatever the clip's dtype
        videos = torch.randn(b, c, t, h, w, generator=gen, device="cuda").to(dtype)
    mask = tube_mask(b, grid, ratio, torch.Generator().manual_seed(0)).cuda()
    decode_mask = running_cell_mask(b, grid, 0.5, torch.Generator().manual_seed(1)).cuda() if v2 else None
    n_dec = int((mask if decode_mask is None else ~decode_mask)[0].sum())
    pred = torch.randn(b, n_dec, c * tub * p * p, generator=gen, device="cuda").to(dtype).requires_grad_()
    kw = dict(tubelet_size=tub, patch_size=p, normalize_target=normalize, decode_mask=decode_mask, style=style)
    with ops.use_backend("cuda"):
        loss = ops.norm_pix_mse(pred, videos, mask, **kw)
        (grad,) = torch.autograd.grad(loss, [pred])
        loss2 = ops.norm_pix_mse(pred, videos, mask, **kw)
        (grad2,) = torch.autograd.grad(loss2, [pred])
    ref = norm_pix_mse_ref(pred, videos, mask, **kw)
    (ref_grad,) = torch.autograd.grad(ref, [pred])
    pred64 = pred.detach().double().requires_grad_()  # an fp64 leaf: its grad is not rounded to pred's dtype
    oracle = norm_pix_mse_fp64(pred64, videos, mask, **kw)
    (oracle_grad,) = torch.autograd.grad(oracle, [pred64])
    assert loss.dtype == torch.float32 and loss.shape == () and grad.dtype == dtype
    check_2x("loss", loss, ref, oracle)
    check_2x("d pred", grad, ref_grad, oracle_grad)
    assert torch.equal(loss, loss2) and torch.equal(grad, grad2), "not bitwise"


@gpu_test
def test_bad_inputs_gpu():
    videos, weight, bias, pos, mask = cube_inputs(CUBE_CASES[0], torch.float32)
    videos, weight = videos.detach(), weight.detach()
    op = torch.ops.videomae
    # The kernels' own checks (TORCH_CHECK_VALUE -> ValueError naming the argument), below the public validation.
    with pytest.raises(ValueError, match="videos must have weight's dtype"):
        op.cube_embed_cuda(videos.half(), weight, None, None, mask, MEAN, STD)
    with pytest.raises(ValueError, match="videos must be contiguous"):
        op.cube_embed_cuda(videos.transpose(3, 4), weight, None, None, mask, MEAN, STD)
    with pytest.raises(ValueError, match="mask must be"):
        op.cube_embed_cuda(videos, weight, None, None, mask[:, :-1].contiguous(), MEAN, STD)
    with pytest.raises(ValueError, match="videos T=4, H=32, W=48 must be divisible"):
        op.cube_embed_cuda(videos[:, :, :3].contiguous(), weight, None, None, mask, MEAN, STD)
    with pytest.raises(ValueError, match="mean and std must have one value per channel"):
        op.cube_embed_cuda((videos * 0).to(torch.uint8), weight, None, None, mask, MEAN[:2], STD)
    with pytest.raises(ValueError, match="pos must be"):
        op.decoder_input_cuda(torch.randn(2, 3, 40, device="cuda"), torch.randn(40, device="cuda"),
                              torch.randn(11, 40, device="cuda"), mask, None)
    with pytest.raises(ValueError, match="mask_token must have 40 values"):
        op.decoder_input_cuda(torch.randn(2, 3, 40, device="cuda"), torch.randn(39, device="cuda"),
                              torch.randn(12, 40, device="cuda"), mask, None)
    with pytest.raises(ValueError, match="style must be"):
        op.norm_pix_mse_cuda(torch.randn(2, 9, 1536, device="cuda"), videos, mask, None, 2, 16, True, "mae", MEAN, STD)
    with pytest.raises(ValueError, match="pred must be"):
        op.norm_pix_mse_cuda(torch.randn(2, 9, 1535, device="cuda"), videos, mask, None, 2, 16, True, "videomae",
                             MEAN, STD)
    with pytest.raises(ValueError, match="videos must be a CUDA tensor"):
        op.norm_pix_mse_cuda(torch.randn(2, 9, 1536, device="cuda"), videos.cpu(), mask, None, 2, 16, True,
                             "videomae", MEAN, STD)
    # And the public ops' validation, shared by every backend.
    unequal = mask.clone()
    unequal[0] = True
    with ops.use_backend("cuda"), pytest.raises(ValueError, match="mask"):
        ops.cube_embed(videos, weight, None, None, unequal)
