"""Crop boxes, resize, normalize, random erasing, mixup/cutmix: hand-computed cases and formulas."""

import math

import numpy as np
import pytest
import torch

from videomae.constants import IMAGENET_MEAN, IMAGENET_STD
from videomae.data import transforms as TF


def test_fixed_offsets_hand_computed():
    # 340x256 frame, 224 crop: steps (340-224)//4 = 29 and (256-224)//4 = 8
    assert TF.fixed_offsets(340, 256, 224, 224) == [
        (0, 0), (116, 0), (0, 32), (116, 32), (58, 16), (0, 16), (116, 16), (58, 32), (58, 0),
        (29, 8), (87, 8), (29, 24), (87, 24),
    ]


def test_multiscale_crop_sizes_and_offsets():
    # min side 256: int(256 * (1, .875, .75, .66)) = 256, 224, 192, 168 (224 is the target: kept);
    # (w, h) pairs whose scale indices differ by at most 1:
    expected = {(256, 256), (256, 224), (224, 256), (224, 224), (224, 192), (192, 224), (192, 192),
                (192, 168), (168, 192), (168, 168)}
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(2000):
        y0, x0, h, w = TF.multiscale_crop_box(256, 340, 224, rng)
        seen.add((w, h))
        assert (x0, y0) in TF.fixed_offsets(340, 256, w, h)
    assert seen == expected


def test_multiscale_snaps_near_target_size():
    # min side 230, target 228: int(230 * (1, .875, .75, .66)) = 230, 201, 172, 151; 230 is within 2 of 228
    rng = np.random.default_rng(1)
    sides = {TF.multiscale_crop_box(230, 300, 228, rng)[2] for _ in range(500)}
    assert sides == {228, 201, 172, 151}


def test_random_resized_crop_box_ranges():
    rng = np.random.default_rng(0)
    for _ in range(500):
        y0, x0, h, w = TF.random_resized_crop_box(120, 160, rng)
        assert 0 <= y0 and y0 + h <= 120 and 0 <= x0 and x0 + w <= 160
        assert 0.08 * 0.8 <= h * w / (120 * 160) <= 1.0  # area fraction in [0.08, 1] up to rounding
        assert 3 / 4 * 0.8 <= w / h <= 4 / 3 * 1.25


def test_random_resized_crop_fallback_center():
    # 10 x 1000 can never fit a 99% area crop of ratio <= 4/3: central crop h=10, w=round(10*4/3)=13
    assert TF.random_resized_crop_box(10, 1000, np.random.default_rng(0), scale=(0.99, 1.0)) == (0, 493, 10, 13)


def test_three_crop_and_short_side():
    assert TF.short_side_hw(48, 64, 32) == (32, 43)  # round(64 * 32 / 48) = 42.67 -> 43
    assert TF.short_side_hw(64, 48, 32) == (43, 32)
    # long side 43, crop 32: starts int(k * 11 / 2) = 0, 5, 11
    assert [TF.three_crop_box(32, 43, 32, k, 3) for k in range(3)] == [(0, 0, 32, 32), (0, 5, 32, 32), (0, 11, 32, 32)]
    assert TF.three_crop_box(43, 32, 32, 2, 3) == (11, 0, 32, 32)
    assert TF.three_crop_box(32, 43, 32, 0, 1) == (0, 5, 32, 32)
    assert TF.center_crop_box(40, 50, 32) == (4, 9, 32, 32)


def test_normalize_values_and_layout():
    clip = torch.zeros(2, 3, 4, 5, dtype=torch.uint8)  # [T, 3, H, W]
    clip[1, 0, 2, 3] = 255
    out = TF.normalize(clip)
    assert out.shape == (3, 2, 4, 5) and out.dtype == torch.float32
    assert out[0, 1, 2, 3].item() == pytest.approx((1 - 0.485) / 0.229)
    assert out[2, 0, 0, 0].item() == pytest.approx(-IMAGENET_MEAN[2] / IMAGENET_STD[2])


def test_crop_resize_exact_crop_and_shapes():
    clip = torch.randint(0, 256, (3, 3, 20, 30), dtype=torch.uint8)
    assert torch.equal(TF.crop_resize(clip, (2, 5, 16, 16), 16), clip[:, :, 2:18, 5:21])
    out = TF.crop_resize(clip, (0, 0, 20, 30), 16)
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.uint8


def test_resize_float_path_matches_uint8_kernel():
    clip = torch.randint(0, 256, (2, 3, 40, 56), dtype=torch.uint8)
    a = TF.resize(clip, (24, 24), via_float=False)
    b = TF.resize(clip, (24, 24), via_float=True)
    assert a.dtype == b.dtype == torch.uint8
    assert (a.int() - b.int()).abs().max() <= 1  # rounding differences only
    flat = torch.full((1, 3, 40, 56), 77, dtype=torch.uint8)
    assert (TF.resize(flat, (17, 23)) == 77).all()  # a flat image stays flat


def test_random_erasing():
    rng = np.random.default_rng(0)
    clip = torch.full((6, 3, 32, 32), 5.0)
    out = TF.random_erasing(clip.clone(), rng, prob=1.0)
    for t in range(6):
        changed = (out[t] != 5.0).any(0)
        ys, xs = torch.nonzero(changed, as_tuple=True)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert changed.sum() == box  # one rectangle of noise
        assert 0.02 * 1024 * 0.7 <= box <= 1024 / 3 * 1.3
    assert torch.equal(TF.random_erasing(clip.clone(), np.random.default_rng(0), prob=0.0), clip)
    again = TF.random_erasing(clip.clone(), np.random.default_rng(0), prob=1.0)
    assert torch.equal(again, out)


def smooth(y, k, eps):
    out = np.full((len(y), k), eps / k)
    out[np.arange(len(y)), y] = 1 - eps + eps / k
    return out


def test_mixup_targets_follow_lambda():
    b, k = 4, 5
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1, 1).expand(b, 3, 2, 4, 4).clone()
    y = torch.tensor([0, 3, 3, 1])
    xm, t = TF.mixup_cutmix(x.clone(), y, k, np.random.default_rng(3), mixup_alpha=0.8, cutmix_alpha=0.0)
    lam = 1 - xm[0, 0, 0, 0, 0].item() / (b - 1)  # sample 0 = lam * 0 + (1 - lam) * 3
    assert torch.allclose(xm[1], lam * x[1] + (1 - lam) * x[2])
    want = lam * smooth(y.numpy(), k, 0.1) + (1 - lam) * smooth(y.flip(0).numpy(), k, 0.1)
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(t.sum(1).numpy(), 1.0, rtol=1e-6)


def test_cutmix_lambda_is_pasted_area():
    k = 3
    x = torch.stack([torch.zeros(3, 2, 16, 16), torch.ones(3, 2, 16, 16)])
    for seed in range(5):
        xm, t = TF.mixup_cutmix(x.clone(), torch.tensor([0, 2]), k, np.random.default_rng(seed), mixup_alpha=0.0,
                                cutmix_alpha=1.0, smoothing=0.0)
        kept = 1 - xm[0].mean().item()  # sample 0 was zeros: the pasted part is ones
        assert torch.equal(xm[0, 0, 0], xm[0, 2, 1])  # the same box in every channel and frame
        np.testing.assert_allclose(t[0].numpy(), [kept, 0, 1 - kept], atol=1e-6)


def test_mixup_rejects_odd_batch_and_prob_zero_is_plain_smoothing():
    with pytest.raises(ValueError, match="even"):
        TF.mixup_cutmix(torch.zeros(3, 3, 2, 4, 4), torch.zeros(3, dtype=torch.long), 2, np.random.default_rng(0))
    x = torch.randn(2, 3, 2, 4, 4)
    xm, t = TF.mixup_cutmix(x.clone(), torch.tensor([1, 0]), 4, np.random.default_rng(0), prob=0.0)
    assert torch.equal(xm, x)
    np.testing.assert_allclose(t.numpy(), smooth(np.array([1, 0]), 4, 0.1), rtol=1e-6)
    assert math.isclose(t[0, 1].item(), 0.925, rel_tol=1e-6)  # 1 - 0.1 + 0.1/4


def test_mixing_is_a_pure_function_of_rng_and_leaves_the_global_generators_alone():
    import random

    x = torch.randn(4, 3, 2, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    random.seed(11)
    np.random.seed(11)  # noqa: NPY002  (the caller's global state, which must survive)
    before = random.random(), np.random.rand()  # noqa: NPY002
    random.seed(11)
    np.random.seed(11)  # noqa: NPY002
    runs = [TF.mixup_cutmix(x.clone(), y, 4, np.random.default_rng(s)) for s in (5, 5, 6)]
    assert (random.random(), np.random.rand()) == before  # noqa: NPY002
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][1], runs[2][1])


def _official_v1_mixup():
    """MCG-NJU/VideoMAE's mixup.py from the git-ignored checkout ($VIDEOMAE_OFFICIAL, default
    third_party/VideoMAE); the test is skipped without it."""
    import importlib.util
    import os
    from pathlib import Path

    path = Path(os.environ.get("VIDEOMAE_OFFICIAL") or Path(__file__).resolve().parents[1] / "third_party" /
                "VideoMAE") / "mixup.py"
    if not path.exists():
        pytest.skip(f"no official checkout ({path} missing)")
    spec = importlib.util.spec_from_file_location("official_mixup", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mixup_cutmix_equals_the_official_v1_mixup():
    """The official fine-tuning recipe (mixup 0.8, cutmix 1.0, switch 0.5, smoothing 0.1) through the official
    V1 code, with numpy's global generator seeded as ours is for the call: the same clips and targets."""
    official = _official_v1_mixup().Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5,
                                          mode="batch", label_smoothing=0.1, num_classes=7)
    x = torch.randn(6, 3, 4, 16, 24)
    y = torch.tensor([0, 6, 3, 3, 1, 2])
    cut = 0
    for s in range(24):
        ours = TF.mixup_cutmix(x.clone(), y, 7, np.random.default_rng(s))
        np.random.seed(int(np.random.default_rng(s).integers(2**32)))  # noqa: NPY002  (the one draw ours makes)
        want = official(x.clone(), y)
        assert torch.equal(ours[0], want[0]) and torch.allclose(ours[1], want[1], rtol=0, atol=1e-7)
        cut += bool((ours[0] == x).any())  # a cutmix batch keeps part of each clip exactly
    assert 0 < cut < 24  # both branches ran


def test_timm_cutmix_box_is_not_the_official_one():
    """Why mixup_cutmix stays ours (its docstring): for an odd cut side timm's box is one pixel longer than the
    official `cy +- cut // 2`. If this fails, timm agrees with the official code again and can replace ours."""
    from timm.data.mixup import rand_bbox

    lam = 0.6  # cut side int(224 * sqrt(0.4)) = 141, odd
    np.random.seed(3)  # noqa: NPY002  (timm draws from the global generator)
    yl, yh, xl, xh = rand_bbox((1, 48, 224, 224), lam)
    np.random.seed(3)  # noqa: NPY002
    cy, cx = np.random.randint(0, 224), np.random.randint(0, 224)  # noqa: NPY002
    assert 70 <= min(cy, cx) and max(cy, cx) + 71 <= 224  # the box is inside: no clipping hides the difference
    assert (yh - yl, xh - xl) == (141, 141)  # the official box spans cy - 70 .. cy + 70: 140
