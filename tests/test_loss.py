"""`pixel_loss` against a plain-loop computation in float64 of the official engines' losses."""

import itertools

import pytest
import torch

from videomae.loss import IMAGENET_MEAN, IMAGENET_STD, pixel_loss
from videomae.masking import running_cell_mask, tube_mask


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
def test_pixel_loss_equals_plain_loop(style, normalize):
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
    got = pixel_loss(pred, video, mask, normalize_target=normalize, tubelet_size=t, patch_size=p, style=style)
    assert got.dtype == torch.float32
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
    got = pixel_loss(pred, video, mask, tubelet_size=t, patch_size=p, decode_mask=decode_mask)
    assert got.item() == pytest.approx(num / den, rel=1e-5)


def test_loss_is_fp32_for_half_inputs_and_checks_pred_shape():
    video = torch.randn(1, 3, 2, 4, 4)
    mask = torch.tensor([[True]])
    pred = torch.randn(1, 1, 3 * 2 * 4 * 4).to(torch.bfloat16)
    assert pixel_loss(pred, video, mask, tubelet_size=2, patch_size=4).dtype == torch.float32
    with pytest.raises(ValueError, match="pred"):
        pixel_loss(pred[:, :, :-1], video, mask, tubelet_size=2, patch_size=4)
