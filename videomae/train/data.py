"""Data order and loaders for training: every epoch's order is a pure function of (seed, epoch), so
a resumed run skips the batches it already consumed and sees exactly the clips it would have seen."""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from videomae.train.distributed import DistInfo


class EpochSampler(Sampler[int]):
    """This rank's indices for `epoch`: a permutation from `torch.Generator().manual_seed(seed + epoch)`
    (DistributedSampler's rule), padded by wrap-around to a multiple of the world size, rank::world,
    then the first `skip` indices dropped (already consumed before a resume)."""

    def __init__(self, size: int, info: DistInfo, seed: int = 0, shuffle: bool = True):
        self.size, self.info, self.seed, self.shuffle = size, info, seed, shuffle
        self.epoch, self.skip = 0, 0
        self.per_rank = math.ceil(size / info.world_size)

    def set_position(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank * self.info.world_size
        order = (order * math.ceil(total / self.size))[:total]
        return order[self.info.rank::self.info.world_size]

    def __iter__(self):
        return iter(self.indices()[self.skip:])

    def __len__(self) -> int:
        return self.per_rank - self.skip


def make_loader(dataset: Dataset, sampler: Sampler, batch_size: int, num_workers: int, collate, seed: int,
                drop_last: bool, pin_memory: bool = False) -> DataLoader:
    """The loader gets its own generator: creating an iterator then never draws from the global torch
    RNG, which the model's drop path uses and checkpoints restore."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate,
        drop_last=drop_last, pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed),
        persistent_workers=False, prefetch_factor=2 if num_workers > 0 else None,
    )
