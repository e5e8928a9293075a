"""Per-step schedules of the official scripts (`utils.cosine_scheduler`) and their lr scaling."""

from __future__ import annotations

import math

import numpy as np


def scaled_lr(base_lr: float, total_batch: int) -> float:
    """The official linear scaling rule: `lr = base_lr * total_batch / 256` (global batch x accum)."""
    return base_lr * total_batch / 256


def cosine_schedule(
    base_value: float,
    final_value: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 0,
    start_warmup_value: float = 0.0,
    warmup_steps: int = -1,
) -> np.ndarray:
    """One value per optimizer step: linear warmup `linspace(start, base, W)` (both ends included, as
    the official code), then `final + (base - final) * (1 + cos(pi * i / R)) / 2` for i in [0, R).

    -> float64 [epochs * steps_per_epoch]
    """
    total = epochs * steps_per_epoch
    warmup_iters = warmup_steps if warmup_steps > 0 else warmup_epochs * steps_per_epoch
    warmup_iters = min(warmup_iters, total)
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters) if warmup_iters > 0 else np.array([])
    rest = total - warmup_iters
    cosine = np.array([final_value + 0.5 * (base_value - final_value) * (1 + math.cos(math.pi * i / rest))
                       for i in range(rest)])
    return np.concatenate((warmup, cosine)).astype(np.float64)
