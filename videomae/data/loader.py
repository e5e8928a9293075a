"""The one loader, for the library and `videomae pretrain`/`finetune`/`evaluate` alike: the dataset builders,
`EpochSampler` (the data order) and `VideoLoader` (DataLoader + epochs + resume position + skipped files).

Every epoch's order is a pure function of (seed, epoch): a resumed run skips the batches it already consumed and
sees exactly the clips it would have seen. The collate (`ClipCollate`) turns the masks into validated
`masking.TokenIds` on the CPU, so the step that consumes a batch never waits on the host for them. The workers
ignore SIGINT and SIGTERM: a Ctrl-C or a cluster's SIGTERM to the whole process group reaches the training
process alone, which stops at a step boundary and shuts its workers down itself.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from videomae.data.datasets import ClipCollate, FinetuneDataset, MaskGenerator, PretrainDataset
from videomae.data.lists import load_records
from videomae.data.skips import SkipSummary
from videomae.data.transforms import PRETRAIN_SCALES


def default_cache_dir() -> Path:
    """Where the built-in datasets are written once: $VIDEOMAE_CACHE, else ~/.cache/videomae."""
    return Path(os.environ.get("VIDEOMAE_CACHE") or Path.home() / ".cache" / "videomae")


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
    crop_scales: tuple[float, ...] = PRETRAIN_SCALES,
    gpu_aug: bool = False,
    seed: int = 0,
    backend: str = "auto",
    min_frames: int = 4,
) -> PretrainDataset:
    """A list file, a directory of videos, or None (the synthetic dataset's train split). `decoder_mask_ratio`:
    V2 running-cell decoder masks; `crop_scales`: the multi-scale crop's sides as fractions of the short side."""
    if data_path is None:
        data_path = synthetic_lists()["train"]
    grid = (num_frames // tubelet_size, input_size // patch_size, input_size // patch_size)
    mask_fn = MaskGenerator(mask_type, mask_ratio, grid, decoder_mask_ratio)
    return PretrainDataset(
        load_records(data_path, root=root, fmt=list_format), num_frames=num_frames, sampling_rate=sampling_rate,
        input_size=input_size, mask_fn=mask_fn, num_sample=num_sample, sampling=sampling, scales=crop_scales,
        gpu_aug=gpu_aug, seed=seed, backend=backend, min_frames=min_frames,
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
    """This rank's indices for `epoch`: a permutation from `torch.Generator().manual_seed(seed + epoch)` (as
    DistributedSampler), or in order, padded by wrap-around to a multiple of the world size, `rank::world_size`,
    then the first `skip` dropped (consumed before a resume). `real`: how many of this rank's indices are not
    padding (evaluation counts only those)."""

    def __init__(self, size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.size, self.rank, self.world_size, self.seed, self.shuffle = size, rank, world_size, seed, shuffle
        self.epoch, self.skip = 0, 0
        self.per_rank = math.ceil(size / world_size)
        self.real = len(range(rank, size, world_size))

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)

    def indices(self) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / self.size))[:total]
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.skip:])

    def __len__(self) -> int:
        return self.per_rank - self.skip


def _leave_signals_to_the_main_process(worker_id: int) -> None:
    # SIGINT/SIGTERM to the process group reach the workers too. Dying there would surface inside the training
    # process as a loader error (or an abort) in the middle of its save; the main process stops them itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class VideoLoader:
    """Batches one epoch at a time: `set_epoch(epoch, start)` then iterate; records the files skipped per epoch.
    `len(loader)`: batches in a whole epoch.

    Workers are not persistent: each epoch's workers start from the dataset with the epoch set. They need no
    seeding (samples seed themselves), run one torch thread each (DataLoader's default) and ignore SIGINT/SIGTERM.
    The loader has its own generator, so iterating never draws from the global torch RNG (the model's drop path
    draws there, and checkpoints restore it).
    """

    def __init__(self, dataset, batch_size: int, *, num_workers: int = 0, shuffle: bool = True,
                 drop_last: bool = False, distributed: bool = False, seed: int = 0, pin_memory: bool = False,
                 prefetch_factor: int | None = None, num_replicas: int | None = None, rank: int | None = None):
        if distributed and dist.is_initialized():  # world size and rank from torch.distributed unless given
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        self.dataset, self.batch_size, self.drop_last, self.seed = dataset, batch_size, drop_last, seed
        self.sampler = EpochSampler(len(dataset), rank=rank or 0, world_size=num_replicas or 1, seed=seed,
                                    shuffle=shuffle)
        self.generator = torch.Generator()
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=self.sampler, num_workers=num_workers,
            collate_fn=ClipCollate(repeated=getattr(dataset, "num_sample", 1) > 1), pin_memory=pin_memory,
            drop_last=drop_last, generator=self.generator, worker_init_fn=_leave_signals_to_the_main_process,
            prefetch_factor=(prefetch_factor or 2) if num_workers else None,
        )
        self.epoch, self.start = 0, 0
        self.summaries: dict[int, SkipSummary] = {}

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next iteration runs `epoch` from its batch `start` on (a resumed run skips what it consumed)."""
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        n = self.sampler.per_rank
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        epoch = self.epoch
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch, skip=self.start * self.batch_size)
        self.generator.manual_seed(self.seed)  # the same workers' base seed every epoch, resumed or not
        mark = self.dataset.skip_log.mark()
        try:
            yield from self.loader
        finally:  # also when the trainer stops mid-epoch (max_steps)
            self.summaries[epoch] = self.dataset.skip_log.since(mark)
            self.epoch, self.start = epoch + 1, 0

    def skip_summary(self, epoch: int | None = None) -> SkipSummary:
        """Files skipped in `epoch` (default: the last epoch iterated)."""
        if epoch is None:
            epoch = max(self.summaries, default=None)
        return self.summaries.get(epoch, SkipSummary())


def build_loader(dataset, batch_size: int, *, num_workers: int = 0, shuffle: bool = True, drop_last: bool | None = None,
                 distributed: bool = False, seed: int = 0, pin_memory: bool = False, num_replicas: int | None = None,
                 rank: int | None = None) -> VideoLoader:
    """`batch_size` counts videos; with `num_sample=k` a batch holds batch_size*k clips. `drop_last` defaults to
    `shuffle` (training drops the ragged last batch, evaluation keeps it). Shards by `rank` of `num_replicas`
    when given, else by torch.distributed's when `distributed`."""
    return VideoLoader(dataset, batch_size, num_workers=num_workers, shuffle=shuffle,
                       drop_last=shuffle if drop_last is None else drop_last, distributed=distributed, seed=seed,
                       pin_memory=pin_memory, num_replicas=num_replicas, rank=rank)
