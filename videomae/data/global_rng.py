"""timm's augmentations draw from the process-global generators (python `random`, numpy's legacy
`np.random`); ours are pure functions of a `numpy.random.Generator` handed in. `seeded_global_rngs` bridges the
two: inside the block both global generators are seeded from one number drawn from `rng`, and afterwards the
caller's global state is put back, so timm's draws are reproducible and nobody else's draws move.

Not thread-safe (the global state is the process's): the loader augments in worker processes, or in the main
process one clip at a time, never in threads.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np


def seed_globals(seed: int) -> None:
    """Seed python `random` and numpy's legacy global generator, the two timm draws from."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (the legacy global generator is what timm reads)


@contextlib.contextmanager
def seeded_global_rngs(rng: np.random.Generator) -> Iterator[int]:
    """Seed both global generators from one draw of `rng` inside the block, put the caller's state back after;
    yields the seed."""
    seed = int(rng.integers(2**32))
    saved = random.getstate(), np.random.get_state()  # noqa: NPY002
    seed_globals(seed)
    try:
        yield seed
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])  # noqa: NPY002
