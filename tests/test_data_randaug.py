"""RandAugment ops against PIL (the library timm's ops call), and the policy's parsing and determinism."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from videomae.data import randaug as RA


@pytest.fixture(scope="module")
def image():
    # Smooth content plus noise: geometric comparisons are not dominated by aliasing at edges.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:56] / 40.0
    base = np.stack([np.sin(3 * xx + c) * np.cos(2 * yy - c) for c in range(3)], -1) * 80 + 120
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)  # [H, W, 3]


def ours(fn, img, *args):
    x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0)  # [1, 3, H, W]
    return fn(x, *args)[0].permute(1, 2, 0).numpy().astype(int)


def pil(fn, img, *args):
    return np.asarray(fn(Image.fromarray(img), *args)).astype(int)


@pytest.mark.parametrize("factor", [0.37, 1.63])
@pytest.mark.parametrize(
    "op, enhancer",
    [(RA.color, ImageEnhance.Color), (RA.contrast, ImageEnhance.Contrast), (RA.brightness, ImageEnhance.Brightness),
     (RA.sharpness, ImageEnhance.Sharpness)],
)
def test_enhance_ops_match_pil(image, op, enhancer, factor):
    diff = np.abs(ours(op, image, factor) - pil(lambda im, f: enhancer(im).enhance(f), image, factor))
    assert diff.max() <= 2  # PIL rounds its grey levels and blends in integers


@pytest.mark.parametrize(
    "op, ref, args",
    [
        (RA.autocontrast, ImageOps.autocontrast, ()),
        (RA.equalize, ImageOps.equalize, ()),
        (RA.invert, ImageOps.invert, ()),
        (RA.posterize, ImageOps.posterize, (2,)),
        (RA.posterize, ImageOps.posterize, (4,)),
        (RA.solarize, ImageOps.solarize, (100,)),
    ],
)
def test_lut_ops_match_pil(image, op, ref, args):
    assert np.array_equal(ours(op, image, *args), pil(ref, image, *args))


def test_autocontrast_and_equalize_on_low_contrast(image):
    dull = (image // 4 + 60).astype(np.uint8)  # levels 60..123 only
    assert np.array_equal(ours(RA.autocontrast, dull), pil(ImageOps.autocontrast, dull))
    assert np.array_equal(ours(RA.equalize, dull), pil(ImageOps.equalize, dull))


def test_solarize_add_hand_computed():
    x = torch.tensor([0, 100, 127, 128, 200, 250], dtype=torch.uint8).view(1, 1, 2, 3).expand(1, 3, 2, 3)
    assert RA.solarize_add(x, 30)[0, 0].flatten().tolist() == [30, 130, 157, 128, 200, 250]
    assert RA.posterize(x, 0)[0, 0].flatten().tolist() == [0] * 6  # timm level 10 -> 0 bits


@pytest.mark.parametrize(
    "op, arg, matrix",
    [
        (RA.shear_x, 0.2, (1, 0.2, 0, 0, 1, 0)),
        (RA.shear_y, -0.25, (1, 0, 0, -0.25, 1, 0)),
        (RA.translate_x, 9.0, (1, 0, 9.0, 0, 1, 0)),
        (RA.translate_y, -7.0, (1, 0, 0, 0, 1, -7.0)),
    ],
)
def test_affine_ops_match_pil(image, op, arg, matrix):
    ref = pil(lambda im: im.transform(im.size, Image.AFFINE, matrix, Image.BILINEAR, fillcolor=(128,) * 3), image)
    diff = np.abs(ours(op, image, arg) - ref)
    assert diff.mean() < 2.0 and np.median(diff) <= 1  # bilinear kernels differ slightly at borders


@pytest.mark.parametrize("degrees", [25.0, -12.0])
def test_rotate_matches_pil_direction(image, degrees):
    ref = pil(lambda im: im.rotate(degrees, Image.BILINEAR, fillcolor=(128,) * 3), image)
    wrong = pil(lambda im: im.rotate(-degrees, Image.BILINEAR, fillcolor=(128,) * 3), image)
    got = ours(RA.rotate, image, degrees)
    assert np.abs(got - ref).mean() < 2.0
    assert np.abs(got - wrong).mean() > 10.0  # the opposite sense is clearly different


def test_from_string():
    ra = RA.RandAugment.from_string("rand-m7-n4-mstd0.5-inc1")
    assert (ra.magnitude, ra.num_ops, ra.magnitude_std, ra.prob) == (7.0, 4, 0.5, 0.5)
    assert ra.ops == RA.INCREASING_OPS and len(ra.ops) == 15
    assert RA.RandAugment.from_string("rand-m9-n2-inc0").ops == RA.CLASSIC_OPS
    for bad in ("auto-m7", "rand-m7-q3", "rand-mx"):
        with pytest.raises(ValueError):
            RA.RandAugment.from_string(bad)


def test_every_op_keeps_shape_and_dtype(image):
    x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).repeat(3, 1, 1, 1)
    for name in set(RA.INCREASING_OPS) | set(RA.CLASSIC_OPS):
        out = RA.apply_op(name, x, 7.0, np.random.default_rng(0))
        assert out.shape == x.shape and out.dtype == torch.uint8, name
        assert torch.equal(out[0], out[2]), name  # same op on every frame of the clip


def test_policy_deterministic_and_varied(image):
    x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).repeat(2, 1, 1, 1)
    ra = RA.RandAugment.from_string("rand-m7-n4-mstd0.5-inc1")
    a = ra(x, np.random.default_rng(11))
    assert torch.equal(a, ra(x, np.random.default_rng(11)))
    outs = {ra(x, np.random.default_rng(s)).float().mean().item() for s in range(8)}
    assert len(outs) > 4
