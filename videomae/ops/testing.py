"""Input builders shared by the op tests and the benchmark (one definition of each case, Liger style)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from videomae.masking import TokenIds, make_mask, running_cell_mask, token_ids


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


def _gen(seed: int, device="cpu") -> torch.Generator:
    return torch.Generator(device).manual_seed(seed)


def masks(case: Case, seed: int = 0, v2: bool = False, device="cpu"):
    """-> (mask [B, N], decode_mask [B, N] or None); V2 uses the running-cell decode mask at 0.5."""
    mask = make_mask(case.mask_type, case.batch, case.grid, case.ratio, _gen(seed))
    dm = running_cell_mask(case.batch, case.grid, 0.5, _gen(seed + 1)) if v2 else None
    return mask.to(device), None if dm is None else dm.to(device)


def ids(case: Case, seed: int = 0, v2: bool = False, device="cpu") -> TokenIds:
    """The masks of `masks` in index form."""
    return token_ids(*masks(case, seed, v2)).to(device)


def _randn(shape, dtype, device, seed: int, scale=1.0, grad=False) -> torch.Tensor:
    """Made on `device` itself (a GPU test must not wait on CPU randn and a copy)."""
    x = torch.randn(shape, generator=_gen(seed, device), device=device) * scale
    return x.to(dtype).requires_grad_(grad)


def clip(case: Case, dtype, device="cpu", seed: int = 0, grad: bool = False) -> torch.Tensor:
    """Random clip [B, C, T, H, W]: uint8 pixels, or standard-normal values (already 'normalized')."""
    shape = (case.batch, case.channels, case.frames, case.height, case.width)
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=_gen(seed, device), dtype=torch.uint8, device=device)
    return _randn(shape, dtype, device, seed, grad=grad)


def cube_embed_inputs(case: Case, dtype, device="cpu", seed: int = 0, uint8: bool = False, grad: bool = True,
                      bias: bool = True, pos: bool = True) -> dict:
    """-> kwargs of cube_embed; weight ~ N(0, 1/K) keeps outputs O(1) like PyTorch's conv init."""
    k = case.values
    w_shape = (case.dim, case.channels, case.tubelet, case.patch, case.patch)
    return dict(
        videos=clip(case, torch.uint8 if uint8 else dtype, device, seed, grad=grad and not uint8),
        weight=_randn(w_shape, dtype, device, seed + 100, k**-0.5, grad),
        bias=_randn((case.dim,), dtype, device, seed + 101, 1.0, grad) if bias else None,
        pos=_randn((1, case.tokens, case.dim), torch.float32, device, seed + 102, 1.0, grad) if pos else None,
        visible=ids(case, seed, device=device).visible,
    )


def decoder_input_inputs(case: Case, dtype, device="cpu", seed: int = 0, v2: bool = False,
                         pos_grad: bool = False) -> dict:
    """-> kwargs of decoder_input."""
    t = ids(case, seed, v2, device)
    return dict(
        x_vis=_randn((case.batch, t.visible.shape[1], case.dec_dim), dtype, device, seed + 200, grad=True),
        mask_token=_randn((1, 1, case.dec_dim), torch.float32, device, seed + 201, 0.02, True),
        pos=_randn((1, case.tokens, case.dec_dim), torch.float32, device, seed + 202, grad=pos_grad),
        visible=t.visible,
        decoded=t.decoded,
    )


def norm_pix_mse_inputs(case: Case, dtype, device="cpu", seed: int = 0, v2: bool = False,
                        uint8: bool = False) -> dict:
    """-> (pred, videos, decoded, scored) plus keyword arguments of norm_pix_mse, as one dict."""
    t = ids(case, seed, v2, device)
    return dict(
        pred=_randn((case.batch, t.decoded.shape[1], case.values), dtype, device, seed + 300, grad=True),
        videos=clip(case, torch.uint8 if uint8 else dtype, device, seed),
        decoded=t.decoded,
        scored=t.scored,
        tubelet_size=case.tubelet,
        patch_size=case.patch,
    )
