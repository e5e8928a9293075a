"""Temporal sampling against hand-computed index lists (official V1 formulas worked out by hand)."""

import numpy as np
import pytest

from videomae.data import sampling as S


def rngs(count=300):
    return [np.random.default_rng(i) for i in range(count)]


def test_kinetics_pretrain_stride_and_start_range():
    starts = set()
    for rng in rngs():
        idx = S.kinetics_pretrain(100, 4, 3, rng)
        assert idx.dtype == np.int64
        assert np.array_equal(np.diff(idx), [3, 3, 3])
        starts.add(int(idx[0]))
    # start uniform on [0, 100 - 4*3] = [0, 88]: both ends reachable, nothing outside.
    assert min(starts) == 0 and max(starts) == 88 and len(starts) > 80


def test_kinetics_pretrain_short_video_repeats_last_strided_frame():
    # n=7, 4 frames every 3: 0, 3, 6, then 9 is past the end -> stays at 6 (official loop)
    assert S.kinetics_pretrain(7, 4, 3, np.random.default_rng(0)).tolist() == [0, 3, 6, 6]
    # exactly one span long: no padding, start 0
    assert S.kinetics_pretrain(12, 4, 3, np.random.default_rng(0)).tolist() == [0, 3, 6, 9]
    assert S.kinetics_pretrain(1, 3, 2, np.random.default_rng(0)).tolist() == [0, 0, 0]


def test_dense_train_window_shape():
    # span 20, linspace(end-20, end, 4) = end - [20, 13.33, 6.67, 0] -> int, last clipped to end-1
    ends = set()
    for rng in rngs():
        idx = S.dense_train(100, 4, 5, rng)
        assert (idx - idx[-1]).tolist() == [-19, -13, -6, 0]
        ends.add(int(idx[-1]) + 1)
    assert min(ends) >= 20 and max(ends) <= 99


def test_dense_train_short_video():
    # n=10 <= span 16: 10//4 = 2 points linspace(0, 10, 2) = [0, 10], padded with 10, clipped to 9
    assert S.dense_train(10, 4, 4, np.random.default_rng(0)).tolist() == [0, 9, 9, 9]
    assert S.dense_train(3, 4, 4, np.random.default_rng(0)).tolist() == [2, 2, 2, 2]


def test_dense_test_views():
    # strided 0..48 step 4 (13 frames), slack 9: starts int(v * 9 / 2) = 0, 4, 9
    views = [S.dense_test(50, 4, 4, v, 3).tolist() for v in range(3)]
    assert views == [[0, 4, 8, 12], [16, 20, 24, 28], [36, 40, 44, 48]]
    assert S.dense_test(50, 4, 4, 0, 1).tolist() == [16, 20, 24, 28]  # single view: centered
    assert S.dense_test(6, 4, 4, 1, 2).tolist() == [0, 4, 4, 4]  # short: last frame repeated


def test_segment_train_one_frame_per_segment():
    seen = np.zeros((4, 5), bool)
    for rng in rngs():
        idx = S.segment_train(20, 4, rng)
        seg, off = np.divmod(idx, 5)
        assert seg.tolist() == [0, 1, 2, 3]
        seen[seg, off] = True
    assert seen.all()  # every frame of every segment can be drawn
    assert S.segment_train(3, 4, np.random.default_rng(0)).tolist() == [0, 1, 2, 2]


def test_segment_test_views_match_official_pair():
    # tick = 20 / 4 = 5: view 0 -> int(5 i), view 1 -> int(2.5 + 5 i)
    assert S.segment_test(20, 4, 0, 2).tolist() == [0, 5, 10, 15]
    assert S.segment_test(20, 4, 1, 2).tolist() == [2, 7, 12, 17]
    assert S.segment_test(3, 4, 0, 1).tolist() == [0, 0, 1, 2]  # tick 0.75: int(0.75 i)


@pytest.mark.parametrize("fn", [S.kinetics_pretrain, S.dense_train])
def test_seeded_determinism(fn):
    a = fn(300, 16, 4, np.random.default_rng(7))
    b = fn(300, 16, 4, np.random.default_rng(7))
    c = fn(300, 16, 4, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
