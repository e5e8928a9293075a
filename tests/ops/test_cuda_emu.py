"""csrc/ compiled for the CPU (csrc/emu/cuda_emu.h): the real kernels and bindings run on CPU tensors as ops
`videomae_emu::*`, checked against the fp64 oracle. Catches indexing, layout, dtype and reduction bugs without a GPU:
every access path, autocast's dtype mixes (16-bit weight, fp32 bias / pos / clip), a whole step's autograd through
the shared glue, opcheck, token ids outside [0, N), bad-input errors. test_cuda_gpu.py shares its comparison helpers.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from tolerances import ERROR_FLOOR, ERROR_RATIO, LOSS_GRAD_TOL, LOSS_TOL, TOL

from videomae import _ext
from videomae.loss import IMAGENET_MEAN, IMAGENET_STD
from videomae.masking import running_cell_mask, token_ids, tube_mask
from videomae.ops import cube_embed_ref, cuda_backend, decoder_input_ref, library, norm_pix_mse_ref

ROOT = Path(__file__).resolve().parents[2]
MEAN, STD = list(IMAGENET_MEAN), list(IMAGENET_STD)

# The ops' schemas come from library.SCHEMAS, as for the real extension.

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

    build = ROOT / "build" / f"emu-torch{torch.__version__.split('+')[0]}"  # one per torch ABI (CI's two stacks)
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
    # The library holds kernels only, as the real one: its schemas come from the one table. Defining them after the
    # load is the order cuda_backend uses; the dispatcher checks each C++ signature against its schema here.
    cuda_backend.define_schemas("videomae_emu")
    return torch.ops.videomae_emu


def fp64_leaves(*tensors):
    """fp64 leaf copies that take a grad (uint8, int64 and Bool inputs stay as they are): the oracle's inputs."""
    return [t.detach().double().requires_grad_() if t is not None and t.is_floating_point() else t for t in tensors]


def assert_oracle(name, out, oracle, dtype):
    """The table of tests/tolerances.py: atol relative to the oracle's largest entry (at least 1)."""
    atol, rtol = TOL[dtype]
    scale = max(1.0, oracle.double().abs().max().item())
    torch.testing.assert_close(out.double(), oracle.double(), atol=atol * scale, rtol=rtol,
                               msg=lambda m: f"{name}: {m}")


def check_2x(name, out, ref, oracle):
    """flash-attention's rule: error to the fp64 oracle at most twice PyTorch's own in the same dtype (+ the floor
    of tests/tolerances.py for outputs PyTorch happens to get exact)."""
    err = (out.double() - oracle.double()).abs().max().item()
    ref_err = (ref.double() - oracle.double()).abs().max().item()
    floor = ERROR_FLOOR[out.dtype]
    assert err <= ERROR_RATIO * ref_err + floor, f"{name}: error {err:.3g} > 2 x PyTorch's {ref_err:.3g} (+{floor:.3g})"


EMU_CASES = [  # B, C, T, H, W, tubelet, patch, ratio
    (2, 3, 4, 32, 48, 2, 16, 0.75),  # 16-byte accesses
    (3, 3, 4, 28, 28, 2, 14, 0.5),  # scalar path: rows of 14 pixels
    (1, 1, 2, 16, 32, 2, 16, 0.5),  # one channel
]


def emu_inputs(case, dtype, uint8, d=40, seed=0):
    """-> videos, weight, bias, pos (fp32), ids (V1 TokenIds of a tube mask), grid"""
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
    ids = token_ids(tube_mask(b, grid, ratio, gen))
    return videos, weight, bias, pos, ids, grid


# A few cases that together take every path: vector / scalar accesses, fp32 / bf16, float / uint8, one channel.
@pytest.mark.parametrize("case,dtype,uint8", [
    (EMU_CASES[0], torch.float32, False), (EMU_CASES[0], torch.bfloat16, True),
    (EMU_CASES[1], torch.float32, False), (EMU_CASES[2], torch.bfloat16, False),
])
def test_emulated_cube_embed(emu, case, dtype, uint8):
    videos, weight, bias, pos, ids, _ = emu_inputs(case, dtype, uint8)
    stats = ([0.45] * videos.shape[1], [0.225] * videos.shape[1])
    out = emu.cube_embed_cuda(videos, weight, bias, pos, ids.visible, *stats)
    args64 = fp64_leaves(videos, weight, bias, pos)
    oracle = cube_embed_ref(*args64, ids.visible, mean=stats[0], std=stats[1], upcast=True)
    assert out.dtype == dtype and out.shape == oracle.shape
    assert_oracle("out", out, oracle, dtype)
    assert torch.equal(emu.cube_embed_cuda(videos, weight, None, None, ids.visible, *stats),
                       emu.cube_embed_cuda(videos, weight, None, None, ids.visible, *stats))
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    needs = [not uint8, True, True, True]
    gv, gw, gb, gp = emu.cube_embed_cuda_backward(grad, videos, weight, ids.visible, *stats, needs)
    wanted = [t for t, need in zip(args64, needs) if need]
    oracle_grads = torch.autograd.grad(oracle, wanted, grad.double())
    got = [g for g, need in zip((gv, gw, gb, gp), needs) if need]
    for name, g, o in zip(("d videos", "d weight", "d bias", "d pos")[4 - len(got):], got, oracle_grads):
        assert_oracle(name, g.view(o.shape), o, dtype)
    assert gb.dtype == torch.float32 and gp.shape == (pos.shape[1], pos.shape[2])
    if uint8:
        assert gv.numel() == 0


@pytest.mark.parametrize("wdtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("uint8", [False, True])
def test_emulated_cube_embed_autocast_dtypes(emu, wdtype, uint8):
    # Autocast's mix (issue 12: the bias once had to match the weight's dtype): the facade casts only the weight;
    # the fp32 (or uint8) clip, fp32 bias and fp32 pos reach the kernels as they are.
    videos, weight, bias, pos, ids, _ = emu_inputs(EMU_CASES[0], torch.float32, uint8)
    weight = weight.to(wdtype)
    out = emu.cube_embed_cuda(videos, weight, bias, pos, ids.visible, MEAN, STD)
    assert out.dtype == wdtype
    # PyTorch's own in these dtypes: conv3d in the weight's dtype with the clip and bias cast to it, as autocast.
    leaves = [t.detach().requires_grad_() if t.is_floating_point() else t for t in (videos, weight, bias, pos)]
    ref = cube_embed_ref(*leaves, ids.visible)
    args64 = fp64_leaves(videos, weight, bias, pos)
    oracle = cube_embed_ref(*args64, ids.visible, upcast=True)
    check_2x("out", out, ref, oracle)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(wdtype)
    needs = [not uint8, True, True, True]
    grads = emu.cube_embed_cuda_backward(grad, videos, weight, ids.visible, MEAN, STD, needs)
    got = [g for g, need in zip(grads, needs) if need]
    ref_grads = torch.autograd.grad(ref, [t for t, need in zip(leaves, needs) if need], grad)
    oracle_grads = torch.autograd.grad(oracle, [t for t, need in zip(args64, needs) if need], grad.double())
    names = [n for n, need in zip(("d videos", "d weight", "d bias", "d pos"), needs) if need]
    for name, g, r, o in zip(names, got, ref_grads, oracle_grads):
        assert g.dtype == r.dtype, name  # the clip's, the weight's, and fp32 for bias / pos
        check_2x(name, g.view(o.shape), r, o)


@pytest.fixture
def cuda_ops_on_cpu(emu):
    """`videomae::*_cuda` served on CPU tensors by the emulated kernels for one test: the autograd path of a step
    (the shared glue of library.py calling the backward ops) runs the real kernel code."""
    if not _ext.available():
        pytest.skip(f"the videomae::*_cuda ops are defined with the extension: {_ext.reason()}")
    lib = torch.library.Library("videomae", "IMPL")
    try:
        for op in library.SCHEMAS:
            name = library.qualname(op, "cuda").split("::")[1]
            lib.impl(name, getattr(emu, name).default, "CPU")
        yield torch.ops.videomae
    finally:
        lib._destroy()


def test_emulated_opcheck(cuda_ops_on_cpu):
    # Schema, fake kernels and autograd registration of the shared glue against the real kernels (V2 ids).
    op = cuda_ops_on_cpu
    videos, weight, bias, pos, ids, grid = emu_inputs((2, 3, 4, 32, 64, 2, 16, 0.75), torch.float32, False)
    ids = token_ids(ids.mask(pos.shape[1]), running_cell_mask(2, grid, 0.5, torch.Generator().manual_seed(5)))
    leaves = [t.requires_grad_() for t in (videos, weight, bias, pos)]
    torch.library.opcheck(op.cube_embed_cuda, (*leaves, ids.visible, MEAN, STD))
    x_vis = torch.randn(2, ids.visible.shape[1], 40, requires_grad=True)
    token = torch.randn(1, 1, 40, requires_grad=True)
    torch.library.opcheck(op.decoder_input_cuda, (x_vis, token, pos, ids.visible, ids.decoded))
    pred = torch.randn(2, ids.decoded.shape[1], 1536, requires_grad=True)
    torch.library.opcheck(op.norm_pix_mse_cuda, (pred, videos.detach(), ids.decoded, ids.scored, 2, 16, True,
                                                 "videomae", MEAN, STD))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_emulated_autocast_step(cuda_ops_on_cpu, dtype):
    # The first bf16 step of issue 12, forward and backward: fp32 parameters, fp32 clip, the facade's weight cast.
    op = cuda_ops_on_cpu
    videos, weight, bias, pos, ids, grid = emu_inputs((2, 3, 4, 32, 64, 2, 16, 0.75), torch.float32, False)
    ids = token_ids(ids.mask(pos.shape[1]), running_cell_mask(2, grid, 0.5, torch.Generator().manual_seed(5)))
    token = torch.randn(1, 1, 40, generator=torch.Generator().manual_seed(6))
    leaves = [t.requires_grad_() for t in (videos, weight, bias, pos, token)]
    with torch.autocast("cpu", dtype=dtype):
        x = op.cube_embed_cuda(videos, weight.to(dtype), bias, pos, ids.visible, MEAN, STD)
        y = op.decoder_input_cuda(x, token, pos, ids.visible, ids.decoded)
        pred = y[:, ids.visible.shape[1]:].repeat(1, 1, 1536 // 40 + 1)[..., :1536].contiguous()
        loss = op.norm_pix_mse_cuda(pred, videos.detach(), ids.decoded, ids.scored, 2, 16, True, "videomae", MEAN,
                                    STD)
    assert x.dtype == y.dtype == dtype and loss.dtype == torch.float32
    grads = torch.autograd.grad(loss, leaves)
    assert [(g.shape, g.dtype) for g in grads] == [(t.shape, t.dtype) for t in leaves]
    # The same step on the fp64 oracle, with the weight autocast multiplies: the grads agree to the 16-bit rounding
    # of the activations (x, y, pred and their grads are stored in `dtype`).
    args64 = fp64_leaves(videos, weight.to(dtype), bias, pos, token)
    x64 = cube_embed_ref(*args64[:4], ids.visible, upcast=True)
    y64 = decoder_input_ref(x64, args64[4], args64[3], ids.visible, ids.decoded, upcast=True)
    pred64 = y64[:, ids.visible.shape[1]:].repeat(1, 1, 1536 // 40 + 1)[..., :1536]
    loss64 = norm_pix_mse_ref(pred64, videos, ids.decoded, ids.scored, upcast=True)
    grads64 = torch.autograd.grad(loss64, args64)
    torch.testing.assert_close(loss.double(), loss64, atol=0, rtol=TOL[dtype][0])
    for name, g, o in zip(("videos", "weight", "bias", "pos", "mask_token"), grads, grads64):
        assert_oracle(f"d {name}", g, o, dtype)


@pytest.mark.parametrize("dtype,v2,d", [(torch.float32, False, 40), (torch.bfloat16, True, 56),
                                        (torch.float32, True, 13), (torch.bfloat16, False, 13)])  # 13: scalar path
def test_emulated_decoder_input(emu, dtype, v2, d):
    b, grid = 3, (2, 2, 4)
    gen = torch.Generator().manual_seed(0)
    mask = tube_mask(b, grid, 0.75, gen)
    ids = token_ids(mask, running_cell_mask(b, grid, 0.5, gen) if v2 else None)
    n, nv = mask.shape[1], ids.visible.shape[1]
    x_vis = torch.randn(b, nv, d, generator=gen).to(dtype)
    token = torch.randn(1, 1, d, generator=gen)
    pos = torch.randn(n, d, generator=gen)
    out = emu.decoder_input_cuda(x_vis, token, pos, ids.visible, ids.decoded)
    args64 = fp64_leaves(x_vis, token, pos)
    oracle = decoder_input_ref(*args64, ids.visible, ids.decoded, upcast=True)
    assert out.dtype == dtype and out.shape == oracle.shape
    assert_oracle("out", out, oracle, dtype)
    grad = torch.randn(out.shape, generator=gen).to(dtype)
    gx, gm, gp = emu.decoder_input_cuda_backward(grad, ids.visible, ids.decoded, n, True)
    ox, om, op = torch.autograd.grad(oracle, args64, grad.double())
    assert gx.dtype == dtype and gm.dtype == gp.dtype == torch.float32
    assert_oracle("d x_vis", gx, ox, dtype)
    assert_oracle("d mask_token", gm, om.view(-1), torch.float32)
    assert_oracle("d pos", gp, op, torch.float32)
    _, _, none = emu.decoder_input_cuda_backward(grad, ids.visible, ids.decoded, n, False)
    assert none.numel() == 0


def emu_loss_args(case, dtype, uint8, v2):
    videos, _, _, _, ids, grid = emu_inputs(case, dtype, uint8 is True)
    if uint8 == "flat":
        videos = videos * 1e-3
    c, tub, p = videos.shape[1], case[5], case[6]
    gen = torch.Generator().manual_seed(2)
    if v2:
        ids = token_ids(ids.mask(grid[0] * grid[1] * grid[2]), running_cell_mask(videos.shape[0], grid, 0.5, gen))
    pred = torch.randn(videos.shape[0], ids.decoded.shape[1], c * tub * p * p, generator=gen).to(dtype)
    return videos, pred, ids, tub, p


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
    videos, pred, ids, tub, p = emu_loss_args(case, dtype, uint8, v2)
    c = videos.shape[1]
    stats = ([0.45] * c, [0.225] * c)
    cfg = (tub, p, normalize, style, *stats)
    kw = dict(tubelet_size=tub, patch_size=p, normalize_target=normalize, style=style, mean=stats[0], std=stats[1])
    loss = emu.norm_pix_mse_cuda(pred, videos, ids.decoded, ids.scored, *cfg)
    pred64 = pred.double().requires_grad_()
    oracle = norm_pix_mse_ref(pred64, videos, ids.decoded, ids.scored, **kw, upcast=True)
    grad = emu.norm_pix_mse_cuda_backward(torch.tensor(0.75), pred, videos, ids.decoded, ids.scored, *cfg)
    (oracle_grad,) = torch.autograd.grad(oracle, pred64, torch.tensor(0.75, dtype=torch.float64))
    assert loss.dtype == torch.float32 and loss.shape == () and grad.dtype == dtype
    if uint8 == "flat":  # fp32 un-normalization (x*std + mean ~ 0.485 +- 2e-4) loses digits in any fp32 code
        pred32 = pred.detach().requires_grad_()
        ref = norm_pix_mse_ref(pred32, videos, ids.decoded, ids.scored, **kw)
        (ref_grad,) = torch.autograd.grad(ref, pred32, torch.tensor(0.75))
        check_2x("loss", loss, ref, oracle)
        check_2x("d pred", grad, ref_grad, oracle_grad)
        return
    torch.testing.assert_close(loss.double(), oracle.detach(), **dict(zip(("atol", "rtol"), LOSS_TOL)))
    atol, rtol = LOSS_GRAD_TOL[dtype]
    torch.testing.assert_close(grad.double(), oracle_grad, atol=atol, rtol=rtol)


def test_emulated_ids_out_of_range_are_skipped(emu):
    # compute-sanitizer friendliness: an id outside [0, N) (never made by token_ids) reads and writes nothing.
    videos, weight, bias, pos, ids, _ = emu_inputs(EMU_CASES[0], torch.float32, False)
    n = pos.shape[1]
    bad = ids.visible.clone()
    bad[0, 0], bad[1, -1] = n, -1
    kept = torch.ones(bad.shape, dtype=torch.bool)
    kept[0, 0] = kept[1, -1] = False
    out = emu.cube_embed_cuda(videos, weight, bias, pos, bad, MEAN, STD)
    good = emu.cube_embed_cuda(videos, weight, bias, pos, ids.visible, MEAN, STD)
    assert torch.equal(out[0, 0], bias) and torch.equal(out[1, -1], bias)  # no pixels, no pos: the bias alone
    assert torch.equal(out[kept], good[kept])
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    gv, _, _, gp = emu.cube_embed_cuda_backward(grad, videos, weight, bad, MEAN, STD, [True] * 4)
    expect = torch.zeros(n, pos.shape[2], dtype=torch.float64)  # d pos: the kept rows only
    expect.index_put_((bad[kept],), grad[kept].double(), accumulate=True)
    torch.testing.assert_close(gp.double(), expect, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(gv).all()

    x_vis, token = torch.randn(2, bad.shape[1], 40), torch.randn(40)
    dec = ids.decoded.clone()
    dec[1, 0] = n + 5
    out = emu.decoder_input_cuda(x_vis, token, pos, bad, dec)
    nv = bad.shape[1]
    assert torch.equal(out[0, 0], x_vis[0, 0]) and torch.equal(out[1, nv], token)  # no pos term
    assert torch.equal(out[0, 1], x_vis[0, 1] + pos[0, bad[0, 1]])

    # The loss skips the cube: the same as scoring every other decoded cube (V2's formula).
    pred = torch.randn(2, dec.shape[1], 1536, generator=torch.Generator().manual_seed(4))
    cfg = (2, 16, True, "videomae", MEAN, STD)
    loss = emu.norm_pix_mse_cuda(pred, videos, dec, None, *cfg)
    scored = dec < n
    expect = norm_pix_mse_ref(pred, videos, dec.clamp(max=n - 1), scored, upcast=True)
    torch.testing.assert_close(loss.double(), expect, atol=1e-6, rtol=1e-5)
    grad = emu.norm_pix_mse_cuda_backward(torch.tensor(1.0), pred, videos, dec, None, *cfg)
    assert torch.equal(grad[1, 0], torch.zeros(1536))


def test_emulated_bad_inputs(emu):
    videos, weight, _, _, ids, _ = emu_inputs(EMU_CASES[0], torch.float32, False)
    vis, dec = ids.visible, ids.decoded
    # The kernels' own checks: TORCH_CHECK_VALUE -> ValueError naming the argument, below the public validation.
    with pytest.raises(ValueError, match="videos must be float32, float16 or bfloat16 \\(or uint8\\)"):
        emu.cube_embed_cuda(videos.double(), weight, None, None, vis, MEAN, STD)
    with pytest.raises(ValueError, match="videos must be contiguous"):
        emu.cube_embed_cuda(videos.transpose(3, 4), weight, None, None, vis, MEAN, STD)
    with pytest.raises(ValueError, match="visible must be int64 token ids"):
        emu.cube_embed_cuda(videos, weight, None, None, vis.int(), MEAN, STD)
    with pytest.raises(ValueError, match="visible must be \\[2, K\\] with K <= 12"):
        emu.cube_embed_cuda(videos, weight, None, None, vis[:1].contiguous(), MEAN, STD)
    with pytest.raises(ValueError, match="bias must be \\[40\\]"):
        emu.cube_embed_cuda(videos, weight, torch.zeros(39), None, vis, MEAN, STD)
    with pytest.raises(ValueError, match="bias must be float32"):
        emu.cube_embed_cuda(videos, weight, torch.zeros(40, dtype=torch.float64), None, vis, MEAN, STD)
    with pytest.raises(ValueError, match="videos T=3, H=32, W=48 must be divisible"):
        emu.cube_embed_cuda(videos[:, :, :3].contiguous(), weight, None, None, vis, MEAN, STD)
    with pytest.raises(ValueError, match="mean and std must have one value per channel"):
        emu.cube_embed_cuda(videos.to(torch.uint8), weight, None, None, vis, MEAN[:2], STD)
    with pytest.raises(ValueError, match="needs must have 4 flags"):
        emu.cube_embed_cuda_backward(torch.zeros(2, 4, 40), videos, weight, vis, MEAN, STD, [True])
    with pytest.raises(ValueError, match="grad must be \\[2, 4, 40\\]"):
        emu.cube_embed_cuda_backward(torch.zeros(2, 3, 40), videos, weight, vis, MEAN, STD, [True] * 4)
    x_vis = torch.randn(2, 4, 40)
    with pytest.raises(ValueError, match="pos must be"):
        emu.decoder_input_cuda(x_vis, torch.randn(40), torch.randn(11, 39), vis, dec)
    with pytest.raises(ValueError, match="mask_token must have 40 values"):
        emu.decoder_input_cuda(x_vis, torch.randn(39), torch.randn(12, 40), vis, dec)
    with pytest.raises(ValueError, match="x_vis must be float32, float16 or bfloat16"):
        emu.decoder_input_cuda(x_vis.double(), torch.randn(40), torch.randn(12, 40), vis, dec)
    with pytest.raises(ValueError, match="visible must list x_vis' 3 tokens"):
        emu.decoder_input_cuda(x_vis[:, :3].contiguous(), torch.randn(40), torch.randn(12, 40), vis, dec)
    with pytest.raises(ValueError, match="decoded must be \\[2, K\\] with K <= 12"):
        emu.decoder_input_cuda(x_vis, torch.randn(40), torch.randn(12, 40), vis, torch.zeros(2, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="grad must have N_vis \\+ N_dec = 12 rows"):
        emu.decoder_input_cuda_backward(torch.randn(2, 11, 40), vis, dec, 12, True)
    pred = torch.randn(2, 8, 1536)
    with pytest.raises(ValueError, match="style must be"):
        emu.norm_pix_mse_cuda(pred, videos, dec, None, 2, 16, True, "mae", MEAN, STD)
    with pytest.raises(ValueError, match="pred must be \\[2, 8, 1536\\]"):
        emu.norm_pix_mse_cuda(pred[..., :-1].contiguous(), videos, dec, None, 2, 16, True, "videomae", MEAN, STD)
    with pytest.raises(ValueError, match="scored must be bool"):
        emu.norm_pix_mse_cuda(pred, videos, dec, dec, 2, 16, True, "videomae", MEAN, STD)
    with pytest.raises(ValueError, match="scored must be \\[2, 8\\] like decoded"):
        emu.norm_pix_mse_cuda(pred, videos, dec, torch.ones(2, 7, dtype=torch.bool), 2, 16, True, "videomae", MEAN,
                              STD)
