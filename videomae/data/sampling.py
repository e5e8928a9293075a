"""Temporal sampling: which frame indices make a clip. Every function -> int64 `[num_frames]`.

Short videos are padded the official way, by repeating the last reachable frame.
`rng` is a `numpy.random.Generator`; eval functions take no rng and are deterministic.
"""

from __future__ import annotations

import numpy as np

SAMPLINGS = ("kinetics", "dense", "segment")


def _pad_repeat_last(idx: np.ndarray, n: int) -> np.ndarray:
    # V1 `_video_TSN_decord_batch_loader`: the offset advances by the stride only while it stays
    # inside the video, so every index past the end becomes the last one reached.
    inside = idx < n
    if inside.all():
        return idx
    return np.where(inside, idx, idx[inside].max())


def kinetics_pretrain(n: int, num_frames: int, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    """V1 pretraining: one window of `num_frames` frames `sampling_rate` apart, uniform start.

    The start is drawn from `[0, n - num_frames*sampling_rate]`; shorter videos start at 0 and repeat
    their last strided frame.
    """
    span = num_frames * sampling_rate
    start = int(rng.integers(0, n - span + 1)) if n > span else 0
    return _pad_repeat_last(start + sampling_rate * np.arange(num_frames, dtype=np.int64), n)


def dense_train(n: int, num_frames: int, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    """V1 fine-tuning (`VideoClsDataset.loadvideo_decord`): `num_frames` points spread over a window
    of `num_frames*sampling_rate` frames ending at a random `end` in `[span, n)`.

    Videos with `n <= span` take `n // sampling_rate` points over the whole video, then repeat
    the last frame.
    """
    span = num_frames * sampling_rate
    if n <= span:
        k = n // sampling_rate
        idx = np.concatenate([np.linspace(0, n, num=k), np.full(num_frames - k, float(n))])
        return np.clip(idx, 0, n - 1).astype(np.int64)
    end = int(rng.integers(span, n))
    idx = np.linspace(end - span, end, num=num_frames)
    return np.clip(idx, end - span, end - 1).astype(np.int64)


def dense_test(n: int, num_frames: int, sampling_rate: int, view: int, num_views: int) -> np.ndarray:
    """V1 test view `view` of `num_views`: every `sampling_rate`-th frame, padded by repeating the last,
    then a `num_frames` window starting at `int(view * (L - num_frames) / (num_views - 1))`.

    A single view takes the centered window.
    """
    strided = np.arange(0, n, sampling_rate, dtype=np.int64)
    if len(strided) < num_frames:
        strided = np.concatenate([strided, np.full(num_frames - len(strided), strided[-1])])
    slack = len(strided) - num_frames
    start = int(view * slack / (num_views - 1)) if num_views > 1 else slack // 2
    return strided[start:start + num_frames]


def segment_train(n: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """SSv2 / TSN: split the video into `num_frames` segments of `n // num_frames` frames and take one
    random frame from each (V1 `SSVideoClsDataset`).

    Videos shorter than `num_frames` (the official code returns all zeros there) keep the frames
    they have in order and repeat the last one, the padding rule used everywhere else.
    """
    seg = n // num_frames
    if seg > 0:
        idx = np.arange(num_frames) * seg + rng.integers(0, seg, size=num_frames)
    else:
        idx = np.minimum(np.arange(num_frames), n - 1)
    return idx.astype(np.int64)


def segment_test(n: int, num_frames: int, view: int, num_views: int) -> np.ndarray:
    """SSv2 test view: frame `int(tick * (i + view / num_views))`, tick = n / num_frames.

    For 2 views this is the official pair `int(tick*i)` and `int(tick/2 + tick*i)`.
    """
    tick = n / num_frames
    idx = (tick * (np.arange(num_frames) + view / num_views)).astype(np.int64)
    return np.minimum(idx, n - 1)
