"""Pretraining and fine-tuning datasets over `VideoRecord`s, robust to bad files.

Every random choice of sample `index` in epoch `epoch` comes from
`numpy.random.default_rng((seed, epoch, index, attempt))`, so clips and masks do not depend on the
number of workers or on which worker draws them (resumable, picklable, no worker seeding needed).
A file that cannot be read is recorded in the `SkipLog` (warning + per-epoch summary) and
replaced by another sample drawn from the same generator; known-bad files are not retried.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

import videomae.data.sampling as S
import videomae.data.transforms as TF
from videomae.data.decode import VideoReadError, read_frames
from videomae.data.gpu_aug import pad_frames
from videomae.data.lists import VideoRecord
from videomae.data.randaug import RandAugment
from videomae.data.skips import SkipLog
from videomae.masking import make_mask, running_cell_mask, token_ids

MaskFn = Callable[[torch.Generator], "torch.Tensor | tuple[torch.Tensor, ...]"]


class MaskGenerator:
    """Picklable mask maker for workers: `(generator) -> Bool [N]`, or `(encoder, decoder)` masks when
    `decoder_mask_ratio` is set (V2 running-cell decoder mask). True = masked."""

    def __init__(self, mask_type: str = "tube", mask_ratio: float = 0.9, grid: Sequence[int] = (8, 14, 14),
                 decoder_mask_ratio: float | None = None):
        self.mask_type, self.mask_ratio, self.grid = mask_type, mask_ratio, tuple(int(g) for g in grid)
        self.decoder_mask_ratio = decoder_mask_ratio
        make_mask(mask_type, 1, self.grid, mask_ratio)  # validate now, in the main process

    def __call__(self, generator: torch.Generator):
        mask = make_mask(self.mask_type, 1, self.grid, self.mask_ratio, generator)[0]
        if self.decoder_mask_ratio is None:
            return mask
        return mask, running_cell_mask(1, self.grid, self.decoder_mask_ratio, generator)[0]


def _torch_generator(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


class RobustVideoDataset(Dataset):
    """Retry/skip/replace logic and the epoch counter; subclasses implement `load(index, rec_idx, rng)`."""

    def __init__(self, records: Sequence[VideoRecord], *, seed: int = 0, backend: str = "auto", min_frames: int = 4,
                 max_consecutive_failures: int = 100, skip_log: SkipLog | None = None):
        if not records:
            raise ValueError("dataset has no records")
        self.records = list(records)
        self.seed, self.epoch, self.backend, self.min_frames = seed, 0, backend, min_frames
        self.max_consecutive_failures = max_consecutive_failures
        self.skip_log = skip_log or SkipLog()
        self._bad: dict[int, str] = {}  # per process: a worker does not decode a known-bad file twice

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def record_index(self, index: int) -> int:
        """Dataset index -> record index (test views override)."""
        return index

    def load(self, index: int, rec_idx: int, rng: np.random.Generator):
        """Item `index` made from `self.records[rec_idx]` (a replacement when the first choice was bad)."""
        raise NotImplementedError

    def read(self, record: VideoRecord, pick: Callable[[int], list[np.ndarray]]) -> list[np.ndarray]:
        folder = (record.start, record.total) if record.is_frame_folder else None
        return read_frames(record.path, pick, backend=self.backend, min_frames=self.min_frames, frame_folder=folder,
                           num_frames=record.num_frames)

    def __getitem__(self, index: int):
        n = len(self.records)
        rec_idx, attempt, last_reason = self.record_index(index), 0, ""
        if rec_idx in self._bad:  # known bad in this process: count the skip, do not warn or decode again
            self.skip_log.record(self.records[rec_idx].path, self._bad[rec_idx], warn=False)
        while True:
            rng = np.random.default_rng((self.seed, self.epoch, index, attempt))
            if rec_idx not in self._bad:
                record = self.records[rec_idx]
                try:
                    return self.load(index, rec_idx, rng)
                except VideoReadError as err:
                    self._bad[rec_idx] = err.reason
                    self.skip_log.record(record.path, err.reason)
            last_reason = f"{self.records[rec_idx].path}: {self._bad[rec_idx]}"
            attempt += 1
            if len(self._bad) >= n:
                raise RuntimeError(f"all {n} videos of the dataset are unreadable (last: {last_reason}); "
                                   "check the data path and the list file")
            if attempt >= self.max_consecutive_failures:
                raise RuntimeError(f"{attempt} unreadable videos in a row while loading sample {index} "
                                   f"(last: {last_reason}); check the data path and the list file")
            # Replacement: a random record, walking forward past known-bad ones (terminates: one is good).
            rec_idx = int(rng.integers(n))
            while rec_idx in self._bad:
                rec_idx = (rec_idx + 1) % n


class PretrainDataset(RobustVideoDataset):
    """Unlabeled clips for masked pretraining.

    item, num_sample == 1:  (clip float [3, T, S, S], mask Bool [N])
    item, num_sample == k:  (clips [k, 3, T, S, S], masks [k, N])      -> `ClipCollate` flattens to B*k
    with `gpu_aug=True` the clip is replaced by its uncut crop `frames uint8 [(k,) T, h, w, 3]` (zero-padded
    to the largest of the k) and `box int64 [(k,) 4] = (0, 0, h, w)`; `videomae.data.feed.DeviceFeed` resizes
    them in the training process.
    A mask is whatever `mask_fn(torch.Generator)` returns (a tuple for encoder + decoder masks).
    """

    def __init__(self, records: Sequence[VideoRecord], *, num_frames: int = 16, sampling_rate: int = 4,
                 input_size: int = 224, mask_fn: MaskFn | None = None, num_sample: int = 1,
                 sampling: str = "kinetics", scales: Sequence[float] = TF.PRETRAIN_SCALES, gpu_aug: bool = False,
                 **kwargs):
        super().__init__(records, **kwargs)
        if sampling not in ("kinetics", "segment"):
            raise ValueError(f"pretraining sampling must be 'kinetics' or 'segment', got {sampling!r}")
        if num_sample < 1:
            raise ValueError(f"num_sample must be >= 1, got {num_sample}")
        self.num_frames, self.sampling_rate, self.input_size = num_frames, sampling_rate, input_size
        self.mask_fn, self.num_sample, self.sampling = mask_fn, num_sample, sampling
        self.scales, self.gpu_aug = tuple(scales), gpu_aug

    def __len__(self) -> int:
        return len(self.records)

    def _indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.sampling == "segment":
            return S.segment_train(n, self.num_frames, rng)
        return S.kinetics_pretrain(n, self.num_frames, self.sampling_rate, rng)

    def load(self, index: int, rec_idx: int, rng: np.random.Generator):
        record = self.records[rec_idx]
        # Child seeds drawn up front: `pick` may run twice if decord fails and PyAV takes over.
        seeds = rng.integers(2**62, size=self.num_sample)
        clips = self.read(record, lambda n: [self._indices(n, np.random.default_rng(s)) for s in seeds])
        boxes, masks = [], []
        k, t, size = self.num_sample, self.num_frames, self.input_size
        # CPU path: every clip is normalized straight into one [k, 3, T, S, S] block (no re-stacking).
        block = None if self.gpu_aug else torch.empty((k, 3, t, size, size), dtype=torch.float32)
        for j, frames in enumerate(clips):
            box = TF.multiscale_crop_box(frames.shape[1], frames.shape[2], size, rng, self.scales)
            if self.gpu_aug:
                boxes.append(box)
            else:
                TF.normalize(TF.crop_resize(TF.as_tchw(frames), box, size), out=block[j])
            if self.mask_fn is not None:
                masks.append(self.mask_fn(_torch_generator(rng)))
        fields = [block] if block is not None else list(_crops(clips, boxes))
        if masks:
            fields.append(_stack(masks))
        if k == 1:
            return tuple(tuple(x[0] for x in f) if isinstance(f, tuple) else f[0] for f in fields)
        return tuple(fields)


def _crops(clips: list[np.ndarray], boxes: list[tuple[int, int, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ship the crop, not the frame: the box is drawn in the worker, so the GPU only resizes and normalizes
    (a 0.66-1.0 crop of the short side moves 1.5-4x fewer bytes through collate, pinning and the copy).
    Each crop is copied once into a block zero-padded to the largest -> (uint8 [k, T, h, w, 3], (0, 0, h_j, w_j))."""
    h, w = max(b[2] for b in boxes), max(b[3] for b in boxes)
    out = torch.zeros((len(clips), clips[0].shape[0], h, w, clips[0].shape[-1]), dtype=torch.uint8)
    for j, (frames, (y0, x0, bh, bw)) in enumerate(zip(clips, boxes)):
        out[j, :, :bh, :bw] = torch.as_tensor(frames[:, y0:y0 + bh, x0:x0 + bw])
    return out, torch.tensor([(0, 0, b[2], b[3]) for b in boxes], dtype=torch.int64)


def _stack(items: list):
    if isinstance(items[0], tuple):
        return tuple(torch.stack(list(z)) for z in zip(*items))
    return torch.stack(items)


class FinetuneDataset(RobustVideoDataset):
    """Labeled clips: item = (clip float [3, T, S, S], label int, video index int).

    A bad file's items are replaced by items of other videos with their own label and index
    (evaluation then covers the readable videos; the skip summary lists the rest).

    mode 'train': dense (Kinetics) or segment (SSv2) sampling, RandAugment, random-resized crop,
                  horizontal flip (`flip=False` for SSv2-like data), random erasing.
    mode 'val':   one centered temporal view, short side resized to `short_side_size`, center crop.
    mode 'test':  `test_num_segment` temporal x `test_num_crop` spatial views per video; dataset index
                  = (video * test_num_segment + segment) * test_num_crop + crop, and the returned
                  video index lets the evaluator average softmax over the views of one video.
    """

    def __init__(self, records: Sequence[VideoRecord], *, mode: str = "train", num_frames: int = 16,
                 sampling_rate: int = 4, sampling: str = "dense", input_size: int = 224,
                 short_side_size: int | None = None, test_num_segment: int = 5, test_num_crop: int = 3,
                 flip: bool = True, rand_augment: str | None = "rand-m7-n4-mstd0.5-inc1", reprob: float = 0.25,
                 **kwargs):
        super().__init__(records, **kwargs)
        if mode not in ("train", "val", "test"):
            raise ValueError(f"mode must be 'train', 'val' or 'test', got {mode!r}")
        if sampling not in ("dense", "segment"):
            raise ValueError(f"fine-tuning sampling must be 'dense' or 'segment', got {sampling!r}")
        unlabeled = [r.path for r in self.records if r.label < 0]
        if unlabeled:
            raise ValueError(f"fine-tuning needs labels; {len(unlabeled)} record(s) have none, e.g. {unlabeled[0]}")
        self.mode, self.num_frames, self.sampling_rate, self.sampling = mode, num_frames, sampling_rate, sampling
        self.input_size, self.short_side_size = input_size, short_side_size or input_size
        self.test_num_segment, self.test_num_crop = test_num_segment, test_num_crop
        self.flip, self.reprob = flip, reprob
        self.rand_augment = RandAugment.from_string(rand_augment) if rand_augment else None

    @property
    def num_views(self) -> int:
        return self.test_num_segment * self.test_num_crop if self.mode == "test" else 1

    def __len__(self) -> int:
        return len(self.records) * self.num_views

    def record_index(self, index: int) -> int:
        return index // self.num_views

    def _indices(self, n: int, rng: np.random.Generator, segment: int) -> np.ndarray:
        if self.mode == "train":
            if self.sampling == "segment":
                return S.segment_train(n, self.num_frames, rng)
            return S.dense_train(n, self.num_frames, self.sampling_rate, rng)
        views = self.test_num_segment if self.mode == "test" else 1
        if self.sampling == "segment":
            return S.segment_test(n, self.num_frames, segment, views)
        return S.dense_test(n, self.num_frames, self.sampling_rate, segment, views)

    def load(self, index: int, rec_idx: int, rng: np.random.Generator):
        record = self.records[rec_idx]
        view = index % self.num_views
        segment, crop = divmod(view, self.test_num_crop) if self.mode == "test" else (0, 0)
        seed = int(rng.integers(2**62))
        (frames,) = self.read(record, lambda n: [self._indices(n, np.random.default_rng(seed), segment)])
        clip = TF.as_tchw(frames)  # [T, 3, H, W] uint8
        if self.mode == "train":
            clip = self._train_aug(clip, rng)
        else:
            h, w = TF.short_side_hw(clip.shape[-2], clip.shape[-1], self.short_side_size)
            clip = TF.resize(clip, (h, w))
            box = (TF.three_crop_box(h, w, self.input_size, crop, self.test_num_crop) if self.mode == "test"
                   else TF.center_crop_box(h, w, self.input_size))
            clip = TF.normalize(TF.crop_resize(clip, box, self.input_size))
        # The index of the video actually read: a replacement for a bad file carries its own index
        # and label, so multi-view evaluation never mixes two videos under one index.
        return clip, record.label, rec_idx

    def _train_aug(self, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Official order: RandAugment on full uint8 frames, normalize, random-resized crop (bilinear,
        no antialias), flip, random erasing per frame. -> [3, T, S, S]"""
        if self.rand_augment is not None:
            clip = self.rand_augment(clip, rng)
        box = TF.random_resized_crop_box(clip.shape[-2], clip.shape[-1], rng)
        x = TF.normalize(clip).transpose(0, 1)  # [T, 3, H, W] float
        y0, x0, h, w = box
        x = TF.resize(x[..., y0:y0 + h, x0:x0 + w], (self.input_size, self.input_size), antialias=False)
        if self.flip and rng.random() < 0.5:
            x = x.flip(-1)
        if self.reprob > 0:
            x = TF.random_erasing(x.contiguous(), rng, prob=self.reprob)
        return x.transpose(0, 1).contiguous()


class ClipCollate:
    """Batch items; `repeated=True` flattens num_sample clips per video into the batch (V2
    `multiple_pretrain_samples_collate`); uint8 frames of different sizes are zero-padded.

    The masks (the last field when it is Bool `[N]`, or a tuple of them: `(mask, decode_mask)`) become
    `masking.TokenIds`, validated here once, on the CPU side of the loader, so the step never syncs on them."""

    def __init__(self, repeated: bool = False):
        self.repeated = repeated

    def __call__(self, batch: list[tuple]):
        fields = [self._merge([item[k] for item in batch]) for k in range(len(batch[0]))]
        masks = fields[-1]
        if _is_mask(masks):
            fields[-1] = token_ids(*masks) if isinstance(masks, tuple) else token_ids(masks)
        return tuple(fields)

    def _merge(self, items: list):
        if isinstance(items[0], tuple):
            return tuple(self._merge(list(z)) for z in zip(*items))
        if not isinstance(items[0], torch.Tensor):
            return torch.tensor(items)
        if items[0].dtype == torch.uint8 and items[0].shape[-1] == 3 and items[0].dim() >= 4:
            out = pad_frames(items)
            return out.flatten(0, 1) if self.repeated else out
        shape = (len(items) * items[0].shape[0], *items[0].shape[1:]) if self.repeated else (len(items),
                                                                                             *items[0].shape)
        out = None
        if get_worker_info() is not None:
            # In a worker, write the batch straight into shared memory (what default_collate does):
            # otherwise the tensor is copied there again when it is sent to the main process.
            storage = items[0]._typed_storage()._new_shared(math.prod(shape), device=items[0].device)
            out = items[0].new(storage).resize_(shape)
        return torch.cat(items, 0, out=out) if self.repeated else torch.stack(items, 0, out=out)


def _is_mask(field) -> bool:
    if isinstance(field, tuple):
        return bool(field) and all(_is_mask(f) for f in field)
    return isinstance(field, torch.Tensor) and field.dtype == torch.bool and field.dim() == 2
