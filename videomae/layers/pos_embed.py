"""Positional tables: the fixed 1-D sinusoid over the flattened (t, h, w) token index, and
resizing of learnable tables between token grids."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def sinusoid_table(num_tokens: int, dim: int) -> torch.Tensor:
    """Official `get_sinusoid_encoding_table`: angle `pos / 10000^(2*(j//2)/dim)`, sin on even
    channels and cos on odd ones, computed in float64 and cast to float32.

    -> [1, num_tokens, dim]
    """
    pos = torch.arange(num_tokens, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(dim, dtype=torch.float64)
    exponent = 2 * torch.div(j, 2, rounding_mode="floor") / dim
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), exponent)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32).unsqueeze(0)


def resize_pos_embed(pos: torch.Tensor, src_grid: tuple[int, int, int], dst_grid: tuple[int, int, int]) -> torch.Tensor:
    """Resize a learnable table between token grids: bicubic in space (as the official fine-tuning
    script does) and linear in time.

    pos: [1, T*H*W, D] on src_grid -> [1, T'*H'*W', D] on dst_grid
    """
    if tuple(src_grid) == tuple(dst_grid):
        return pos
    t, h, w = src_grid
    t2, h2, w2 = dst_grid
    if pos.shape[1] != t * h * w:
        raise ValueError(f"pos has {pos.shape[1]} tokens, which does not match src_grid {tuple(src_grid)}")
    x = rearrange(pos.float(), "1 (t h w) d -> t d h w", t=t, h=h, w=w)
    if (h, w) != (h2, w2):
        x = F.interpolate(x, size=(h2, w2), mode="bicubic", align_corners=False)
    if t != t2:
        x = rearrange(x, "t d h w -> (h w) d t")
        x = F.interpolate(x, size=t2, mode="linear", align_corners=False)
        x = rearrange(x, "(h w) d t -> t d h w", h=h2, w=w2)
    return rearrange(x, "t d h w -> 1 (t h w) d").to(pos.dtype)


def table_for_grid(
    base: torch.Tensor, base_grid: tuple[int, int, int], grid: tuple[int, int, int], learnable: bool
) -> torch.Tensor:
    """The positional table for `grid` from the model's table `base` [1, N, D] built on `base_grid`:
    itself when the grids agree, else a regenerated sinusoid (fixed) or a resized copy (learnable)."""
    if tuple(grid) == tuple(base_grid):
        return base
    if learnable:
        return resize_pos_embed(base, base_grid, grid)
    return sinusoid_table(grid[0] * grid[1] * grid[2], base.shape[-1]).to(base.device)
