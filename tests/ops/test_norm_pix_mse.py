"""norm_pix_mse on every backend: torch and Triton (under TRITON_INTERPRET=1) against the fp64 oracle
(`norm_pix_mse_ref(upcast=True)`), the CUDA kernels in their CPU emulation (csrc/emu) and, marked `gpu`, the fused
backends on a GPU; the reference against a plain-loop computation of the official engines' losses; bad input (one
line, the same for every backend), the ids fuzz (canary memory around every buffer), degenerate inputs, opcheck,
bitwise reruns."""

import itertools

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
    V2_CASES,
    Canaries,
    SyncRecorder,
    check_2x,
    close,
    emu_inputs,
    kernel_impls,
    needs_ext,
    needs_fused,
    needs_gpu,
    noncontig,
    one_line,
    python_impls,
    repaired,
    spoil,
)
from tolerances import LOSS_GRAD_TOL, LOSS_TOL

import videomae.ops as ops
from videomae import dispatch
from videomae.constants import IMAGENET_MEAN, IMAGENET_STD
from videomae.dispatch import use_backend
from videomae.masking import running_cell_mask, token_ids, tube_mask
from videomae.ops import pixel_loss
from videomae.ops import testing as T
from videomae.ops.library import torch_op
from videomae.ops.norm_pix_mse import norm_pix_mse_ref

MODES = [(s, n) for s in ("videomae", "mae_st") for n in (True, False)]
LOSS_PARAMS = (
    [(V2_CASES[0], torch.float32, s, n, v2, False) for s, n in MODES for v2 in (False, True)]  # every mode
    + [(c, torch.float32, "videomae", True, False, False) for c in CASES[1:]]
    + [(V2_CASES[1], torch.float32, "videomae", True, True, False)]
    + [(V2_CASES[0], d, s, True, False, False) for d in LOW for s in ("videomae", "mae_st")]
    + [(V2_CASES[0], torch.float32, s, True, v2, True) for s in ("videomae", "mae_st") for v2 in (False, True)]
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case,dtype,style,normalize,v2,uint8", LOSS_PARAMS, ids=lambda p: str(p))
def test_norm_pix_mse(backend, case, dtype, style, normalize, v2, uint8):
    kw = T.norm_pix_mse_inputs(case, dtype, v2=v2, uint8=uint8)
    kw.update(style=style, normalize_target=normalize)
    with use_backend(backend):
        loss = ops.norm_pix_mse(**kw)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    pred64 = kw["pred"].detach().double().requires_grad_()
    ref = norm_pix_mse_ref(**{**kw, "pred": pred64}, upcast=True)
    close(loss, ref, LOSS_TOL)
    close(loss, norm_pix_mse_ref(**kw), LOSS_TOL)  # the fp32 official computation
    (g,) = torch.autograd.grad(loss, kw["pred"])
    (r,) = torch.autograd.grad(ref, pred64)
    assert g.dtype == dtype
    close(g, r, LOSS_GRAD_TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bitwise_rerun(backend):
    def run():
        kw = T.norm_pix_mse_inputs(V2_CASES[0], torch.float32, v2=True)
        with use_backend(backend):
            loss = ops.norm_pix_mse(**kw)
        return [loss.detach(), *torch.autograd.grad(loss, kw["pred"])]

    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v2,uint8", [(True, False), (False, True)])
def test_opcheck(backend, v2, uint8):
    k = T.norm_pix_mse_inputs(OPCHECK_CASE, torch.float32, v2=v2, uint8=uint8)
    torch.library.opcheck(torch_op("norm_pix_mse", backend),
                          (k["pred"], k["videos"], k["decoded"], k["scored"], 2, 16, True, "videomae", *STATS))


# ------------------------------------------------------------------------------------------------- the reference


def loop_targets(video, t, p, style, normalize):
    """video [C, T, H, W] float64 -> list of cubes, each a list of t*p*p*C values (channel fastest)."""
    c, frames, height, width = video.shape
    cubes = []
    for tt, hh, ww in itertools.product(range(frames // t), range(height // p), range(width // p)):
        vals = [[0.0] * c for _ in range(t * p * p)]
        for i, (a, b, d) in enumerate(itertools.product(range(t), range(p), range(p))):
            for ch in range(c):
                x = video[ch, tt * t + a, hh * p + b, ww * p + d].item()
                if style == "videomae":
                    x = x * IMAGENET_STD[ch] + IMAGENET_MEAN[ch]
                vals[i][ch] = x
        if normalize and style == "videomae":
            for ch in range(c):
                col = [v[ch] for v in vals]
                mu = sum(col) / len(col)
                sd = (sum((x - mu) ** 2 for x in col) / (len(col) - 1)) ** 0.5
                for v in vals:
                    v[ch] = (v[ch] - mu) / (sd + 1e-6)
        flat = [x for v in vals for x in v]
        if normalize and style == "mae_st":
            mu = sum(flat) / len(flat)
            var = sum((x - mu) ** 2 for x in flat) / (len(flat) - 1)
            flat = [(x - mu) / (var + 1e-6) ** 0.5 for x in flat]
        cubes.append(flat)
    return cubes


@pytest.mark.parametrize("style, normalize", [("videomae", True), ("videomae", False), ("mae_st", True)])
def test_reference_equals_plain_loop(style, normalize):
    g = torch.Generator().manual_seed(0)
    b, t, p = 2, 2, 4
    video = torch.randn(b, 3, 4, 8, 12, generator=g)
    mask = tube_mask(b, (2, 2, 3), 0.5, g)
    n_masked = int(mask[0].sum())
    pred = torch.randn(b, n_masked, 3 * t * p * p, generator=g)
    total, count = 0.0, 0
    for i in range(b):
        cubes = loop_targets(video[i].double(), t, p, style, normalize)
        rows = [cubes[n] for n in range(len(cubes)) if mask[i, n]]
        for r, target in enumerate(rows):
            for k, y in enumerate(target):
                total += (pred[i, r, k].item() - y) ** 2
                count += 1
    ids = token_ids(mask)
    got = norm_pix_mse_ref(pred, video, ids.decoded, normalize_target=normalize, tubelet_size=t, patch_size=p,
                           style=style)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(total / count, rel=1e-5)
    # the public Bool-mask name, on whichever backend runs here
    got = pixel_loss(pred, video, mask, normalize_target=normalize, tubelet_size=t, patch_size=p, style=style)
    assert got.item() == pytest.approx(total / count, rel=1e-5)


def test_v2_dual_masking_weights_decoded_and_masked_cubes():
    g = torch.Generator().manual_seed(1)
    b, t, p = 2, 2, 4
    video = torch.randn(b, 3, 4, 8, 8, generator=g)
    mask = tube_mask(b, (2, 2, 2), 0.5, g)
    decode_mask = running_cell_mask(b, (2, 2, 2), 0.5, g)
    n_dec = int((~decode_mask[0]).sum())
    pred = torch.randn(b, n_dec, 3 * t * p * p, generator=g)
    num, den = 0.0, 0
    for i in range(b):
        cubes = loop_targets(video[i].double(), t, p, "videomae", True)
        decoded = [n for n in range(len(cubes)) if not decode_mask[i, n]]
        for r, n in enumerate(decoded):
            if mask[i, n]:
                err = [(pred[i, r, k].item() - y) ** 2 for k, y in enumerate(cubes[n])]
                num += sum(err) / len(err)
                den += 1
    ids = token_ids(mask, decode_mask)
    got = norm_pix_mse_ref(pred, video, ids.decoded, ids.scored, tubelet_size=t, patch_size=p)
    assert got.item() == pytest.approx(num / den, rel=1e-5)
    for backend in ("torch", "triton"):
        if backend in dispatch.registered():
            with use_backend(backend):
                got = ops.norm_pix_mse(pred, video, ids.decoded, ids.scored, tubelet_size=t, patch_size=p)
            assert got.item() == pytest.approx(num / den, rel=1e-5)


def test_loss_is_fp32_for_half_inputs_and_checks_pred_shape():
    video = torch.randn(1, 3, 2, 4, 4)
    decoded = torch.tensor([[0]])
    pred = torch.randn(1, 1, 3 * 2 * 4 * 4).to(torch.bfloat16)
    assert norm_pix_mse_ref(pred, video, decoded, tubelet_size=2, patch_size=4).dtype == torch.float32
    assert ops.norm_pix_mse(pred, video, decoded, tubelet_size=2, patch_size=4).dtype == torch.float32
    with pytest.raises(ValueError, match="pred"):
        ops.norm_pix_mse(pred[:, :, :-1], video, decoded, tubelet_size=2, patch_size=4)


# ------------------------------------------------------------------------------------------------- bad input

BAD = {
    "pred rows": ("pred", lambda k: k.update(pred=k["pred"][:, 1:].contiguous())),
    "pred values": ("pred", lambda k: k.update(pred=k["pred"][..., 1:].contiguous())),
    "pred batch": ("pred", lambda k: k.update(pred=k["pred"][:1])),
    "videos rank": ("videos", lambda k: k.update(videos=k["videos"][0])),
    "patch does not divide": ("videos", lambda k: k.update(patch_size=12)),
    "decoded dtype": ("decoded", lambda k: k.update(decoded=k["decoded"].int())),
    "decoded out of range": ("decoded", lambda k: k["decoded"].__setitem__((1, 1), 64)),
    "decoded repeated": ("decoded", lambda k: k["decoded"].__setitem__((0, 1), k["decoded"][0, 0])),
    "no decoded cube": ("decoded", lambda k: k.update(decoded=k["decoded"][:, :0], pred=k["pred"][:, :0],
                                                      scored=k["scored"][:, :0])),
    "empty batch": ("decoded", lambda k: k.update(**{n: k[n][:0] for n in ("pred", "videos", "decoded", "scored")})),
    "scored dtype": ("scored", lambda k: k.update(scored=k["scored"].float())),
    "scored shape": ("scored", lambda k: k.update(scored=k["scored"][:, 1:].contiguous())),
    "style": ("style", lambda k: k.update(style="mae")),
    "std length": ("std", lambda k: k.update(std=(1.0,))),
    "zero std": ("std", lambda k: k.update(std=(0.2, 0.0, 0.2))),
    "negative std": ("std", lambda k: k.update(std=(0.2, -0.2, 0.2))),
    "infinite mean": ("mean", lambda k: k.update(mean=(0.5, float("inf"), 0.5))),
}


@pytest.mark.parametrize("what", list(BAD))
def test_bad_input_is_one_line_naming_it_on_every_backend(what):
    """Validated once, before dispatch: the same one-line error whichever backend is forced. A loss over no
    decoded cube (N_dec = 0 or B = 0) and a non-positive std are refused the same way."""
    name, spoil_kw = BAD[what]
    kw = T.norm_pix_mse_inputs(V2_CASES[0], torch.float32, v2=True)
    spoil_kw(kw)
    messages = set()
    for backend in ALL_BACKENDS:
        with use_backend(backend):
            messages.add(one_line(lambda: ops.norm_pix_mse(**kw)))
    assert len(messages) == 1 and messages.pop().startswith(f"{name} ")


@pytest.mark.parametrize("backend", [*BACKENDS, "cuda"])
def test_no_scored_cube_gives_nan_on_every_backend(backend, request):
    """V2 ids whose batch scores no cube (data-dependent: a step cannot look without a host sync): the mean of
    nothing, NaN, and NaN gradients, whichever backend (cuda: its emulated kernels)."""
    kw = T.norm_pix_mse_inputs(V2_CASES[0], torch.float32, v2=True)
    kw["scored"] = torch.zeros_like(kw["scored"])
    if backend == "cuda":
        emu = request.getfixturevalue("emu")
        cfg = (2, 16, True, "videomae", MEAN, STD)
        args = (kw["pred"].detach(), kw["videos"], kw["decoded"], kw["scored"])
        loss = emu.norm_pix_mse_cuda(*args, *cfg)
        grad = emu.norm_pix_mse_cuda_backward(torch.tensor(1.0), *args, *cfg)
    else:
        with use_backend(backend):
            loss = ops.norm_pix_mse(**kw)
        (grad,) = torch.autograd.grad(loss, kw["pred"])
    assert torch.isnan(loss) and torch.isnan(grad).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_kernels_never_sync(backend, v2):
    """No data-dependent op in the backend's kernels, forward and backward (the ids made outside, on the CPU)."""
    p = T.norm_pix_mse_inputs(OPCHECK_CASE, torch.float32, v2=v2)
    impls, pred, cfg = python_impls(backend), p["pred"].detach(), (2, 16, True, "videomae", *STATS)
    with SyncRecorder() as rec:
        loss = impls["norm_pix_mse"](pred, p["videos"], p["decoded"], p["scored"], *cfg)
        impls["norm_pix_mse_backward"](torch.ones_like(loss), pred, p["videos"], p["decoded"], p["scored"], *cfg)
    assert rec.offenses == []


# ------------------------------------------------------------------------------------------------- the ids fuzz

SHAPES = {"rank 1": lambda ids: ids[0], "batch": lambda ids: ids[:1], "int32": lambda ids: ids.int(),
          "more than N": lambda ids: torch.arange(FUZZ_CASE.tokens + 1).expand(ids.shape[0], -1).contiguous(),
          "layout": lambda ids: noncontig(ids)}


@pytest.mark.parametrize("seed", range(12))
def test_fuzz_public_op_refuses_bad_ids_in_one_line(seed):
    gen = torch.Generator().manual_seed(seed)
    kinds = [*BAD_IDS, *SHAPES]
    kind = kinds[seed % len(kinds)]
    canaries = Canaries()
    kw = T.norm_pix_mse_inputs(FUZZ_CASE, torch.float32, seed=seed, v2=seed % 2 == 1)
    kw.update({k: canaries.put(kw[k], k) for k in ("pred", "videos", "decoded", "scored")})
    ids = kw["decoded"]
    kw["decoded"] = SHAPES[kind](ids) if kind in SHAPES else spoil(ids, FUZZ_CASE.tokens, kind, gen)[0]
    messages = set()
    for backend in ALL_BACKENDS:
        with use_backend(backend):
            messages.add(one_line(lambda: ops.norm_pix_mse(**kw)))
    assert len(messages) == 1 and messages.pop().startswith("decoded "), messages
    assert canaries.touched() == []


@pytest.mark.parametrize("backend", [*BACKENDS, "cuda"])
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("kind", BAD_IDS)
def test_fuzz_kernels_stay_inside_their_buffers(backend, v2, kind, request, monkeypatch):
    """Validation bypassed, inside canary memory: Triton and CUDA give a cube whose id is outside [0, N) weight 0
    (no pixel read, no gradient, not counted in the mean); torch refuses it (aten's bounds check). A repeated id is
    a cube of its own: exact on every backend."""
    emu = request.getfixturevalue("emu") if backend == "cuda" else None
    canaries = Canaries()
    impl = kernel_impls(backend, emu, monkeypatch, canaries)
    seed = 10 * BAD_IDS.index(kind) + v2
    gen = torch.Generator().manual_seed(seed)
    kw = T.norm_pix_mse_inputs(FUZZ_CASE, torch.float32, seed=seed, v2=v2)
    n = FUZZ_CASE.tokens
    ids, out_of_range = spoil(kw["decoded"], n, kind, gen)
    pred, videos, decoded, scored = (canaries.put(t, k) for k, t in (("pred", kw["pred"]), ("videos", kw["videos"]),
                                                                       ("decoded", ids), ("scored", kw["scored"])))
    grad_loss = canaries.put(torch.tensor(0.75), "grad")
    cfg = (FUZZ_CASE.tubelet, FUZZ_CASE.patch, True, "videomae", MEAN, STD)

    def run():
        return (impl["norm_pix_mse"](pred, videos, decoded, scored, *cfg),
                impl["norm_pix_mse_backward"](grad_loss, pred, videos, decoded, scored, *cfg))

    if backend == "torch" and out_of_range.any():
        with pytest.raises(RuntimeError, match="out of bounds"):
            run()
    else:
        loss, grad = run()
        counted = ~out_of_range if scored is None else ~out_of_range & scored
        pred64 = pred.detach().double().requires_grad_()
        ref = norm_pix_mse_ref(pred64, videos, repaired(ids, out_of_range, n), counted, tubelet_size=cfg[0],
                               patch_size=cfg[1], upcast=True)
        (ref_grad,) = torch.autograd.grad(ref, pred64, torch.tensor(0.75, dtype=torch.float64))
        close(loss, ref, LOSS_TOL, "loss")
        close(grad, ref_grad, LOSS_GRAD_TOL[torch.float32], "d pred")
    assert canaries.touched() == []


# ------------------------------------------------------------------------------------------------- emulated CUDA


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


def test_emulated_opcheck(cuda_ops_on_cpu):
    videos, _, _, _, ids, grid = emu_inputs((2, 3, 4, 32, 64, 2, 16, 0.75), torch.float32, False)
    ids = token_ids(ids.mask(grid[0] * grid[1] * grid[2]), running_cell_mask(2, grid, 0.5,
                                                                             torch.Generator().manual_seed(5)))
    pred = torch.randn(2, ids.decoded.shape[1], 1536, requires_grad=True)
    torch.library.opcheck(cuda_ops_on_cpu.norm_pix_mse_cuda, (pred, videos, ids.decoded, ids.scored, 2, 16, True,
                                                              "videomae", MEAN, STD))


def test_emulated_kernel_checks(emu):
    videos, _, _, _, ids, _ = emu_inputs(EMU_CASES[0], torch.float32, False)
    dec = ids.decoded
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
    with pytest.raises(ValueError, match="std must be positive"):
        emu.norm_pix_mse_cuda(pred, videos, dec, None, 2, 16, True, "videomae", MEAN, [0.2, 0.0, 0.2])


# ------------------------------------------------------------------------------------------------- GPU

GPU_CASES = [  # B, C, T, H, W, tubelet, patch, ratio
    (2, 3, 4, 32, 48, 2, 16, 0.75),
    (3, 3, 8, 28, 28, 2, 14, 0.5),  # scalar path
    (8, 3, 16, 224, 224, 2, 16, 0.9),  # ViT-B shapes, smaller batch
]


@pytest.mark.parametrize("case", GPU_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("style", ["videomae", "mae_st"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("uint8", [False, True])
@needs_ext
@pytest.mark.gpu
@needs_gpu
def test_cuda_on_gpu(case, dtype, style, normalize, v2, uint8, no_tf32):
    b, c, t, h, w, tub, p, ratio = case
    grid = (t // tub, h // p, w // p)
    gen = torch.Generator("cuda").manual_seed(0)
    if uint8:
        videos = torch.randint(0, 256, (b, c, t, h, w), generator=gen, device="cuda", dtype=torch.uint8)
    else:  # float clips are normalized; the reference targets are fp32 whatever the clip's dtype
        videos = torch.randn(b, c, t, h, w, generator=gen, device="cuda").to(dtype)
    mask = tube_mask(b, grid, ratio, torch.Generator().manual_seed(0))
    ids = token_ids(mask, running_cell_mask(b, grid, 0.5, torch.Generator().manual_seed(1)) if v2 else None)
    ids = ids.to("cuda")  # made on the CPU, as the collate makes them
    pred = torch.randn(b, ids.decoded.shape[1], c * tub * p * p, generator=gen, device="cuda").to(dtype)
    pred.requires_grad_()
    kw = dict(tubelet_size=tub, patch_size=p, normalize_target=normalize, style=style)
    with use_backend("cuda"):
        loss = ops.norm_pix_mse(pred, videos, ids.decoded, ids.scored, **kw)
        (grad,) = torch.autograd.grad(loss, [pred])
        loss2 = ops.norm_pix_mse(pred, videos, ids.decoded, ids.scored, **kw)
        (grad2,) = torch.autograd.grad(loss2, [pred])
    ref = norm_pix_mse_ref(pred, videos, ids.decoded, ids.scored, **kw)
    (ref_grad,) = torch.autograd.grad(ref, [pred])
    pred64 = pred.detach().double().requires_grad_()  # an fp64 leaf: its grad is not rounded to pred's dtype
    oracle = norm_pix_mse_ref(pred64, videos, ids.decoded, ids.scored, **kw, upcast=True)
    (oracle_grad,) = torch.autograd.grad(oracle, [pred64])
    assert loss.dtype == torch.float32 and loss.shape == () and grad.dtype == dtype
    check_2x("loss", loss, ref, oracle)
    check_2x("d pred", grad, ref_grad.to(dtype), oracle_grad)
    assert torch.equal(loss, loss2) and torch.equal(grad, grad2), "not bitwise"


@needs_ext
@pytest.mark.gpu
@needs_gpu
def test_cuda_kernel_checks_on_gpu():
    videos = torch.randn(2, 3, 4, 32, 48, device="cuda")
    decoded = torch.zeros(2, 8, dtype=torch.long, device="cuda")
    op = torch.ops.videomae
    with pytest.raises(ValueError, match="style must be"):
        op.norm_pix_mse_cuda(torch.randn(2, 8, 1536, device="cuda"), videos, decoded, None, 2, 16, True, "mae", MEAN,
                             STD)
    with pytest.raises(ValueError, match="pred must be"):
        op.norm_pix_mse_cuda(torch.randn(2, 8, 1535, device="cuda"), videos, decoded, None, 2, 16, True, "videomae",
                             MEAN, STD)
    with pytest.raises(ValueError, match="videos must be a CUDA tensor"):
        op.norm_pix_mse_cuda(torch.randn(2, 8, 1536, device="cuda"), videos.cpu(), decoded, None, 2, 16, True,
                             "videomae", MEAN, STD)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", list(T.VIT))
@pytest.mark.parametrize("style,normalize,v2", [("videomae", True, False), ("videomae", True, True),
                                                ("videomae", False, False), ("mae_st", True, False)])
@pytest.mark.gpu
@needs_gpu
def test_fused_at_vit_shapes_on_gpu(backend, dtype, size, style, normalize, v2, no_tf32):
    kw = T.norm_pix_mse_inputs(T.VIT[size], dtype, "cuda", v2=v2)
    kw.update(style=style, normalize_target=normalize)
    needs_fused(backend, "norm_pix_mse", kw)
    with use_backend(backend):
        loss = ops.norm_pix_mse(**kw)
    eager = norm_pix_mse_ref(**kw)
    pred64 = kw["pred"].detach().double().requires_grad_()
    oracle = norm_pix_mse_ref(**{**kw, "pred": pred64}, upcast=True)
    # the loss is fp32 whatever pred's dtype
    check_2x("loss", loss, eager, oracle, torch.float32, oracle.detach().abs().max().item())
    (gk,) = torch.autograd.grad(loss, kw["pred"])
    (ge,) = torch.autograd.grad(eager, kw["pred"])
    (go,) = torch.autograd.grad(oracle, pred64)
    assert gk.dtype == dtype
    check_2x("d pred", gk, ge.to(dtype), go, dtype, go.abs().max().item())
    with use_backend(backend):
        again = ops.norm_pix_mse(**kw)
    assert torch.equal(loss, again)
    assert torch.equal(gk, torch.autograd.grad(again, kw["pred"])[0])


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.gpu
@needs_gpu
def test_opcheck_on_gpu(backend):
    p = T.norm_pix_mse_inputs(OPCHECK_CASE, torch.float32, "cuda", v2=True)
    needs_fused(backend, "norm_pix_mse", p)
    torch.library.opcheck(torch_op("norm_pix_mse", backend),
                          (p["pred"], p["videos"], p["decoded"], p["scored"], 2, 16, True, "videomae", *STATS))
