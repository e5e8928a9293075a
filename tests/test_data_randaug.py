"""RandAugment on clips (timm's transform, one draw per clip): the same ops and magnitudes on every frame, PIL's
ops at the policy's magnitude (hand-derived), the official video RandAugment bit for bit, and determinism."""

import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from videomae.data.randaug import RandAugment


def _frames(n: int, seed: int = 0, h: int = 40, w: int = 56) -> np.ndarray:
    """uint8 [n, H, W, 3]: smooth content plus noise, a different picture per frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 40.0
    out = [np.stack([np.sin(3 * xx + c + t) * np.cos(2 * yy - c) for c in range(3)], -1) * 80 + 120
           + rng.normal(0, 10, (h, w, 3)) for t in range(n)]
    return np.clip(out, 0, 255).astype(np.uint8)


def _clip(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2)  # [T, 3, H, W], as the dataset hands it over


def _hwc(clip: torch.Tensor) -> np.ndarray:
    return clip.permute(0, 2, 3, 1).numpy()


def test_every_frame_gets_the_same_ops_and_magnitudes():
    """Frames A B A B come out as A' B' A' B' for every draw; the clip does change (the policy is on)."""
    a, b = _frames(2)
    clip = _clip(np.stack([a, b, a, b]))
    ra = RandAugment("rand-m7-n4-mstd0.5-inc1")
    changed = 0
    for seed in range(40):
        out = _hwc(ra(clip, np.random.default_rng(seed)))
        assert out.shape == (4, 40, 56, 3) and out.dtype == np.uint8
        assert np.array_equal(out[0], out[2]) and np.array_equal(out[1], out[3])
        changed += not np.array_equal(out[0], a)
    assert changed >= 30  # n4 at p 0.5: 1 - 0.5^4 of the clips see at least one op


def _candidates(img: Image.Image, level: float) -> dict[str, np.ndarray]:
    """Every op of the 'inc1' set at `level` with either sign, written out with PIL by hand: timm's level
    formulas (rotate 30 deg, shear 0.3, translate 0.45 of the side, posterize 4 - 4l bits, solarize 256 - 256l,
    solarize-add 110l, enhance 1 +- 0.9l, l = level / 10), bicubic resampling and grey 128 fill."""
    f = level / 10
    geo = dict(resample=Image.BICUBIC, fillcolor=(128, 128, 128))
    w, h = img.size
    out = {"AutoContrast": ImageOps.autocontrast(img), "Equalize": ImageOps.equalize(img),
           "Invert": ImageOps.invert(img), "Posterize": ImageOps.posterize(img, 4 - int(f * 4)),
           "Solarize": ImageOps.solarize(img, 256 - int(f * 256)),
           "SolarizeAdd": img.point([min(255, i + int(f * 110)) if i < 128 else i for i in range(256)] * 3)}
    for sign in (1, -1):
        out[f"Rotate{sign}"] = img.rotate(sign * f * 30, **geo)
        for name, m in (("ShearX", (1, sign * f * 0.3, 0, 0, 1, 0)), ("ShearY", (1, 0, 0, sign * f * 0.3, 1, 0)),
                        ("TranslateX", (1, 0, sign * f * 0.45 * w, 0, 1, 0)),
                        ("TranslateY", (1, 0, 0, 0, 1, sign * f * 0.45 * h))):
            out[f"{name}{sign}"] = img.transform(img.size, Image.AFFINE, m, **geo)
        for name, enhancer in (("Color", ImageEnhance.Color), ("Contrast", ImageEnhance.Contrast),
                               ("Brightness", ImageEnhance.Brightness), ("Sharpness", ImageEnhance.Sharpness)):
            out[f"{name}{sign}"] = enhancer(img).enhance(1 + sign * f * 0.9)
    return {k: np.asarray(v) for k, v in out.items()}


def test_one_op_per_clip_is_a_pil_op_at_the_policy_magnitude_on_every_frame():
    """rand-m9-n1-mstd0-p1.0: exactly one op at magnitude 9 per clip; each frame equals that op (the same op and
    sign for all frames) among the hand-written PIL candidates; over 60 clips most of the 15 ops show up."""
    frames = _frames(3, seed=1)
    ra = RandAugment("rand-m9-n1-mstd0-p1.0-inc1")
    seen = set()
    for seed in range(60):
        out = _hwc(ra(_clip(frames), np.random.default_rng(seed)))
        common = None
        for frame, got in zip(frames, out):
            hits = {k for k, v in _candidates(Image.fromarray(frame), 9).items() if np.array_equal(v, got)}
            common = hits if common is None else common & hits
        assert common, f"seed {seed}: no single PIL op at magnitude 9 explains every frame"
        seen |= {k.rstrip("-1") for k in common}
    assert len(seen) >= 12, seen


def test_a_pure_function_of_rng_that_leaves_the_global_generators_alone():
    clip = _clip(_frames(2, seed=2))
    ra = RandAugment()
    random.seed(5)
    np.random.seed(5)  # noqa: NPY002  (the caller's global state, which must survive)
    before = random.random(), np.random.rand()  # noqa: NPY002
    random.seed(5)
    np.random.seed(5)  # noqa: NPY002
    runs = [ra(clip, np.random.default_rng(s)) for s in (3, 3, 4, 5)]
    assert (random.random(), np.random.rand()) == before  # noqa: NPY002
    assert torch.equal(runs[0], runs[1])
    assert not (torch.equal(runs[0], runs[2]) and torch.equal(runs[0], runs[3]))


@pytest.mark.parametrize("spec", ["rand-m7-n4-mstd0.5-inc1", "rand-m9-mstd0.5", "rand-n2-m10-p0.3-inc0"])
def test_timm_policy_strings_are_accepted(spec):
    assert repr(RandAugment.from_string(spec)) == f"RandAugment({spec!r})"


@pytest.mark.parametrize("spec", ["auto-m7", "rand-x3", "rand-m7-n4-foo1", "rand_m7", "m7-n4"])
def test_a_bad_policy_is_one_line_naming_it(spec):
    with pytest.raises(ValueError, match="RandAugment policy") as err:
        RandAugment.from_string(spec)
    assert spec in str(err.value) and "\n" not in str(err.value)


def _official_rand_augment():
    """MCG-NJU/VideoMAE's rand_augment.py (SlowFast's video copy of timm's) from the git-ignored checkout
    ($VIDEOMAE_OFFICIAL, default third_party/VideoMAE); skipped without it."""
    import importlib.util
    import os
    from pathlib import Path

    path = Path(os.environ.get("VIDEOMAE_OFFICIAL") or Path(__file__).resolve().parents[1] / "third_party" /
                "VideoMAE") / "rand_augment.py"
    if not path.exists():
        pytest.skip(f"no official checkout ({path} missing)")
    spec = importlib.util.spec_from_file_location("official_rand_augment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_equals_the_official_video_randaugment_bit_for_bit():
    """The official transform as `create_random_augment` builds it (bicubic, translate_const 0.45 x 224) on a
    frame list, with the global generators seeded as ours seeds them: every frame of 100 clips identical."""
    official = _official_rand_augment().rand_augment_transform(
        "rand-m7-n4-mstd0.5-inc1", {"translate_const": int(224 * 0.45), "interpolation": Image.BICUBIC})
    ra = RandAugment("rand-m7-n4-mstd0.5-inc1")
    for seed in range(100):
        frames = _frames(3, seed=seed)
        pil = [Image.fromarray(f) for f in frames]
        random.seed(seed)
        np.random.seed(seed)  # noqa: NPY002  (the official code draws from the global generators)
        want = np.stack([np.asarray(f) for f in official(pil)])
        assert np.array_equal(np.stack([np.asarray(f) for f in ra.frames(pil, seed)]), want), f"seed {seed}"
