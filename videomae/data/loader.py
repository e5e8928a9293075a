"""Builders: datasets from command-line style arguments, and `VideoLoader` (DataLoader + epochs + skips)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from videomae.data.datasets import ClipCollate, FinetuneDataset, MaskGenerator, PretrainDataset
from videomae.data.lists import load_records
from videomae.data.skips import SkipSummary


def default_cache_dir() -> Path:
    return Path(os.environ.get("VIDEOMAE_CACHE", Path.home() / ".cache" / "videomae"))


def synthetic_lists(root: str | os.PathLike | None = None, **synth_kwargs) -> dict[str, Path]:
    """The built-in synthetic dataset (written on first use) -> {'root', 'train', 'val', 'classes'}."""
    from videomae.data.synth import ensure_synthetic_dataset  # PyAV only when the synthetic data is used

    return ensure_synthetic_dataset(root or default_cache_dir() / "synth", **synth_kwargs)


def build_pretrain_dataset(
    data_path: str | os.PathLike | None = None,
    *,
    root: str | os.PathLike | None = None,
    list_format: str = "auto",
    num_frames: int = 16,
    sampling_rate: int = 4,
    input_size: int = 224,
    patch_size: int = 16,
    tubelet_size: int = 2,
    mask_type: str = "tube",
    mask_ratio: float = 0.9,
    decoder_mask_ratio: float | None = None,
    num_sample: int = 1,
    sampling: str = "kinetics",
    gpu_aug: bool = False,
    seed: int = 0,
    backend: str = "auto",
    min_frames: int = 4,
) -> PretrainDataset:
    """A list file, a directory of videos, or None (the synthetic dataset's train split)."""
    if data_path is None:
        data_path = synthetic_lists()["train"]
    grid = (num_frames // tubelet_size, input_size // patch_size, input_size // patch_size)
    mask_fn = MaskGenerator(mask_type, mask_ratio, grid, decoder_mask_ratio)
    return PretrainDataset(
        load_records(data_path, root=root, fmt=list_format), num_frames=num_frames, sampling_rate=sampling_rate,
        input_size=input_size, mask_fn=mask_fn, num_sample=num_sample, sampling=sampling, gpu_aug=gpu_aug,
        seed=seed, backend=backend, min_frames=min_frames,
    )


def build_finetune_dataset(
    data_path: str | os.PathLike,
    *,
    mode: str = "train",
    root: str | os.PathLike | None = None,
    list_format: str = "auto",
    num_frames: int = 16,
    sampling_rate: int = 4,
    sampling: str = "dense",
    input_size: int = 224,
    short_side_size: int | None = None,
    test_num_segment: int = 5,
    test_num_crop: int = 3,
    flip: bool = True,
    rand_augment: str | None = "rand-m7-n4-mstd0.5-inc1",
    reprob: float = 0.25,
    seed: int = 0,
    backend: str = "auto",
    min_frames: int = 4,
) -> FinetuneDataset:
    """A labeled list file -> (clip, label, video index) items; see `FinetuneDataset` for the modes."""
    return FinetuneDataset(
        load_records(data_path, root=root, fmt=list_format), mode=mode, num_frames=num_frames,
        sampling_rate=sampling_rate, sampling=sampling, input_size=input_size, short_side_size=short_side_size,
        test_num_segment=test_num_segment, test_num_crop=test_num_crop, flip=flip, rand_augment=rand_augment,
        reprob=reprob, seed=seed, backend=backend, min_frames=min_frames,
    )


class EpochSampler(Sampler[int]):
    """Shuffled with `torch.Generator().manual_seed(seed + epoch)` (as DistributedSampler), or in order."""

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0):
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        return iter(torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist())

    def __len__(self) -> int:
        return self.size


class VideoLoader:
    """Iterate batches one epoch at a time; records the files skipped in each epoch.

    Workers are not persistent: each epoch's workers start from the dataset with the epoch set.
    They need no seeding (samples seed themselves) and run one torch thread each (DataLoader's default).
    """

    def __init__(self, dataset, batch_size: int, *, num_workers: int = 0, shuffle: bool = True,
                 drop_last: bool = False, distributed: bool = False, seed: int = 0, pin_memory: bool = False,
                 prefetch_factor: int | None = None, num_replicas: int | None = None, rank: int | None = None):
        self.dataset = dataset
        if distributed:  # world size and rank from torch.distributed unless given
            self.sampler = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                                              drop_last=drop_last)
        else:
            self.sampler = EpochSampler(len(dataset), shuffle, seed)
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=self.sampler, num_workers=num_workers,
            collate_fn=ClipCollate(repeated=getattr(dataset, "num_sample", 1) > 1), pin_memory=pin_memory,
            drop_last=drop_last, prefetch_factor=prefetch_factor if num_workers else None,
        )
        self.epoch = 0
        self.summaries: dict[int, SkipSummary] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        epoch = self.epoch
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        mark = self.dataset.skip_log.mark()
        try:
            yield from self.loader
        finally:  # also when the trainer stops mid-epoch (max_steps)
            self.summaries[epoch] = self.dataset.skip_log.since(mark)
            self.epoch = epoch + 1

    def skip_summary(self, epoch: int | None = None) -> SkipSummary:
        """Files skipped in `epoch` (default: the last epoch iterated)."""
        if epoch is None:
            epoch = max(self.summaries, default=None)
        return self.summaries.get(epoch, SkipSummary())


def build_loader(dataset, batch_size: int, *, num_workers: int = 0, shuffle: bool = True, drop_last: bool | None = None,
                 distributed: bool = False, seed: int = 0, pin_memory: bool = False, num_replicas: int | None = None,
                 rank: int | None = None) -> VideoLoader:
    """`batch_size` counts videos; with `num_sample=k` a batch holds batch_size*k clips.
    `drop_last` defaults to `shuffle` (training drops the ragged last batch, evaluation keeps it)."""
    return VideoLoader(dataset, batch_size, num_workers=num_workers, shuffle=shuffle,
                       drop_last=shuffle if drop_last is None else drop_last, distributed=distributed, seed=seed,
                       pin_memory=pin_memory, num_replicas=num_replicas, rank=rank)
