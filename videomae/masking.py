"""Cube masks for VideoMAE pretraining.

Every generator returns a Bool tensor `[B, T'*H'*W']` in `(t, h, w)` raster order,
True = masked (hidden from the encoder, or for `running_cell_mask` not decoded), with the
same number of True per sample, drawn from `generator` when one is given.

`grid` is the token grid `(T', H', W')`: frames // tubelet_size, height // patch, width // patch.

`token_ids` turns masks into `TokenIds`, the index form the model and the ops take, validated here on the CPU
once (`check_ids` holds the id rules: in [0, N), none repeated in a row); the validated ids carry that fact
(`TokenIds.validated_for`), so the model trusts them without reading a value in the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
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


def check_ids(ids, name: str, num_tokens: int, batch: int | None = None) -> None:
    """Token ids `[B, K]` int64, each in [0, num_tokens) and none repeated within a row (K may be 0); a
    ValueError naming `name` otherwise. Reads every id on the host: free for CPU tensors, a device wait for a
    GPU's (check ids where they are made, on the CPU). The one copy of the id rules: `TokenIds.validated` and
    the ops' input checks (`videomae/ops/_checks.py`) call it."""
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.dim() != 2:
        got = f"{ids.dtype} of shape {list(ids.shape)}" if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"{name} must be int64 token ids [B, K], got {got}")
    if batch is not None and ids.shape[0] != batch:
        raise ValueError(f"{name} must have {batch} rows (one per sample), got shape {list(ids.shape)}")
    if ids.numel() == 0:
        return
    a = ids.cpu().numpy()  # a CPU tensor is read in place: no copy
    out = (a < 0) | (a >= num_tokens)
    if out.any():
        row, col = np.argwhere(out)[0]
        raise ValueError(f"{name} must hold token ids in [0, {num_tokens}), got {a[row, col]} in row {row}")
    s = np.sort(a, axis=1)
    repeated = s[:, 1:] == s[:, :-1]
    if repeated.any():
        row, col = np.argwhere(repeated)[0]
        raise ValueError(f"{name} must not repeat a token id within a row, got {s[row, col]} twice in row {row}")


class TokenIds(NamedTuple):
    """The index form of a batch's masks: what the model and the fused ops take in a training step.

    Made on the CPU where the masks are made (the loader's collate), validated there once, and shipped in
    pinned memory: every shape below is static, so a step needs no host sync, `torch.compile(fullgraph=True)`
    traces it and a CUDA graph can capture it. The counts are Python ints: `visible.shape[1]`, `decoded.shape[1]`.

    visible: [B, N_vis] int64 token ids the encoder sees, raster order
    decoded: [B, N_dec] int64 token ids the decoder reconstructs, raster order (V1: the masked ones;
             V2: those the decode mask keeps)
    scored:  [B, N_dec] Bool, which decoded cubes the loss counts (V2: decoded and encoder-masked);
             None: all of them (V1)
    validated_for: the token count N these ids were checked against (every id in [0, N), none repeated in a
             row, shapes and dtypes), set by the validating constructors `token_ids` and `TokenIds.validated`
             and kept by `to` / `pin_memory`; None for ids built by hand, which the model validates at its
             boundary (a host read: a device wait for GPU tensors). Never set it yourself: the model trusts it.
    """

    visible: torch.Tensor
    decoded: torch.Tensor
    scored: torch.Tensor | None = None
    validated_for: int | None = None

    def to(self, device, non_blocking: bool = False) -> TokenIds:
        moved = (None if t is None else t.to(device, non_blocking=non_blocking) for t in self[:3])
        return TokenIds(*moved, self.validated_for)

    def pin_memory(self) -> TokenIds:
        return TokenIds(*(None if t is None else t.pin_memory() for t in self[:3]), self.validated_for)

    def mask(self, num_tokens: int) -> torch.Tensor:
        """-> Bool [B, N], True = masked (hidden from the encoder): the Boolean form, for pictures and tests."""
        out = torch.ones(self.visible.shape[0], num_tokens, dtype=torch.bool, device=self.visible.device)
        return out.scatter_(1, self.visible, False)

    def validated(self, num_tokens: int) -> TokenIds:
        """These ids checked for a grid of `num_tokens` tokens (`check_ids`; scored Bool of decoded's shape)
        -> a copy with `validated_for = num_tokens`; a one-line ValueError naming the field otherwise. Reads
        every id: free on the CPU, a device wait for GPU tensors (validate where the ids are made)."""
        if not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"num_tokens must be a positive int, got {num_tokens!r}")
        check_ids(self.visible, "visible", num_tokens)
        batch = self.visible.shape[0]
        check_ids(self.decoded, "decoded", num_tokens, batch)
        if self.scored is not None:
            sc = self.scored
            if not isinstance(sc, torch.Tensor) or sc.dtype != torch.bool or sc.shape != self.decoded.shape:
                got = f"{sc.dtype} {list(sc.shape)}" if isinstance(sc, torch.Tensor) else type(sc).__name__
                raise ValueError(f"scored must be Bool of decoded's shape {list(self.decoded.shape)}, got {got}")
        for name, t in (("decoded", self.decoded), ("scored", self.scored)):
            if t is not None and t.device != self.visible.device:
                raise ValueError(f"{name} must be on {self.visible.device} like visible, got {t.device}")
        return TokenIds(self.visible, self.decoded, self.scored, num_tokens)


def token_ids(mask: torch.Tensor, decode_mask: torch.Tensor | None = None) -> TokenIds:
    """Validate Bool masks (equal counts per sample) and turn them into `TokenIds`, validated for N = mask's
    width (ids from a mask are in range and distinct by construction). Syncs when the masks are on a GPU: call
    it where the masks are made, never inside a step.

    mask: [B, N] Bool, True = masked; decode_mask: [B, N] Bool, True = not decoded (V2) or None (V1)
    """
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError(f"mask must be a Bool tensor [B, N], got {getattr(mask, 'shape', type(mask))}")
    b, n = mask.shape
    check_mask(mask, b, n, "mask")
    decoded = mask
    if decode_mask is not None:
        check_mask(decode_mask, b, n, "decode_mask")
        decoded = ~decode_mask
    visible = (~mask).nonzero()[:, 1].view(b, -1)
    dec = decoded.nonzero()[:, 1].view(b, -1)
    scored = None if decode_mask is None else mask.gather(1, dec)
    return TokenIds(visible, dec, scored, n)
