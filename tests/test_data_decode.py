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


BACKENDS = [n for n in ("pyav", "decord", "torchcodec") if not decode.DECODERS[n].unavailable_reasons()]


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
    monkeypatch.setattr(decode.Decord, "open", Broken)
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


# ---------------------------------------------------------------- seek decoding


def textured(t, h=48, w=64, seed=0):
    """Moving noise: every frame differs, so a frame taken from the wrong position cannot pass."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, 2 * w, 3), dtype=np.uint8)
    return np.stack([np.roll(base, 3 * i, axis=1)[:, :w] for i in range(t)])


@pytest.fixture(scope="module", params=[8, 250], ids=["gop8", "gop250"])
def gop_video(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("gop") / f"gop{request.param}.mp4"
    write_mp4(path, textured(90), fps=30, gop=request.param)  # libx264 veryfast: B-frames, reordered pts
    import av

    with av.open(str(path)) as container:
        full = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    return str(path), full


@pytest.mark.parametrize("picks", [
    [np.arange(40, 72, 2)],                              # one strided window in the middle
    [np.arange(0, 16), np.arange(60, 90, 3)],           # two windows with a gap of several GOPs
    [np.array([89, 3, 3, 47]), np.array([48, 46])],      # unsorted, repeated, last frame, neighbours
], ids=["window", "gap", "scattered"])
def test_seek_decode_equals_full_decode(gop_video, picks):
    path, full = gop_video
    clips = read_frames(path, lambda n: picks, backend="pyav")
    for idx, clip in zip(picks, clips):
        assert np.array_equal(clip, full[idx])  # bit-exact: same decoder, same frames, same conversion


@pytest.mark.skipif(decode.decord is None, reason="decord not installed")
def test_decord_random_access_equals_its_full_decode(gop_video):
    # decord seeks by its own keyframe index; its colour conversion differs from PyAV's by a level or two,
    # so it is held to its own sequential decode of every frame.
    path, full = gop_video
    reader = decode.decord.VideoReader(path, num_threads=1)
    everything = reader.get_batch(list(range(len(full)))).asnumpy()
    picks = [np.arange(60, 90, 3), np.array([2, 41, 88])]
    clips = read_frames(path, lambda n: picks, backend="decord")
    for idx, clip in zip(picks, clips):
        assert np.array_equal(clip, everything[idx])


def test_seek_decode_skips_what_is_not_needed(gop_video, monkeypatch):
    path, full = gop_video
    decoded = []
    original = decode.PyAV._decode_from_here

    def counting(self, wanted):
        for frame in original(self, wanted):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(decode.PyAV, "_decode_from_here", counting)
    (clip,) = read_frames(path, lambda n: [np.arange(72, 88, 4)], backend="pyav")
    assert np.array_equal(clip, full[72:88:4])
    if "gop8" in path:  # starts at the keyframe at or before 72 (<= 8 frames early), drops unwanted B-frames
        assert len(decoded) <= 16 + 8
    else:  # one keyframe: decodes from 0 but still drops the non-reference frames it does not need
        assert len(decoded) < 88


def test_backend_report_and_forced_unavailable(monkeypatch):
    report = decode.decoder_report()
    assert set(report) == {f"decoder {n}" for n in decode.DECODERS}
    auto = [k for k, v in report.items() if "auto's choice" in v["detail"]]
    assert len(auto) == 1 and report[auto[0]]["available"]
    monkeypatch.setattr(decode.Decord, "library", None)  # what the class sees when `import decord` failed
    assert decode.decoder_report()["decoder decord"]["reasons"] == ["decord not installed "
                                                                     "(pip install decord (x86-64 Linux wheels))"]
    with pytest.raises(ImportError, match="backend='decord' cannot run here: decord not installed"):
        read_frames(__file__, lambda n: [np.arange(n)], backend="decord")
    import torch

    if not torch.cuda.is_available():
        assert "needs a CUDA device" in report["decoder nvdec"]["reasons"][0]
    with pytest.raises(ValueError, match="backend must be one of"):
        read_frames(__file__, lambda n: [np.arange(n)], backend="ffmpeg")


def test_manifest_length_rejects_short_without_opening(tmp_path):
    path = tmp_path / "x.mp4"
    path.write_bytes(b"not opened")
    with pytest.raises(VideoReadError, match=r"too short \(3 frames < min_frames=4\)"):
        read_frames(str(path), lambda n: [np.arange(n)], min_frames=4, num_frames=3)
