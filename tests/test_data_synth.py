"""The synthetic dataset: real H.264 files, official lists, deterministic, and classes that need motion.

The motion check uses its own estimator (phase correlation of consecutive frame differences,
changed-area trend, angular correlation around the moving region), not the renderer's parameters.
"""

import json

import av
import numpy as np
import pytest

from videomae.data.lists import read_list
from videomae.data.synth import (
    CLASSES,
    SSM_CLASSES,
    RawClipReader,
    ensure_synthetic_dataset,
    read_raw_clip,
    render_clip,
    render_ssm_clip,
    ssm_clips,
    write_synthetic_dataset,
)
from videomae.data.synth_motion import MOTION_CLASSES, RATE, motion_clip, motion_clips, render_motion_clip
from videomae.data.synth_tiles import TILES_CLASSES, render_tiles_clip, tile_background, tiles_clips


def decode_all(path):
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return write_synthetic_dataset(root, num_train=8, num_val=4, num_frames=8, size=32, seed=3)


def test_files_and_lists(tiny):
    train = read_list(tiny["train"])
    val = read_list(tiny["val"])
    assert [r.label for r in train] == list(range(8))  # round robin: balanced classes
    assert [r.label for r in val] == [0, 1, 2, 3]
    assert tiny["train"].read_text().splitlines()[0] == "videos/train_00000.mp4 0"  # official `path label`
    assert tiny["classes"].read_text().split() == list(CLASSES)
    frames = decode_all(train[5].path)
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8


def test_deterministic_from_seed(tiny, tmp_path):
    # Rendering is exact arithmetic: the same seed gives the same pixels, bit for bit.
    frames = render_clip(5, 8, 32, np.random.default_rng(np.random.SeedSequence((3, 0, 5))))
    assert np.array_equal(frames, render_clip(5, 8, 32, np.random.default_rng(np.random.SeedSequence((3, 0, 5)))))
    # libx264 (via PyAV, one thread) is not byte-reproducible for frames this small (see synth.py):
    # decoded pixels are compared to within codec noise.
    again = write_synthetic_dataset(tmp_path / "a", num_train=8, num_val=4, num_frames=8, size=32, seed=3)
    other = write_synthetic_dataset(tmp_path / "b", num_train=2, num_val=0, num_frames=8, size=32, seed=4)
    for name in ("train_00000.mp4", "train_00001.mp4"):
        ref = decode_all(tiny["root"] / "videos" / name).astype(int)
        assert np.abs(ref - decode_all(again["root"] / "videos" / name)).mean() < 8
        assert np.abs(ref - decode_all(other["root"] / "videos" / name)).mean() > 25
    assert again["train"].read_text() == tiny["train"].read_text()


def test_non_square_size_and_ensure_reuses(tmp_path):
    paths = ensure_synthetic_dataset(tmp_path, num_train=1, num_val=1, num_frames=4, size=(24, 40), seed=0)
    assert decode_all(read_list(paths["train"])[0].path).shape == (4, 24, 40, 3)
    stamp = (tmp_path / "videos" / "train_00000.mp4").stat().st_mtime_ns
    ensure_synthetic_dataset(tmp_path, num_train=1, num_val=1, num_frames=4, size=(24, 40), seed=0)
    assert (tmp_path / "videos" / "train_00000.mp4").stat().st_mtime_ns == stamp  # reused, not rewritten
    ensure_synthetic_dataset(tmp_path, num_train=1, num_val=1, num_frames=4, size=(24, 40), seed=1)
    assert json.loads((tmp_path / "meta.json").read_text())["seed"] == 1


# ---------------------------------------------------------------- classes need motion


def phase_shift(a, b):
    """Integer (dy, dx) with b ~ roll(a, (dy, dx)) on the torus."""
    r = np.fft.fft2(b) * np.conj(np.fft.fft2(a))
    c = np.fft.ifft2(r / (np.abs(r) + 1e-9)).real
    dy, dx = np.unravel_index(np.argmax(c), c.shape)
    h, w = a.shape
    return (dy + h // 2) % h - h // 2, (dx + w // 2) % w - w // 2


def circular_mean(coord, period, weights):
    angle = 2 * np.pi * coord / period
    return np.arctan2((weights * np.sin(angle)).sum(), (weights * np.cos(angle)).sum()) * period / (2 * np.pi)


def angular_shift(a, b, cy, cx, bins=90):
    """Angle bins (clockwise on screen positive) that best map a to b around (cy, cx)."""
    h, w = a.shape
    radii = np.arange(2, 0.45 * min(h, w))
    theta = np.arange(bins) * 2 * np.pi / bins
    ys = np.rint(cy + radii[:, None] * np.sin(theta)).astype(int) % h
    xs = np.rint(cx + radii[:, None] * np.cos(theta)).astype(int) % w
    corr = np.fft.ifft(np.fft.fft(b[ys, xs], axis=1) * np.conj(np.fft.fft(a[ys, xs], axis=1)), axis=1).real.sum(0)
    return (int(np.argmax(corr)) + bins // 2) % bins - bins // 2


def motion_class(clip):
    """Guess the class from frame differences only."""
    d = np.diff(clip.astype(np.float64).mean(-1), axis=0)  # the static background cancels
    shifts = np.array([phase_shift(d[t], d[t + 1]) for t in range(len(d) - 1)])
    dy, dx = np.median(shifts, 0)
    area = np.abs(d).reshape(len(d), -1).sum(1)
    trend = np.log(area[-3:].mean() / area[:3].mean())  # changed area grows when approaching
    if abs(trend) > 0.5:
        return CLASSES.index("approach" if trend > 0 else "recede")
    if max(abs(dy), abs(dx)) >= 1 and np.mean(np.all(shifts == [dy, dx], 1)) >= 0.5:
        if abs(dx) > abs(dy):
            return CLASSES.index("left" if dx < 0 else "right")
        return CLASSES.index("up" if dy < 0 else "down")
    h, w = d.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w]
    weights = np.abs(d[0])
    cy, cx = circular_mean(yy, h, weights), circular_mean(xx, w, weights)
    spin = np.median([angular_shift(d[t], d[t + 1], cy, cx) for t in range(len(d) - 1)])
    return CLASSES.index("rotate_cw" if spin > 0 else "rotate_ccw")


def first_frame_features(clip):
    f = clip[0].astype(np.float64)
    gy, gx = np.gradient(f.mean(-1))
    return np.concatenate([f.mean((0, 1)), f.std((0, 1)), [np.abs(gx).mean(), np.abs(gy).mean()]])


def loo_nearest_centroid(features, labels):
    hits = 0
    for i in range(len(labels)):
        keep = np.arange(len(labels)) != i
        mu = features[keep].mean(0)
        sd = features[keep].std(0) + 1e-9
        z = (features - mu) / sd
        centroids = np.stack([z[keep & (labels == c)].mean(0) for c in range(labels.max() + 1)])
        hits += int(np.argmin(((centroids - z[i]) ** 2).sum(1)) == labels[i])
    return hits / len(labels)


@pytest.mark.parametrize("style", ["texture", "smooth"])
def test_classes_differ_by_motion_not_by_first_frame(style):
    clips, labels = [], []
    for c in range(len(CLASSES)):
        for k in range(12):
            clips.append(render_clip(c, 16, 48, np.random.default_rng((c, k)), style))
            labels.append(c)
    labels = np.array(labels)
    motion_acc = np.mean([motion_class(x) == y for x, y in zip(clips, labels)])
    static_acc = loo_nearest_centroid(np.stack([first_frame_features(x) for x in clips]), labels)
    assert motion_acc >= 0.75, motion_acc  # chance is 1/8
    assert static_acc <= 0.3, static_acc  # first frames carry no class information (chance 0.125)


def test_smooth_style_is_low_frequency_and_checked(tmp_path):
    # Texture: gratings of 2-8 cycles; smooth: a ramp plus at most 1.5 cycles. Compare the mean absolute
    # pixel step of the first frame away from shape edges (the median ignores the few edge pixels).
    def median_step(style):
        steps = []
        for k in range(16):
            f = render_clip(k % 8, 2, 64, np.random.default_rng((9, k)), style)[0].astype(np.float64)
            steps.append(np.median(np.abs(np.diff(f, axis=1))))
        return float(np.mean(steps))

    texture, smooth = median_step("texture"), median_step("smooth")
    assert smooth < 2.0 < 6.0 < texture, (smooth, texture)  # steps in 0..255 units per pixel
    with pytest.raises(ValueError, match="style"):
        render_clip(0, 2, 32, np.random.default_rng(0), "stripes")
    with pytest.raises(ValueError, match="style"):
        write_synthetic_dataset(tmp_path, num_train=1, num_val=0, num_frames=2, size=32, style="flat")
    paths = ensure_synthetic_dataset(tmp_path / "s", num_train=1, num_val=0, num_frames=4, size=32, style="smooth")
    assert json.loads((paths["root"] / "meta.json").read_text())["style"] == "smooth"


# ---------------------------------------------------------------- style "ssm"


def test_ssm_files_lists_and_raw_reader(tmp_path):
    paths = write_synthetic_dataset(tmp_path / "ssm", num_train=12, num_val=4, num_frames=6, size=16, seed=1,
                                    style="ssm", num_test=2)
    train = read_list(paths["train"])
    assert [r.label for r in train] == list(range(12))
    assert paths["train"].read_text().splitlines()[0] == "videos/train_00000.npy 0"
    assert len(read_list(paths["test"])) == 2
    assert paths["classes"].read_text().split() == list(SSM_CLASSES)
    reader = RawClipReader(train[3].path)  # what the decoders' dispatch opens for `.npy` list entries
    assert len(reader) == 6 and reader.get(np.array([1, 4])).shape == (2, 16, 16, 3)
    clip = read_raw_clip(train[3].path)
    assert clip.shape == (6, 16, 16, 3) and clip.dtype == np.uint8
    np.testing.assert_array_equal(clip, ssm_clips(0, 12, 6, 16, seed=1)[0][3])  # raw: bit-exact, no codec
    again = ensure_synthetic_dataset(tmp_path / "ssm", num_train=12, num_val=4, num_frames=6, size=16, seed=1,
                                     style="ssm", num_test=2)
    assert again["test"] == paths["test"]
    np.save(tmp_path / "bad.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="bad.npy: expected uint8"):
        read_raw_clip(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match="num_test"):
        write_synthetic_dataset(tmp_path / "x", num_train=1, num_val=0, num_frames=2, size=32, num_test=1)
    with pytest.raises(ValueError, match="own classes and renderer"):
        render_clip(0, 2, 32, np.random.default_rng(0), "ssm")
    with pytest.raises(ValueError, match="label"):
        render_ssm_clip(12, 2, 32, np.random.default_rng(0))


def test_ssm_pairs_share_the_first_frame_only():
    clips, labels = ssm_clips(0, 24, 8, 32, seed=5)
    assert labels.tolist() == [i % 12 for i in range(24)]
    for i in range(0, 24, 2):
        np.testing.assert_array_equal(clips[i, 0], clips[i + 1, 0])  # a single first frame cannot tell them apart
        assert np.abs(clips[i, -1].astype(int) - clips[i + 1, -1].astype(int)).max() > 20, SSM_CLASSES[labels[i]]


def _change_centroid(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Circular (torus) centroid (y, x) of where two frames differ, in pixels."""
    weight = np.abs(a.astype(np.float64) - b.astype(np.float64)).sum(-1)
    out = []
    for axis, n in ((0, a.shape[0]), (1, a.shape[1])):
        theta = 2 * np.pi * np.arange(n) / n
        profile = weight.sum(axis=1 - axis)
        out.append(np.angle((profile * np.exp(1j * theta)).sum()) * n / (2 * np.pi))
    return np.array(out)


@pytest.mark.parametrize("name, axis, sign", [("left", 1, -1), ("right", 1, 1), ("up", 0, -1), ("down", 0, 1)])
def test_ssm_translation_direction_and_speed(name, axis, sign):
    # An estimator of its own: where consecutive frames change moves with the object.
    label = SSM_CLASSES.index(name)
    for k in range(6):
        clip = render_ssm_clip(label, 16, 48, np.random.default_rng((7, k)))
        early, late = _change_centroid(clip[0], clip[2]), _change_centroid(clip[12], clip[14])
        step = (late - early + 24) % 48 - 24  # on the torus
        assert sign * step[axis] > 4, (name, step)  # 12 frames at 0.5-1 px per frame
        assert abs(step[axis]) <= 13 and abs(step[1 - axis]) < 2, (name, step)  # at most ~1 px per frame


def test_ssm_motion_is_slow_and_the_background_persists():
    clips, _ = ssm_clips(1, 48, 16, 32, seed=2)
    frames = clips.astype(np.float64)
    changed = np.abs(np.diff(frames, axis=1)).max(-1) > 2  # [N, T-1, H, W]
    # Most of each frame is the static background; only the object's neighbourhood changes.
    assert changed.mean() < 0.15, changed.mean()
    # Low frequency: away from object edges, neighbouring pixels differ by a few levels.
    assert np.median(np.abs(np.diff(frames[:, 0], axis=2))) < 3


def test_ssm_clips_load_through_the_video_path(tmp_path):
    """A list naming raw `.npy` clips reads through `decode.read_frames` like a video, without a codec: the frames
    come back bit-exact at the picked indices, and `videomae data synth` exposes the style and its test split."""
    import subprocess
    import sys

    from videomae.data.decode import read_frames

    root = tmp_path / "ssm"
    out = subprocess.run([sys.executable, "-m", "videomae", "data", "synth", "--style", "ssm", "--output_dir",
                          str(root), "--num_train", "12", "--num_val", "2", "--num_test", "2", "--size", "32",
                          "--num_frames", "8"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (root / "test.txt").read_text().count("\n") == 2
    rel = (root / "train.txt").read_text().split()[0]
    clip = np.load(root / rel)
    got = read_frames(str(root / rel), lambda n: [np.array([0, 3, 7]), np.array([1, 1])])
    assert np.array_equal(got[0], clip[[0, 3, 7]]) and np.array_equal(got[1], clip[[1, 1]])
    bad = subprocess.run([sys.executable, "-m", "videomae", "data", "synth", "--num_test", "2", "--output_dir",
                          str(tmp_path / "tex")], capture_output=True, text=True)
    assert bad.returncode == 2 and "--num_test" in bad.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------- style "tiles", the demo's data: a background that
# repeats exactly on the 16-px cube grid (so its cubes' normalized target is the same everywhere in a clip) under a
# striped shape moving in its class's direction; checked on the rendered pixels.


def _cells(frame: np.ndarray) -> np.ndarray:
    """[H, W, 3] -> [H/16 * W/16, 16, 16, 3] in raster order."""
    h, w, c = frame.shape
    return frame.reshape(h // 16, 16, w // 16, 16, c).swapaxes(1, 2).reshape(-1, 16, 16, c)


def test_tiles_background_repeats_on_the_cube_grid_and_is_textured():
    for k in range(8):
        bg = tile_background(np.random.default_rng(k), 64)
        grid = _cells(bg)
        assert (grid == grid[0]).all()  # bitwise: what a model can copy from any visible cube
        assert grid[0].std(axis=(0, 1)).max() > 0.05  # texture, not a flat colour


def test_tiles_most_cubes_of_a_frame_are_the_same_background_cube():
    clips, labels = tiles_clips(0, 8, 4, 64, seed=3)
    assert labels.tolist() == [i % 4 for i in range(8)]
    for clip in clips:
        grid = _cells(clip[0]).reshape(16, -1)
        same = max((grid == grid[i]).all(axis=1).sum() for i in range(16))
        assert same >= 7, same  # a shape of diameter <= 32 px touches at most 9 of the 16 cubes


@pytest.mark.parametrize("name, axis, sign", [("left", 1, -1), ("right", 1, 1), ("up", 0, -1), ("down", 0, 1)])
def test_tiles_shape_moves_in_its_class_direction(name, axis, sign):
    label = TILES_CLASSES.index(name)
    for k in range(4):
        clip = render_tiles_clip(label, 16, 64, np.random.default_rng((5, k)))
        early, late = _change_centroid(clip[0], clip[2]), _change_centroid(clip[12], clip[14])
        step = (late - early + 32) % 64 - 32  # on the torus
        assert sign * step[axis] > 4 and abs(step[1 - axis]) < 2, (name, step)  # 12 frames at 0.5-1 px per frame


def test_tiles_dataset_files(tmp_path):
    paths = write_synthetic_dataset(tmp_path / "t", num_train=4, num_val=2, num_frames=4, size=32, style="tiles",
                                    num_test=1)
    assert paths["classes"].read_text().split() == list(TILES_CLASSES)
    assert paths["train"].read_text().splitlines()[1] == "videos/train_00001.npy 1"
    np.testing.assert_array_equal(np.load(tmp_path / "t" / "videos" / "val_00001.npy"),
                                  tiles_clips(1, 2, 4, 32)[0][1])
    with pytest.raises(ValueError, match="label"):
        render_tiles_clip(4, 2, 32, np.random.default_rng(0))


# ---------------------------------------------------------------- style "motion", the study's data: several textured
# objects drift together over a static textured background; their direction is the class. Checked on the pixels with
# estimators of their own: the background is each pixel's median over time (the objects keep moving), the objects
# are what differs from it, and their displacement is the peak of the circular cross-correlation of consecutive
# object maps.


def _xcorr_shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Integer (dy, dx) on the torus that best maps `a` onto `b` (circular cross-correlation), zero shift excluded."""
    a, b = a - a.mean(), b - b.mean()
    c = np.fft.ifft2(np.fft.fft2(b) * np.conj(np.fft.fft2(a))).real
    c[0, 0] = -np.inf
    dy, dx = np.unravel_index(np.argmax(c), c.shape)
    h, w = a.shape
    return (dy + h // 2) % h - h // 2, (dx + w // 2) % w - w // 2


def _object_steps(clip: np.ndarray) -> np.ndarray:
    """[T-1, 2] displacement (dy, dx) of the moving objects between consecutive frames, in px."""
    grey = clip.astype(np.float64).mean(-1)
    objects = np.abs(grey - np.median(grey, axis=0))  # the static background cancels
    return np.array([_xcorr_shift(objects[t], objects[t + 1]) for t in range(len(clip) - 1)])


def test_motion_moves_2_to_4_px_per_sampled_frame_in_the_class_direction():
    clips, labels = motion_clips(0, 80, 8, 32, seed=11)
    assert labels.tolist() == [i % 4 for i in range(80)] and RATE == 4
    expect = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
    all_steps, hits = [], 0
    for clip, label in zip(clips, labels, strict=True):
        steps = _object_steps(clip)
        all_steps.append(np.abs(steps).max(1))
        dy, dx = np.median(steps, 0)
        # The trivial estimator: the sign of the median displacement along its larger axis.
        guess = (0, int(np.sign(dx))) if abs(dx) > abs(dy) else (int(np.sign(dy)), 0)
        hits += guess == expect[MOTION_CLASSES[label]]
        assert 2 <= np.abs(steps).max(1).mean() <= 4, steps  # 0.5-1 px per rendered frame, every 4th kept
    step = np.concatenate(all_steps)
    assert hits == len(clips)  # the class is recoverable from the displacement alone
    assert np.mean((step >= 2) & (step <= 4)) >= 0.95, np.bincount(step)  # the rest: objects passing each other


def test_motion_background_is_textured_not_flat_nor_a_ramp():
    clips, _ = motion_clips(1, 40, 8, 32, seed=12)
    yy, xx = np.mgrid[0:32, 0:32]
    plane = np.stack([np.ones(32 * 32), yy.ravel(), xx.ravel()], 1)
    for clip in clips:
        bg = np.median(clip.astype(np.float64), axis=0).mean(-1)  # [H, W] grey, objects removed
        coef, *_ = np.linalg.lstsq(plane, bg.ravel(), rcond=None)
        residual = bg.ravel() - plane @ coef
        assert residual.std() > 8, residual.std()  # 0..255 levels: far from a (linear) ramp
        # Fine texture: neighbouring pixels differ by several levels (the "smooth" style: under 2, tested above).
        assert np.median(np.abs(np.diff(bg, axis=1))) > 2.5


def test_motion_first_frame_carries_no_class():
    clips, labels = motion_clips(2, 96, 8, 32, seed=13)
    static_acc = loo_nearest_centroid(np.stack([first_frame_features(x) for x in clips]), labels)
    assert static_acc <= 0.4, static_acc  # chance 0.25 (96 clips: one SD is about 0.045)


def test_motion_dataset_files_and_cli(tmp_path):
    import subprocess
    import sys

    paths = write_synthetic_dataset(tmp_path / "m", num_train=4, num_val=2, num_frames=8, size=32, style="motion",
                                    num_test=2, seed=3)
    assert paths["classes"].read_text().split() == list(MOTION_CLASSES)
    assert paths["train"].read_text().splitlines()[1] == "videos/train_00001.npy 1"
    np.testing.assert_array_equal(np.load(tmp_path / "m" / "videos" / "test_00001.npy"), motion_clip(2, 1, 8, 32, 3)[0])
    np.testing.assert_array_equal(motion_clips(0, 3, 8, 32, 3)[0][2], motion_clip(0, 2, 8, 32, 3)[0])  # per clip seeds
    with pytest.raises(ValueError, match="label"):
        render_motion_clip(4, 2, 32, np.random.default_rng(0))
    out = subprocess.run([sys.executable, "-m", "videomae", "data", "synth", "--style", "motion", "--output_dir",
                          str(tmp_path / "cli"), "--num_train", "4", "--num_val", "0", "--num_test", "1", "--size",
                          "32", "--num_frames", "8"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert np.load(tmp_path / "cli" / "videos" / "test_00000.npy").shape == (8, 32, 32, 3)
