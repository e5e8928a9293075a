"""norm_pix_mse on every backend that runs here against the fp64 oracle (`norm_pix_mse_ref(upcast=True)`),
the reference against a plain-loop computation of the official engines' losses, bad input, opcheck, reruns."""

import itertools

import pytest
import torch
from op_helpers import BACKENDS, CASES, LOW, STATS, V2_CASES, close
from tolerances import LOSS_GRAD_TOL, LOSS_TOL

import videomae.ops as ops
from videomae.loss import IMAGENET_MEAN, IMAGENET_STD, pixel_loss
from videomae.masking import running_cell_mask, token_ids, tube_mask
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
    with ops.use_backend(backend):
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
        with ops.use_backend(backend):
            loss = ops.norm_pix_mse(**kw)
        return [loss.detach(), *torch.autograd.grad(loss, kw["pred"])]

    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


CASE = T.Case(2, 4, 32, 64, tubelet=2, patch=16, dim=40, dec_dim=24, ratio=0.5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v2,uint8", [(True, False), (False, True)])
def test_opcheck(backend, v2, uint8):
    k = T.norm_pix_mse_inputs(CASE, torch.float32, v2=v2, uint8=uint8)
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
        if backend in ops.dispatch.registered():
            with ops.use_backend(backend):
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
    "scored dtype": ("scored", lambda k: k.update(scored=k["scored"].float())),
    "scored shape": ("scored", lambda k: k.update(scored=k["scored"][:, 1:].contiguous())),
    "style": ("style", lambda k: k.update(style="mae")),
    "std length": ("std", lambda k: k.update(std=(1.0,))),
}


@pytest.mark.parametrize("what", list(BAD))
def test_bad_input(what):
    name, spoil = BAD[what]
    kw = T.norm_pix_mse_inputs(V2_CASES[0], torch.float32, v2=True)
    spoil(kw)
    with pytest.raises(ValueError, match=rf"^{name} "):
        ops.norm_pix_mse(**kw)
