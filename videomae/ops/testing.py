"""Input builders shared by the op tests and the benchmark (one definition of each case, Liger style)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from videomae.masking import make_mask, running_cell_mask


@dataclass(frozen=True)
class Case:
    """A clip geometry plus masking: videos [B, C, T, H, W], cubes t x p x p, encoder / decoder widths."""

    batch: int
    frames: int
    height: int
    width: int
    tubelet: int = 2
    patch: int = 16
    dim: int = 40
    dec_dim: int = 24
    ratio: float = 0.5
    mask_type: str = "tube"
    channels: int = 3

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.frames // self.tubelet, self.height // self.patch, self.width // self.patch

    @property
    def tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def values(self) -> int:
        """Values per cube, C*t*p*p."""
        return self.channels * self.tubelet * self.patch**2

    def __str__(self) -> str:
        return (f"B{self.batch}-{self.frames}x{self.height}x{self.width}-t{self.tubelet}p{self.patch}"
                f"-D{self.dim}-{self.mask_type}{self.ratio}")


# ViT-S/B/L pretraining shapes (GUIDE: B=32, 16x224x224, tube ratio 0.9; encoder / decoder widths).
VIT = {
    "S": Case(32, 16, 224, 224, dim=384, dec_dim=192, ratio=0.9),
    "B": Case(32, 16, 224, 224, dim=768, dec_dim=384, ratio=0.9),
    "L": Case(32, 16, 224, 224, dim=1024, dec_dim=512, ratio=0.9),
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def masks(case: Case, seed: int = 0, v2: bool = False, device="cpu"):
    """-> (mask [B, N], decode_mask [B, N] or None); V2 uses the running-cell decode mask at 0.5."""
    mask = make_mask(case.mask_type, case.batch, case.grid, case.ratio, _gen(seed))
    dm = running_cell_mask(case.batch, case.grid, 0.5, _gen(seed + 1)) if v2 else None
    return mask.to(device), None if dm is None else dm.to(device)


def _randn(shape, dtype, device, gen, scale=1.0, grad=False) -> torch.Tensor:
    x = (torch.randn(shape, generator=gen) * scale).to(device=device, dtype=dtype)
    return x.requires_grad_(grad)


def clip(case: Case, dtype, device="cpu", seed: int = 0, grad: bool = False) -> torch.Tensor:
    """Random clip [B, C, T, H, W]: uint8 pixels, or standard-normal values (already 'normalized')."""
    shape = (case.batch, case.channels, case.frames, case.height, case.width)
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=_gen(seed), dtype=torch.uint8).to(device)
    return _randn(shape, dtype, device, _gen(seed), grad=grad)


def cube_embed_inputs(case: Case, dtype, device="cpu", seed: int = 0, uint8: bool = False, grad: bool = True,
                      bias: bool = True, pos: bool = True) -> dict:
    """-> kwargs of cube_embed; weight ~ N(0, 1/K) keeps outputs O(1) like PyTorch's conv init."""
    g = _gen(seed + 100)
    k = case.values
    w_shape = (case.dim, case.channels, case.tubelet, case.patch, case.patch)
    return dict(
        videos=clip(case, torch.uint8 if uint8 else dtype, device, seed, grad=grad and not uint8),
        weight=_randn(w_shape, dtype, device, g, k**-0.5, grad),
        bias=_randn((case.dim,), dtype, device, g, 1.0, grad) if bias else None,
        pos=_randn((1, case.tokens, case.dim), torch.float32, device, g, 1.0, grad) if pos else None,
        mask=masks(case, seed, device=device)[0],
    )


def decoder_input_inputs(case: Case, dtype, device="cpu", seed: int = 0, v2: bool = False,
                         pos_grad: bool = False) -> dict:
    """-> kwargs of decoder_input."""
    g = _gen(seed + 200)
    mask, dm = masks(case, seed, v2, device)
    nv = case.tokens - int(mask[0].sum())
    return dict(
        x_vis=_randn((case.batch, nv, case.dec_dim), dtype, device, g, grad=True),
        mask_token=_randn((1, 1, case.dec_dim), torch.float32, device, g, 0.02, True),
        pos=_randn((1, case.tokens, case.dec_dim), torch.float32, device, g, grad=pos_grad),
        mask=mask,
        decode_mask=dm,
    )


def norm_pix_mse_inputs(case: Case, dtype, device="cpu", seed: int = 0, v2: bool = False,
                        uint8: bool = False) -> dict:
    """-> (pred, videos, mask) plus keyword arguments of norm_pix_mse, as one dict."""
    mask, dm = masks(case, seed, v2, device)
    decoded = mask if dm is None else ~dm
    n_dec = int(decoded[0].sum())
    return dict(
        pred=_randn((case.batch, n_dec, case.values), dtype, device, _gen(seed + 300), grad=True),
        videos=clip(case, torch.uint8 if uint8 else dtype, device, seed),
        mask=mask,
        decode_mask=dm,
        tubelet_size=case.tubelet,
        patch_size=case.patch,
    )
