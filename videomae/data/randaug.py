"""RandAugment for clips in torch (timm's `rand-m7-n4-mstd0.5-inc1` as VideoMAE fine-tuning uses it).

One draw of `num_ops` ops (with replacement, each applied with probability 0.5, magnitude
~ N(m, mstd) clipped to [0, 10], sign flipped half the time where it has one) is applied to every
frame of the clip, like the SlowFast/VideoMAE copy of timm applies one op to a frame list.
Ops follow PIL's definitions on uint8 `[T, 3, H, W]`; geometric ops use bilinear sampling (timm
uses bicubic in VideoMAE) and fill with grey 128.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
import torch.nn.functional as F

MAX_LEVEL = 10.0
FILL = 128.0

INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                  "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                  "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
CLASSIC_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
               "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


# ---------------------------------------------------------------- color ops, x: uint8 [T, 3, H, W]


def _u8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp_(0, 255).to(torch.uint8)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """PIL 'L': (299 R + 587 G + 114 B) / 1000 -> float [T, 1, H, W]."""
    r, g, b = x.float().unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def blend(x: torch.Tensor, degenerate: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL ImageEnhance: degenerate + factor * (x - degenerate), clipped."""
    d = degenerate.float()
    return _u8(d + factor * (x.float() - d))


def color(x, factor):
    return blend(x, grayscale(x).expand_as(x), factor)


def contrast(x, factor):
    mean = torch.floor(grayscale(x).mean(dim=(1, 2, 3), keepdim=True) + 0.5)  # per frame, like PIL
    return blend(x, mean.expand_as(x), factor)


def brightness(x, factor):
    return blend(x, torch.zeros_like(x), factor)


def sharpness(x, factor):
    """Blend with PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13); border pixels stay as they are."""
    kernel = torch.ones(3, 3)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13.0).view(1, 1, 3, 3).repeat(3, 1, 1, 1).to(x.device)
    smooth = x.float().clone()
    smooth[..., 1:-1, 1:-1] = _u8(F.conv2d(x.float(), kernel, groups=3)).float()
    return blend(x, smooth, factor)


def autocontrast(x):
    """Per frame and channel, stretch [min, max] to [0, 255] (PIL ImageOps.autocontrast, cutoff 0).

    The lut is built in numpy float64 with PIL's exact operation order: torch's division can be
    one ulp off, which moves `hi * scale + offset` just under 255."""
    t, c, h, w = x.shape
    flat = x.reshape(t * c, h * w)
    lo = flat.amin(1).double().cpu().numpy()[:, None]
    hi = flat.amax(1).double().cpu().numpy()[:, None]
    stretch = hi > lo
    scale = np.where(stretch, 255.0 / np.where(stretch, hi - lo, 1.0), 1.0)
    offset = np.where(stretch, -lo * scale, 0.0)
    lut = np.clip(np.floor(np.arange(256.0) * scale + offset), 0, 255)
    lut = torch.from_numpy(lut).to(device=x.device, dtype=torch.uint8)
    return lut.gather(1, flat.long()).view(t, c, h, w)


def equalize(x):
    """PIL ImageOps.equalize per frame and channel: lut[v] = (cdf_before(v) + step // 2) // step,
    step = (pixels - count of the last used level) // 255; identity when step == 0."""
    t, c, h, w = x.shape
    flat = x.reshape(t * c, h * w).long()
    hist = torch.zeros(t * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, flat, torch.ones_like(flat))
    last = 255 - (hist.flip(1) > 0).long().argmax(1)  # highest used level
    step = (h * w - hist.gather(1, last.view(-1, 1)).squeeze(1)) // 255
    before = torch.cumsum(hist, 1) - hist
    lut = ((before + (step // 2).view(-1, 1)) // step.clamp(min=1).view(-1, 1)).clamp_(max=255)
    identity = torch.arange(256, device=x.device).expand_as(lut)
    lut = torch.where((step > 0).view(-1, 1), lut, identity)
    return lut.gather(1, flat).to(torch.uint8).view(t, c, h, w)


def invert(x):
    return 255 - x


def posterize(x, bits: int):
    mask = (0xFF << (8 - bits)) & 0xFF if bits > 0 else 0
    return x & mask


def solarize(x, threshold: int):
    return torch.where(x >= threshold, 255 - x, x)


def solarize_add(x, add: int, threshold: int = 128):
    return torch.where(x < threshold, (x.int() + add).clamp(max=255).to(torch.uint8), x)


# ---------------------------------------------------------------- geometric ops


def affine(x: torch.Tensor, matrix: tuple[float, ...]) -> torch.Tensor:
    """PIL `Image.transform(AFFINE, (a, b, c, d, e, f))`: output pixel (x, y) samples the input at
    (a x + b y + c, d x + e y + f), pixel centers at +0.5; outside pixels are FILL."""
    t, _, h, w = x.shape
    a, b, c, d, e, f = matrix
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=x.device) + 0.5,
                            torch.arange(w, dtype=torch.float32, device=x.device) + 0.5, indexing="ij")
    u, v = a * xs + b * ys + c, d * xs + e * ys + f
    grid = torch.stack([2 * u / w - 1, 2 * v / h - 1], dim=-1).expand(t, h, w, 2)
    ones = torch.ones_like(x[:, :1], dtype=torch.float32)
    src = torch.cat([x.float(), ones], dim=1)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    valid = out[:, 3:]
    return _u8(out[:, :3] + (1.0 - valid) * FILL)


def rotate(x, degrees: float):
    """PIL `rotate(degrees)`: counter-clockwise about the image center."""
    h, w = x.shape[-2:]
    a = -math.radians(degrees)
    cx, cy = w / 2.0, h / 2.0
    m = [math.cos(a), math.sin(a), 0.0, -math.sin(a), math.cos(a), 0.0]
    m[2] = m[0] * -cx + m[1] * -cy + cx
    m[5] = m[3] * -cx + m[4] * -cy + cy
    return affine(x, tuple(m))


def shear_x(x, factor):
    return affine(x, (1, factor, 0, 0, 1, 0))


def shear_y(x, factor):
    return affine(x, (1, 0, 0, factor, 1, 0))


def translate_x(x, pixels):
    return affine(x, (1, 0, pixels, 0, 1, 0))


def translate_y(x, pixels):
    return affine(x, (1, 0, 0, 0, 1, pixels))


# ---------------------------------------------------------------- magnitudes (timm's level_to_arg)


def _signed(v: float, rng: np.random.Generator) -> float:
    return -v if rng.random() < 0.5 else v


def apply_op(name: str, x: torch.Tensor, level: float, rng: np.random.Generator) -> torch.Tensor:
    """One op at `level` in [0, 10] on uint8 [T, 3, H, W]."""
    frac = level / MAX_LEVEL
    h, w = x.shape[-2:]
    if name == "AutoContrast":
        return autocontrast(x)
    if name == "Equalize":
        return equalize(x)
    if name == "Invert":
        return invert(x)
    if name == "Rotate":
        return rotate(x, _signed(frac * 30.0, rng))
    if name == "ShearX":
        return shear_x(x, _signed(frac * 0.3, rng))
    if name == "ShearY":
        return shear_y(x, _signed(frac * 0.3, rng))
    if name == "TranslateXRel":
        return translate_x(x, _signed(frac * 0.45, rng) * w)
    if name == "TranslateYRel":
        return translate_y(x, _signed(frac * 0.45, rng) * h)
    if name == "Posterize":
        return posterize(x, int(frac * 4))
    if name == "PosterizeIncreasing":
        return posterize(x, 4 - int(frac * 4))
    if name == "Solarize":
        return solarize(x, int(frac * 256))
    if name == "SolarizeIncreasing":
        return solarize(x, 256 - int(frac * 256))
    if name == "SolarizeAdd":
        return solarize_add(x, int(frac * 110))
    enhance = {"Color": color, "Contrast": contrast, "Brightness": brightness, "Sharpness": sharpness}
    if name in enhance:
        return enhance[name](x, frac * 1.8 + 0.1)
    if name.endswith("Increasing") and name[: -len("Increasing")] in enhance:
        return enhance[name[: -len("Increasing")]](x, 1.0 + _signed(frac * 0.9, rng))
    raise ValueError(f"unknown RandAugment op {name!r}")


class RandAugment:
    """`(clip uint8 [T, 3, H, W], rng) -> clip uint8 [T, 3, H, W]`."""

    def __init__(self, magnitude: float = 7.0, num_ops: int = 4, magnitude_std: float = 0.5, prob: float = 0.5,
                 increasing: bool = True):
        self.magnitude, self.num_ops, self.magnitude_std = magnitude, num_ops, magnitude_std
        self.prob, self.ops = prob, INCREASING_OPS if increasing else CLASSIC_OPS

    @classmethod
    def from_string(cls, spec: str) -> RandAugment:
        """timm config string, e.g. `rand-m7-n4-mstd0.5-inc1`."""
        parts = spec.split("-")
        if parts[0] != "rand":
            raise ValueError(f"RandAugment spec must start with 'rand', got {spec!r}")
        kwargs = {}
        for part in parts[1:]:
            match = re.fullmatch(r"([a-z]+)([\d.]+)", part)
            if match is None:
                raise ValueError(f"cannot parse RandAugment field {part!r} in {spec!r}")
            key, value = match.groups()
            if key == "m":
                kwargs["magnitude"] = float(value)
            elif key == "n":
                kwargs["num_ops"] = int(value)
            elif key == "mstd":
                kwargs["magnitude_std"] = float(value)
            elif key == "inc":
                kwargs["increasing"] = bool(int(value))
            elif key == "p":
                kwargs["prob"] = float(value)
            else:
                raise ValueError(f"unknown RandAugment field {part!r} in {spec!r}")
        return cls(**kwargs)

    def __call__(self, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        for name in rng.choice(self.ops, self.num_ops, replace=True):
            if rng.random() > self.prob:
                continue
            level = self.magnitude
            if self.magnitude_std > 0:
                level = rng.normal(level, self.magnitude_std)
            clip = apply_op(str(name), clip, min(MAX_LEVEL, max(0.0, level)), rng)
        return clip
