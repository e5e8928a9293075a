"""Cube masks for VideoMAE pretraining.

Every generator returns a Bool tensor `[B, T'*H'*W']` in `(t, h, w)` raster order,
True = masked (hidden from the encoder, or for `running_cell_mask` not decoded), with the
same number of True per sample, drawn from `generator` when one is given.

`grid` is the token grid `(T', H', W')`: frames // tubelet_size, height // patch, width // patch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Grid = tuple[int, int, int]

MASK_TYPES = ("tube", "random", "frame")


def _check(batch: int, grid: Sequence[int], ratio: float) -> Grid:
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    if len(grid) != 3 or any(int(g) < 1 for g in grid):
        raise ValueError(f"grid must be (T', H', W') of positive ints, got {tuple(grid)!r}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio!r}")
    return int(grid[0]), int(grid[1]), int(grid[2])


def _rand(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator)


def tube_mask(
    batch: int, grid: Sequence[int], ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """VideoMAE tube masking: one spatial pattern of `int(ratio*H'W')` cubes repeated over all T'.

    -> mask: [B, T'*H'*W'], True = masked
    """
    t, h, w = _check(batch, grid, ratio)
    k = int(ratio * h * w)
    # Ranking uniform noise gives a uniformly random k-subset, like the official np.random.shuffle.
    rank = _rand((batch, h * w), generator).argsort(dim=1).argsort(dim=1)
    spatial = rank < k  # [B, H'W']
    return spatial.unsqueeze(1).expand(batch, t, h * w).reshape(batch, t * h * w)


def random_mask(
    batch: int, grid: Sequence[int], ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """MAE-ST agnostic masking: keep `int(N * (1 - ratio))` cubes anywhere in space-time.

    The kept count follows mae_st's `random_masking` (so 0.9 of 1568 keeps 156, not 157).
    -> mask: [B, N], True = masked
    """
    t, h, w = _check(batch, grid, ratio)
    n = t * h * w
    keep = int(n * (1 - ratio))
    rank = _rand((batch, n), generator).argsort(dim=1).argsort(dim=1)
    return rank >= keep


def frame_mask(
    batch: int, grid: Sequence[int], ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Whole-frame masking (the paper's ablation): `int(ratio * T')` temporal slices hidden.

    At ratio 0.9 and T'=8 this hides 7 of 8 slices (87.5%), as in the paper's table.
    -> mask: [B, T'*H'*W'], True = masked
    """
    t, h, w = _check(batch, grid, ratio)
    k = int(ratio * t)
    rank = _rand((batch, t), generator).argsort(dim=1).argsort(dim=1)
    frames = rank < k  # [B, T']
    return frames.unsqueeze(2).expand(batch, t, h * w).reshape(batch, t * h * w)


def running_cell_mask(
    batch: int, grid: Sequence[int], ratio: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """VideoMAE V2 decoder mask: a 2x2 cell queue `[1]*m + [0]*(4-m)`, m = int(4*ratio),
    advanced by one position per temporal slice; each sample picks one of the 4 phases.

    True = not decoded. Element (t, h, w) at phase p is `queue[((h%2)*2 + w%2 + p + t + 1) % 4]`,
    which is V2's `Cell.run_cell` before each frame followed by `np.tile` of the 2x2 cell.
    -> mask: [B, T'*H'*W']
    """
    t, h, w = _check(batch, grid, ratio)
    m = int(4 * ratio)
    if not 0 < m < 4:
        raise ValueError(f"ratio must give 1..3 masked cells of 4 (int(4*ratio)), got ratio={ratio!r}")
    if h % 2 or w % 2:
        raise ValueError(f"running_cell_mask needs an even spatial grid, got grid={tuple(grid)!r}")
    queue = torch.tensor([True] * m + [False] * (4 - m))
    phase = (_rand((batch,), generator) * 4).long().clamp_(max=3)  # [B]
    tt = torch.arange(t).view(t, 1, 1)
    cell = (torch.arange(h).view(1, h, 1) % 2) * 2 + torch.arange(w).view(1, 1, w) % 2
    idx = (cell + tt + 1 + phase.view(batch, 1, 1, 1)) % 4  # [B, T', H', W']
    return queue[idx].reshape(batch, t * h * w)


def make_mask(
    mask_type: str, batch: int, grid: Sequence[int], ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Dispatch by name: `tube`, `random` or `frame`."""
    fns = {"tube": tube_mask, "random": random_mask, "frame": frame_mask}
    if mask_type not in fns:
        raise ValueError(f"mask_type must be one of {sorted(fns)}, got {mask_type!r}")
    return fns[mask_type](batch, grid, ratio, generator)


def check_mask(mask: torch.Tensor, batch: int, num_tokens: int, name: str = "mask") -> int:
    """Validate a Bool `[B, N]` mask with an equal True count per sample; return that count."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a torch.bool tensor, got {getattr(mask, 'dtype', type(mask))}")
    if mask.shape != (batch, num_tokens):
        raise ValueError(f"{name} must have shape [B={batch}, N={num_tokens}], got {list(mask.shape)}")
    counts = mask.sum(dim=1)
    if batch and bool((counts != counts[0]).any()):
        raise ValueError(f"{name} must mask the same number of tokens in every sample, got counts {counts.tolist()}")
    return int(counts[0]) if batch else 0
