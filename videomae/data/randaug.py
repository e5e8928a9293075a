"""RandAugment for clips: timm's `rand_augment_transform` (`rand-m7-n4-mstd0.5-inc1` in VideoMAE fine-tuning),
the same ops and magnitudes for every frame of a clip.

The official video RandAugment (VideoMAE's `rand_augment.py`, from SlowFast) draws once per clip which ops run,
whether each applies, its magnitude and its sign, and applies them to every frame. timm's transform makes those
draws per image, from python `random` and numpy's global generator, and none of them depends on the image: so
with both generators set to the same state before each frame, every frame gets the same draws, hence the same
ops and magnitudes. That state comes from one seed drawn from the clip's `rng` (`seeded_global_rngs`), so a clip
stays a pure function of (frames, rng), and the caller's global generators are left as they were. The ops are
PIL's, as in the official code: geometric ones resample bicubic (its `--train_interpolation bicubic`) and fill
with grey 128; `translate_const` is int(0.45 * input size) as the official `create_random_augment` sets it (only
the absolute translations, which the rand policies do not use, read it).
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image

SPEC = re.compile(r"rand(-(m\d+|n\d+|mstd[\d.]+|mmax\d+|inc[01]|p[\d.]+))*")


def seed_globals(seed: int) -> None:
    """Seed python `random` and numpy's legacy global generator, the two timm draws from."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (the legacy global generator is what timm reads)


@contextlib.contextmanager
def seeded_global_rngs(rng: np.random.Generator) -> Iterator[int]:
    """Yields a seed drawn from `rng`; the caller's global `random` / `np.random` state is put back afterwards,
    so nobody else's draws move. Not thread-safe (the state is the process's): the loader augments in worker
    processes, or in the main process one clip at a time."""
    seed = int(rng.integers(2**32))
    saved = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        yield seed
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])  # noqa: NPY002


class RandAugment:
    """`(clip uint8 [T, 3, H, W], rng) -> clip uint8 [T, 3, H, W]`, one timm RandAugment draw for all frames."""

    def __init__(self, spec: str = "rand-m7-n4-mstd0.5-inc1", input_size: int = 224,
                 interpolation: int = Image.BICUBIC):
        from timm.data.auto_augment import rand_augment_transform

        if SPEC.fullmatch(spec) is None:
            raise ValueError(f"RandAugment policy {spec!r}: expected timm's form 'rand-m<int>-n<int>[-mstd<float>]"
                             f"[-mmax<int>][-inc0|1][-p<float>]', e.g. 'rand-m7-n4-mstd0.5-inc1'")
        self.spec = spec
        self.transform = rand_augment_transform(spec, {"translate_const": int(input_size * 0.45),
                                                       "interpolation": interpolation})

    @classmethod
    def from_string(cls, spec: str) -> RandAugment:
        """timm config string, e.g. `rand-m7-n4-mstd0.5-inc1`."""
        return cls(spec)

    def frames(self, frames: list[Image.Image], seed: int) -> list[Image.Image]:
        """PIL frames -> augmented PIL frames: python `random` and `np.random` seeded with `seed` before each
        frame (the caller's global state is the caller's to keep: see `__call__`)."""
        out = []
        for frame in frames:
            seed_globals(seed)
            out.append(self.transform(frame))
        return out

    def __call__(self, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        pil = [Image.fromarray(f) for f in clip.permute(0, 2, 3, 1).cpu().numpy()]
        with seeded_global_rngs(rng) as seed:
            out = self.frames(pil, seed)
        return torch.from_numpy(np.stack([np.asarray(f) for f in out])).permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return f"RandAugment({self.spec!r})"
