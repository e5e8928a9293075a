"""cube_embed on every backend: torch and Triton (under TRITON_INTERPRET=1) against the fp64 oracle
(`cube_embed_ref(upcast=True)`), the CUDA kernels in their CPU emulation (csrc/emu) and, marked `gpu`, the fused
backends on a GPU; bad input (one line naming the argument, the same for every backend), the ids fuzz (canary
memory around every buffer), degenerate shapes, opcheck, bitwise reruns."""

import pytest
import torch
from op_helpers import (
    ALL_BACKENDS,
    BACKENDS,
    BAD_IDS,
    CASES,
    DTYPES,
    EMU_CASES,
    FUSED,
    FUZZ_CASE,
    LOW,
    MEAN,
    OPCHECK_CASE,
    STATS,
    STD,
    Canaries,
    SyncRecorder,
    check_2x,
    close,
    emu_inputs,
    grads,
    kernel_impls,
    max_err,
    needs_ext,
    needs_fused,
    needs_gpu,
    noncontig,
    one_line,
    python_impls,
    repaired,
    spoil,
    to_fp64,
)
from tolerances import ERROR_FLOOR, ERROR_RATIO, TOL

import videomae.ops as ops
from videomae import dispatch
from videomae.dispatch import use_backend
from videomae.masking import token_ids, tube_mask
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
    with use_backend(backend):
        out = ops.cube_embed(**kw)
    kw64 = dict(zip(kw, to_fp64(*kw.values())))
    ref = cube_embed_ref(**kw64, upcast=True)
    assert out.dtype == dtype and out.shape == ref.shape
    tol = TOL[dtype]
    close(out, ref, tol)
    names = [k for k in ("videos", "weight", "bias", "pos") if kw[k] is not None and kw[k].requires_grad]
    for name, g, r in zip(names, grads(out, [kw[k] for k in names]), grads(ref, [kw64[k] for k in names])):
        assert g.dtype == kw[name].dtype, name
        close(g, r, tol, name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_error_at_most_twice_pytorchs(backend, dtype):
    """flash-attention's rule: error against fp64 at most 2x that of PyTorch's own computation in the dtype."""
    kw = T.cube_embed_inputs(CASES[1], dtype)
    with use_backend(backend):
        out = ops.cube_embed(**kw)
    oracle = cube_embed_ref(**dict(zip(kw, to_fp64(*kw.values()))), upcast=True)
    floor = ERROR_FLOOR[dtype] * oracle.abs().max().item()
    assert max_err(out, oracle) <= ERROR_RATIO * max_err(cube_embed_ref(**kw), oracle) + floor


def test_fp32_clip_and_any_float_bias_pos_with_16bit_weight():
    """The kernels read an fp32 clip and fp32/bf16 bias and pos as they are, converting in registers: the result
    is the reference's, which casts them first (conv3d under autocast)."""
    kw = T.cube_embed_inputs(CASES[1], torch.bfloat16)
    kw.update(videos=kw["videos"].detach().float(), pos=kw["pos"].detach(), bias=kw["bias"].detach().float())
    for backend in ("torch", *(["triton"] if "triton" in dispatch.registered() else [])):
        with use_backend(backend):
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
        with use_backend(backend):
            out = ops.cube_embed(**kw)
        return [out.detach(), *grads(out, [kw[k] for k in ("videos", "weight", "bias", "pos")])]

    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("uint8", [False, True])
def test_opcheck(backend, uint8):
    k = T.cube_embed_inputs(OPCHECK_CASE, torch.float32, uint8=uint8)
    torch.library.opcheck(torch_op("cube_embed", backend), (k["videos"], k["weight"], k["bias"], k["pos"],
                                                            k["visible"], *STATS))


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernels_never_sync(backend):
    """No data-dependent op in the backend's kernels, forward and backward (inputs made outside the recorder: the
    ids on the CPU, where the loader makes them)."""
    k = T.cube_embed_inputs(OPCHECK_CASE, torch.float32, grad=False)
    impls = python_impls(backend)
    with SyncRecorder() as rec:
        x = impls["cube_embed"](k["videos"], k["weight"], k["bias"], k["pos"], k["visible"], *STATS)
        impls["cube_embed_backward"](torch.ones_like(x), k["videos"], k["weight"], k["visible"], *STATS, [True] * 4)
    assert rec.offenses == []


# ------------------------------------------------------------------------------------------------- emulated CUDA


# A few cases that together take every path: vector / scalar accesses, fp32 / bf16, float / uint8, one channel.
@pytest.mark.parametrize("case,dtype,uint8", [
    (EMU_CASES[0], torch.float32, False), (EMU_CASES[0], torch.bfloat16, True),
    (EMU_CASES[1], torch.float32, False), (EMU_CASES[2], torch.bfloat16, False),
])
def test_emulated_cube_embed(emu, case, dtype, uint8):
    videos, weight, bias, pos, ids, _ = emu_inputs(case, dtype, uint8)
    stats = ([0.45] * videos.shape[1], [0.225] * videos.shape[1])
    out = emu.cube_embed_cuda(videos, weight, bias, pos, ids.visible, *stats)
    args64 = to_fp64(videos, weight, bias, pos, grad=True)
    oracle = cube_embed_ref(*args64, ids.visible, mean=stats[0], std=stats[1], upcast=True)
    assert out.dtype == dtype and out.shape == oracle.shape
    close(out, oracle, TOL[dtype], "out")
    assert torch.equal(emu.cube_embed_cuda(videos, weight, None, None, ids.visible, *stats),
                       emu.cube_embed_cuda(videos, weight, None, None, ids.visible, *stats))
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    needs = [not uint8, True, True, True]
    gv, gw, gb, gp = emu.cube_embed_cuda_backward(grad, videos, weight, ids.visible, *stats, needs)
    wanted = [t for t, need in zip(args64, needs) if need]
    oracle_grads = torch.autograd.grad(oracle, wanted, grad.double())
    got = [g for g, need in zip((gv, gw, gb, gp), needs) if need]
    for name, g, o in zip(("d videos", "d weight", "d bias", "d pos")[4 - len(got):], got, oracle_grads):
        close(g.view(o.shape), o, TOL[dtype], name)
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
    args64 = to_fp64(videos, weight, bias, pos, grad=True)
    oracle = cube_embed_ref(*args64, ids.visible, upcast=True)
    check_2x("out", out, ref, oracle)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(wdtype)
    needs = [not uint8, True, True, True]
    got = emu.cube_embed_cuda_backward(grad, videos, weight, ids.visible, MEAN, STD, needs)
    got = [g for g, need in zip(got, needs) if need]
    ref_grads = torch.autograd.grad(ref, [t for t, need in zip(leaves, needs) if need], grad)
    oracle_grads = torch.autograd.grad(oracle, [t for t, need in zip(args64, needs) if need], grad.double())
    names = [n for n, need in zip(("d videos", "d weight", "d bias", "d pos"), needs) if need]
    for name, g, r, o in zip(names, got, ref_grads, oracle_grads):
        assert g.dtype == r.dtype, name  # the clip's, the weight's, and fp32 for bias / pos
        check_2x(name, g.view(o.shape), r, o)


def test_emulated_opcheck(cuda_ops_on_cpu):
    # Schema, fake kernels and autograd registration of the shared glue against the real kernels.
    videos, weight, bias, pos, ids, _ = emu_inputs((2, 3, 4, 32, 64, 2, 16, 0.75), torch.float32, False)
    leaves = [t.requires_grad_() for t in (videos, weight, bias, pos)]
    torch.library.opcheck(cuda_ops_on_cpu.cube_embed_cuda, (*leaves, ids.visible, MEAN, STD))


def test_emulated_kernel_checks(emu):
    videos, weight, _, _, ids, _ = emu_inputs(EMU_CASES[0], torch.float32, False)
    vis = ids.visible
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
    with pytest.raises(ValueError, match="std must be positive"):
        emu.cube_embed_cuda(videos.to(torch.uint8), weight, None, None, vis, MEAN, [0.2, 0.0, 0.2])
    with pytest.raises(ValueError, match="needs must have 4 flags"):
        emu.cube_embed_cuda_backward(torch.zeros(2, 4, 40), videos, weight, vis, MEAN, STD, [True])
    with pytest.raises(ValueError, match="grad must be \\[2, 4, 40\\]"):
        emu.cube_embed_cuda_backward(torch.zeros(2, 3, 40), videos, weight, vis, MEAN, STD, [True] * 4)


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
    "visible out of range": ("visible", lambda k: k["visible"].__setitem__((1, 0), 12)),
    "visible negative": ("visible", lambda k: k["visible"].__setitem__((0, 2), -1)),
    "visible repeated": ("visible", lambda k: k["visible"].__setitem__((0, 1), k["visible"][0, 0])),
    "mean length": ("mean", lambda k: k.update(videos=T.clip(BAD_CASE, torch.uint8), mean=(0.5, 0.5))),
    "zero std": ("std", lambda k: k.update(videos=T.clip(BAD_CASE, torch.uint8), std=(0.2, 0.0, 0.2))),
    "nan mean": ("mean", lambda k: k.update(videos=T.clip(BAD_CASE, torch.uint8), mean=(0.5, float("nan"), 0.5))),
}


@pytest.mark.parametrize("what", list(BAD))
def test_bad_input_is_one_line_naming_it_on_every_backend(what):
    """Validated once, before dispatch: the same one-line error whichever backend is forced (cuda included:
    its CPU refusal would come after)."""
    name, spoil_kw = BAD[what]
    kw = T.cube_embed_inputs(BAD_CASE, torch.float32, grad=False)
    spoil_kw(kw)
    messages = set()
    for backend in ALL_BACKENDS:
        with use_backend(backend):
            messages.add(one_line(lambda: ops.cube_embed(**kw)))
    assert len(messages) == 1 and messages.pop().startswith(f"{name} ")


# ------------------------------------------------------------------------------------------------- the ids fuzz

SHAPES = {"rank 1": lambda ids: ids[0], "rank 3": lambda ids: ids[None], "batch": lambda ids: ids[:1],
          "more than N": lambda ids: torch.arange(FUZZ_CASE.tokens + 1).expand(ids.shape[0], -1).contiguous(),
          "int32": lambda ids: ids.int(), "float": lambda ids: ids.double(), "layout": lambda ids: noncontig(ids)}


@pytest.mark.parametrize("seed", range(12))
def test_fuzz_public_op_refuses_bad_ids_in_one_line(seed):
    """Random bad id tensors through the public op: each one a one-line ValueError naming `visible`, the same on
    every backend; nothing ran, so every canary is intact."""
    gen = torch.Generator().manual_seed(seed)
    kinds = [*BAD_IDS, *SHAPES]
    kind = kinds[seed % len(kinds)]
    canaries = Canaries()
    kw = {k: canaries.put(v, k) for k, v in T.cube_embed_inputs(FUZZ_CASE, torch.float32, seed=seed).items()}
    ids = kw["visible"]
    kw["visible"] = SHAPES[kind](ids) if kind in SHAPES else spoil(ids, FUZZ_CASE.tokens, kind, gen)[0]
    messages = set()
    for backend in ALL_BACKENDS:
        with use_backend(backend):
            messages.add(one_line(lambda: ops.cube_embed(**kw)))
    assert len(messages) == 1 and messages.pop().startswith("visible "), messages
    assert canaries.touched() == []


@pytest.mark.parametrize("backend", [*BACKENDS, "cuda"])
@pytest.mark.parametrize("kind", BAD_IDS)
def test_fuzz_kernels_stay_inside_their_buffers(backend, kind, request, monkeypatch):
    """Validation bypassed: the backend's kernels on bad ids, inside canary memory (NaN margins). Triton and CUDA
    treat an id outside [0, N) as absent (its row is the bias alone and takes no pixel, pos or clip gradient);
    torch refuses it with aten's bounds check. A repeated id: exact forward, d weight and d bias everywhere; the
    fused d pos / d videos keep one of its rows (torch sums both)."""
    emu = request.getfixturevalue("emu") if backend == "cuda" else None
    canaries = Canaries()
    impl = kernel_impls(backend, emu, monkeypatch, canaries)
    gen = torch.Generator().manual_seed(BAD_IDS.index(kind))
    kw = T.cube_embed_inputs(FUZZ_CASE, torch.float32, seed=BAD_IDS.index(kind), grad=False)
    n = FUZZ_CASE.tokens
    ids, out_of_range = spoil(kw["visible"], n, kind, gen)
    videos, weight, bias, pos = (canaries.put(kw[k], k) for k in ("videos", "weight", "bias", "pos"))
    visible = canaries.put(ids, "visible")
    grad = canaries.put(torch.randn(*ids.shape, FUZZ_CASE.dim, generator=gen), "grad")

    def run():
        return (impl["cube_embed"](videos, weight, bias, pos, visible, MEAN, STD),
                impl["cube_embed_backward"](grad, videos, weight, visible, MEAN, STD, [True] * 4))

    if backend == "torch" and out_of_range.any():
        with pytest.raises(RuntimeError, match="out of bounds"):
            run()
    else:
        out, got = run()
        args64 = to_fp64(videos, weight, bias, pos, grad=True)
        ref = cube_embed_ref(*args64, repaired(ids, out_of_range, n), upcast=True)
        ref = torch.where(out_of_range[..., None], args64[2].expand_as(ref), ref)  # the bias alone
        close(out, ref, TOL[torch.float32], "out")
        assert torch.equal(out[out_of_range], bias.expand(int(out_of_range.sum()), -1))  # bit for bit: no pixel, no pos
        exact = kind != "duplicate" or backend == "torch"
        for name, g, r in zip(("d videos", "d weight", "d bias", "d pos"), got,
                              torch.autograd.grad(ref, args64, grad.double())):
            if exact or name in ("d weight", "d bias"):
                close(g.view(r.shape), r, TOL[torch.float32], name)
            assert torch.isfinite(g).all(), name
    assert canaries.touched() == []


# ------------------------------------------------------------------------------------------------- degenerate shapes


@pytest.mark.parametrize("backend", [*BACKENDS, "cuda"])
@pytest.mark.parametrize("batch,ratio", [(0, 0.5), (2, 0.0)], ids=["empty batch", "no visible cube"])
def test_empty_batch_or_no_visible_cube_gives_empty_output(backend, batch, ratio, request):
    """[B, 0, D] (or [0, N_vis, D]) out, zero gradients: the same on every backend (cuda: its emulated kernels)."""
    case = T.Case(max(batch, 1), 4, 32, 48, tubelet=2, patch=16, dim=40, ratio=0.5)
    kw = T.cube_embed_inputs(case, torch.float32, grad=False)
    kw["videos"] = kw["videos"][:batch].contiguous()
    kw["visible"] = kw["visible"][:batch].contiguous() if ratio else torch.zeros(batch, 0, dtype=torch.int64)
    leaves = [kw[k].requires_grad_() for k in ("videos", "weight", "bias", "pos")]
    if backend == "cuda":
        emu = request.getfixturevalue("emu")
        out = emu.cube_embed_cuda(*leaves, kw["visible"], MEAN, STD)
        got = emu.cube_embed_cuda_backward(torch.ones(out.shape), *leaves[:2], kw["visible"], MEAN, STD, [True] * 4)
    else:
        with use_backend(backend):
            out = ops.cube_embed(*leaves, kw["visible"])
        got = torch.autograd.grad(out.sum(), leaves)
    assert out.shape == (batch, kw["visible"].shape[1], 40)
    for g, t in zip(got, leaves):
        assert torch.equal(g.view(t.shape), torch.zeros_like(t))


# ------------------------------------------------------------------------------------------------- GPU

GPU_CASES = [  # B, C, T, H, W, tubelet, patch, D, ratio
    (2, 3, 4, 32, 48, 2, 16, 40, 0.75),
    (3, 3, 8, 32, 32, 2, 16, 56, 0.5),
    (1, 3, 6, 28, 42, 2, 14, 64, 0.9),  # p=14: rows of 14 pixels take the scalar path
    (2, 3, 16, 224, 224, 2, 16, 768, 0.9),  # ViT-B
    (64, 3, 16, 256, 32, 2, 16, 64, 0.75),  # > 65535 row blocks: the kernels' grid-stride loops
]


def gpu_inputs(case, dtype, uint8=False, seed=0):
    """Made on the GPU; token ids on the CPU, as the collate makes them, then moved."""
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
    ids = token_ids(tube_mask(b, grid, ratio, torch.Generator().manual_seed(seed))).to("cuda")
    return videos, weight, bias, pos, ids.visible


@pytest.mark.parametrize("case", GPU_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("uint8", [False, True])
@pytest.mark.parametrize("with_bias_pos", [True, False])
@needs_ext
@pytest.mark.gpu
@needs_gpu
def test_cuda_on_gpu(case, dtype, uint8, with_bias_pos, no_tf32):
    videos, weight, bias, pos, visible = gpu_inputs(case, dtype, uint8)
    if not with_bias_pos:
        bias = pos = None
    args = (videos, weight, bias, pos, visible)
    with use_backend("cuda"):
        out = ops.cube_embed(*args)
        got = grads(out, args)
        out2 = ops.cube_embed(*args)
        got2 = grads(out2, args)
    ref = cube_embed_ref(*args)
    ref_grads = grads(ref, args)
    oracle_args = [*to_fp64(*args[:4]), visible]
    oracle = cube_embed_ref(*oracle_args, upcast=True)
    oracle_grads = grads(oracle, oracle_args)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    check_2x("out", out, ref, oracle)
    names = [n for n, t in zip(("videos", "weight", "bias", "pos"), args[:4]) if t is not None and t.requires_grad]
    for name, g, r, o in zip(names, got, ref_grads, oracle_grads):
        assert g.dtype == r.dtype and g.shape == r.shape, name
        check_2x(f"d {name}", g, r, o)
    assert torch.equal(out, out2) and all(torch.equal(a, b) for a, b in zip(got, got2)), "not bitwise"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("uint8", [False, True])
@needs_ext
@pytest.mark.gpu
@needs_gpu
def test_cuda_autocast_on_gpu(dtype, uint8, no_tf32):
    # A training step's mix: fp32 parameters and clip under autocast; the facade casts only the weight.
    videos, weight, bias, pos, visible = gpu_inputs(GPU_CASES[3], torch.float32, uint8)
    args = (videos, weight, bias, pos, visible)
    with torch.autocast("cuda", dtype=dtype), use_backend("cuda"):
        out = ops.cube_embed(*args)
    got = grads(out, args)
    ref = cube_embed_ref(videos, weight.to(dtype), bias, pos, visible)  # what autocast's conv3d computes
    ref_grads = grads(ref, args)
    oracle_args = [*to_fp64(videos, weight.to(dtype), bias, pos, grad=True), visible]  # the weight autocast uses
    oracle = cube_embed_ref(*oracle_args, upcast=True)
    oracle_grads = grads(oracle, [t for t, a in zip(oracle_args, args) if a is not None and a.requires_grad])
    assert out.dtype == dtype
    check_2x("out", out, ref, oracle)
    for g, r, o in zip(got, ref_grads, oracle_grads):
        assert g.dtype == r.dtype and g.shape == r.shape
        check_2x("grad", g, r, o)


@needs_ext
@pytest.mark.gpu
@needs_gpu
def test_cuda_kernel_checks_on_gpu():
    videos, weight, _, _, visible = gpu_inputs(GPU_CASES[0], torch.float32)
    videos, weight = videos.detach(), weight.detach()
    op = torch.ops.videomae
    with pytest.raises(ValueError, match="videos must be contiguous"):
        op.cube_embed_cuda(videos.transpose(3, 4), weight, None, None, visible, MEAN, STD)
    with pytest.raises(ValueError, match="visible must be int64 token ids"):
        op.cube_embed_cuda(videos, weight, None, None, visible.int(), MEAN, STD)
    with pytest.raises(ValueError, match="videos T=3, H=32, W=48 must be divisible"):
        op.cube_embed_cuda(videos[:, :, :3].contiguous(), weight, None, None, visible, MEAN, STD)
    with pytest.raises(ValueError, match="mean and std must have one value per channel"):
        op.cube_embed_cuda((videos * 0).to(torch.uint8), weight, None, None, visible, MEAN[:2], STD)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", list(T.VIT))
@pytest.mark.gpu
@needs_gpu
def test_fused_at_vit_shapes_on_gpu(backend, dtype, size, no_tf32):
    """ViT-S/B/L pretraining shapes (B=32, 16x224x224, tube ratio 0.9): error <= 2x PyTorch's, bitwise reruns."""
    kw = T.cube_embed_inputs(T.VIT[size], dtype, "cuda", grad=True)
    kw["videos"].requires_grad_(False)  # the clip is data in pretraining; its grad is covered above
    needs_fused(backend, "cube_embed", kw)
    names = ["weight", "bias", "pos"]
    with use_backend(backend):
        out = ops.cube_embed(**kw)
    eager = cube_embed_ref(**kw)
    kw64 = dict(zip(kw, to_fp64(*kw.values())))
    oracle = cube_embed_ref(**kw64, upcast=True)
    check_2x("out", out, eager, oracle, dtype, oracle.abs().max().item())
    kernel_grads = grads(out, [kw[k] for k in names])
    for name, gk, ge, go in zip(names, kernel_grads, grads(eager, [kw[k] for k in names]),
                                grads(oracle, [kw64[k] for k in names])):
        check_2x(f"d {name}", gk, ge, go, dtype, go.abs().max().item())
    with use_backend(backend):
        again = ops.cube_embed(**kw)
    assert torch.equal(out, again)
    assert all(torch.equal(a, b) for a, b in zip(kernel_grads, grads(again, [kw[k] for k in names])))


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.gpu
@needs_gpu
def test_opcheck_on_gpu(backend):
    k = T.cube_embed_inputs(OPCHECK_CASE, torch.float32, "cuda")
    args = (k["videos"], k["weight"], k["bias"], k["pos"], k["visible"], *STATS)
    needs_fused(backend, "cube_embed", k)
    torch.library.opcheck(torch_op("cube_embed", backend), args)
