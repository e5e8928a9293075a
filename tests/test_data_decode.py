"""Decoders: which frames come back, fallback between backends, and the reasons for bad files."""

import numpy as np
import pytest
from PIL import Image

from videomae.data import decode
from videomae.data.decode import VideoReadError, read_frames
from videomae.data.synth import write_mp4

N = 30


def level(i):
    return 10 + 8 * i  # frame i is flat grey at this level: survives H.264 within a few levels


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("dec") / "count.mp4"  # 64 wide: decord 0.6 fails below 64 pixels
    frames = np.stack([np.full((32, 64, 3), level(i), np.uint8) for i in range(N)])
    write_mp4(path, frames, fps=10)
    return str(path)


def levels(frames):
    return np.round((frames.reshape(len(frames), -1).mean(1) - 10) / 8).astype(int).tolist()


BACKENDS = ["pyav"] + (["decord"] if decode.decord is not None else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_are_the_requested_ones(counter_video, backend):
    picks = [np.array([0, 5, 5, 29]), np.array([12, 3])]  # unsorted, repeated, two clips
    a, b = read_frames(counter_video, lambda n: picks if n == N else None, backend=backend)
    assert a.shape == (4, 32, 64, 3) and a.dtype == np.uint8
    assert levels(a) == [0, 5, 5, 29]
    assert levels(b) == [12, 3]


def test_decord_and_pyav_agree(counter_video):
    if decode.decord is None:
        pytest.skip("decord not installed")
    idx = [np.arange(0, N, 3)]
    (x,) = read_frames(counter_video, lambda n: idx, backend="decord")
    (y,) = read_frames(counter_video, lambda n: idx, backend="pyav")
    assert np.abs(x.astype(int) - y.astype(int)).max() <= 2  # both use libavcodec; rgb conversion may differ


def test_fallback_to_pyav_when_decord_fails(counter_video, monkeypatch):
    class Broken:
        def __init__(self, path):
            raise RuntimeError("decord cannot open this")

    monkeypatch.setattr(decode, "decord", object())  # pretend decord is installed
    monkeypatch.setattr(decode, "DecordReader", Broken)
    (x,) = read_frames(counter_video, lambda n: [np.array([7])], backend="auto")
    assert levels(x) == [7]


def test_frame_folder(tmp_path):
    for i in range(1, 6):  # official rawframes count from img_00001.jpg
        Image.fromarray(np.full((8, 10, 3), level(i), np.uint8)).save(tmp_path / f"img_{i:05d}.jpg", quality=95)
    (x,) = read_frames(str(tmp_path), lambda n: [np.array([0, 4, 2])], frame_folder=(1, 5))
    assert x.shape == (3, 8, 10, 3)
    assert levels(x) == [1, 5, 3]  # index i reads file start + i


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p, good: None, "missing file"),
        (lambda p, good: p.write_bytes(b""), "empty file"),
        (lambda p, good: p.write_text("this is not a video\n" * 50), "not a readable video"),
        (lambda p, good: p.write_bytes(open(good, "rb").read()[: len(open(good, "rb").read()) // 2]),
         "truncated or corrupt video"),
    ],
    ids=["missing", "zero-byte", "text", "truncated"],
)
def test_bad_files_raise_with_reason(tmp_path, counter_video, make, reason):
    path = tmp_path / "bad.mp4"
    make(path, counter_video)
    with pytest.raises(VideoReadError, match=reason) as info:
        read_frames(str(path), lambda n: [np.arange(n)])
    assert info.value.path == str(path)


def test_too_short(counter_video):
    with pytest.raises(VideoReadError, match=r"too short \(30 frames < min_frames=31\)"):
        read_frames(counter_video, lambda n: [np.arange(n)], min_frames=31)
