"""The built-in synthetic temporal datasets: textured shapes whose class is their motion.

(Over 400 lines: two generations of one dataset family share the background, the writer and the
list format; the study in experiments/ reports on both, so they stay side by side.)

Style "ssm" (a miniature Something-Something, the second study's dataset) is described at `render_ssm_clip`;
it is stored raw (`.npy`, uint8 [T, H, W, 3]), because codec noise would become the normalized target
of flat cubes. Style "tiles" (the demo's data, raw too) lives in `synth_tiles.py`, style "motion" (the
study's data, raw too) in `synth_motion.py`. The styles "texture" and
"smooth" below are the first generation (H.264 files).

Each clip shows one textured shape over a textured static background. The class is the
motion (`CLASSES`): translation left/right/up/down, rotation cw/ccw, approach/recede.
Translation wraps around the frame (a torus), starting position, angle and scale are drawn
independently of the class, so the first frame's distribution is the same for every class
and only frame-to-frame change tells the classes apart.

Files: `<root>/videos/{split}_{i:05d}.mp4` (H.264, yuv420p, faststart), `<root>/train.txt`
and `<root>/val.txt` in the official `path label` format with paths relative to `root`,
`<root>/classes.txt`, `<root>/meta.json` (the parameters; `ensure_synthetic_dataset` reuses a
matching directory).

Determinism: rendered pixels are a function of the seed alone (exact arithmetic, scalar libm).
The encoded files are not always byte-identical: libx264 through PyAV 18 (one thread, explicit
timestamps, same options) encoded some 32x32 and 64x64 clips differently from run to run (at
112x112 no difference was seen in 30 encodes; not root-caused, perhaps reads of uninitialized
padding at tiny sizes), so decoded pixels agree only up to codec noise at those sizes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from videomae.data.synth_tiles import TILES_CLASSES, tiles_clips

CLASSES = ("left", "right", "up", "down", "rotate_cw", "rotate_ccw", "approach", "recede")
SHAPES = ("disk", "square", "triangle", "cross")
STYLES = ("texture", "smooth", "ssm", "tiles", "motion")
RAW_STYLES = ("ssm", "tiles", "motion")  # stored as raw .npy clips, each with an optional test split
# Time-reversal pairs (2k, 2k+1): the same first-frame distribution, opposite motion.
SSM_CLASSES = ("left", "right", "up", "down", "rotate_cw", "rotate_ccw", "approach", "recede", "start", "stop",
               "collide", "pass")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SynthParams:
    """Every knob that changes the written files (stored in meta.json)."""

    num_train: int = 160
    num_val: int = 40
    num_frames: int = 32
    size: int | tuple[int, int] = 64  # square side, or (height, width)
    fps: int = 25
    seed: int = 0
    crf: int = 18
    gop: int = 32
    style: str = "texture"
    version: int = FORMAT_VERSION
    num_test: int = 0  # raw styles only: an untouched test split


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


# ---------------------------------------------------------------- rendering


def _sin(values: np.ndarray) -> np.ndarray:
    # Scalar libm, not numpy's SIMD sin: numpy's vector and tail loops can differ by an ulp
    # depending on the array's memory alignment, which would make the pixels (and x264's
    # decisions) depend on the allocator instead of the seed.
    return np.array([math.sin(v) for v in values.tolist()], dtype=np.float64)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A static random texture: two colored sinusoidal gratings -> [H, W, 3] float in [0, 1]."""
    scale = max(h, w)
    ys, xs = np.arange(h) / scale, np.arange(w) / scale
    img = np.zeros((h, w, 3), np.float64)
    for _ in range(2):
        angle, freq, phase = rng.uniform(0, np.pi), rng.uniform(2, 8), rng.uniform(0, 2 * np.pi)
        kx, ky = 2 * np.pi * freq * math.cos(angle), 2 * np.pi * freq * math.sin(angle)
        # sin(kx x + ky y + phase), separated into 1-D factors so only h + w sines are taken
        sx, cx = _sin(kx * xs + phase), _sin(kx * xs + phase + np.pi / 2)
        sy, cy = _sin(ky * ys), _sin(ky * ys + np.pi / 2)
        grating = 0.5 + 0.5 * (cy[:, None] * sx[None, :] + sy[:, None] * cx[None, :])
        img += grating[..., None] * rng.uniform(0.1, 0.45, size=3)
    return np.clip(img + rng.uniform(0.0, 0.2, size=3), 0.0, 1.0).astype(np.float32)


def _smooth_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A static low-frequency background: a color ramp plus one grating of at most 1.5 cycles
    per frame -> [H, W, 3] float in [0, 1]. Every cube of it is predictable from its neighbours."""
    scale = max(h, w)
    ys, xs = np.arange(h) / scale, np.arange(w) / scale
    base, ramp_y, ramp_x = (rng.uniform(0.15, 0.85, size=3) for _ in range(3))
    img = base + 0.6 * ((ramp_y - base) * ys[:, None, None] + (ramp_x - base) * xs[None, :, None])
    angle, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
    kx, ky = 2 * np.pi * freq * math.cos(angle), 2 * np.pi * freq * math.sin(angle)
    sx, cx = _sin(kx * xs + phase), _sin(kx * xs + phase + np.pi / 2)
    sy, cy = _sin(ky * ys), _sin(ky * ys + np.pi / 2)
    grating = cy[:, None] * sx[None, :] + sy[:, None] * cx[None, :]
    img = img + 0.15 * grating[..., None] * rng.uniform(-1.0, 1.0, size=3)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of local coordinates (unit radius) in a shape."""
    if shape == "disk":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
    if shape == "triangle":  # pointing up, so rotation is visible in its outline too
        return (v <= 0.8) & (v >= -0.9 + 1.7 * np.abs(u))
    return (np.abs(u) <= 0.35) & (np.abs(v) <= 1.0) | (np.abs(v) <= 0.35) & (np.abs(u) <= 1.0)


def _motion(label: int, num_frames: int, h: int, w: int, rng: np.random.Generator):
    """Per-frame center (cy, cx), angle and radius; the start is class independent."""
    t = np.arange(num_frames, dtype=np.float32)
    cy0, cx0 = rng.uniform(0, h), rng.uniform(0, w)
    angle0 = rng.uniform(0, 2 * np.pi)
    radius0 = rng.uniform(0.16, 0.26) * min(h, w)
    speed = rng.uniform(0.6, 1.2) * min(h, w) / num_frames  # crosses 60-120% of the frame per clip
    spin = rng.uniform(0.5, 1.0) * np.pi / num_frames  # 90-180 degrees per clip: no aliasing at rate 4
    growth = math.log(rng.uniform(1.8, 2.4)) / num_frames
    cy, cx = np.full_like(t, cy0), np.full_like(t, cx0)
    angle, radius = np.full_like(t, angle0), np.full_like(t, radius0)
    name = CLASSES[label]
    if name == "left":
        cx = cx0 - speed * t
    elif name == "right":
        cx = cx0 + speed * t
    elif name == "up":
        cy = cy0 - speed * t
    elif name == "down":
        cy = cy0 + speed * t
    elif name == "rotate_cw":  # image y points down, so a growing angle turns clockwise on screen
        angle = angle0 + spin * t
    elif name == "rotate_ccw":
        angle = angle0 - spin * t
    elif name == "approach":
        radius = radius0 * np.array([math.exp(growth * i) for i in range(num_frames)], np.float32)
    else:
        radius = radius0 * np.array([math.exp(-growth * i) for i in range(num_frames)], np.float32)
    return cy, cx, angle, radius


def render_clip(label: int, num_frames: int, size: int | tuple[int, int], rng: np.random.Generator,
                style: str = "texture") -> np.ndarray:
    """One clip of class `label` -> uint8 [T, H, W, 3].

    `style`: "texture" (gratings of 2-8 cycles behind shapes with 3-6 stripes) or "smooth" (a
    low-frequency background behind two-tone shapes, split once through their center)."""
    if style not in STYLES[:2]:
        hint = f" (style {style!r} has its own classes and renderer)" if style in RAW_STYLES else ""
        raise ValueError(f"style must be one of {STYLES[:2]}, got {style!r}{hint}")
    h, w = _hw(size)
    bg = _background(rng, h, w) if style == "texture" else _smooth_background(rng, h, w)
    shape = SHAPES[rng.integers(len(SHAPES))]
    color_a = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
    color_b = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
    stripe_freq, stripe_angle = rng.uniform(1.5, 3.0), rng.uniform(0, np.pi)
    cy, cx, angle, radius = _motion(label, num_frames, h, w, rng)

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((num_frames, h, w, 3), np.uint8)
    for i in range(num_frames):
        # Offsets on the torus so translation wraps instead of leaving the frame.
        dy = (yy - cy[i] + h / 2) % h - h / 2
        dx = (xx - cx[i] + w / 2) % w - w / 2
        c, s = math.cos(angle[i]), math.sin(angle[i])
        u = (c * dx + s * dy) / radius[i]
        v = (-s * dx + c * dy) / radius[i]
        inside = _inside(shape, u, v)
        # Stripes live in the shape's own coordinates, so they move, turn and scale with it
        # (floor, not sin: exact arithmetic keeps the pixels a function of the seed alone).
        phase = u * math.cos(stripe_angle) + v * math.sin(stripe_angle)
        if style == "texture":
            stripes = (np.floor(stripe_freq * phase) % 2 == 0)[..., None]
        else:  # one split: the orientation stays visible, on the disk too
            stripes = (phase >= 0)[..., None]
        fg = np.where(stripes, color_a, color_b)
        frame = np.where(inside[..., None], fg, bg)
        out[i] = (frame * 255.0 + 0.5).astype(np.uint8)
    return out


# ---------------------------------------------------------------- style "ssm": a miniature Something-Something

SSM_SHAPES = ("disk", "square", "ellipse")


def _ssm_object(rng: np.random.Generator, size: int, scale: tuple[float, float]) -> dict:
    """One textured object: a shape, a radius in px, and a two-colour grating of 1-2 cycles per diameter
    in the object's own frame (so rotation shows on the disk too)."""
    return {"shape": SSM_SHAPES[rng.integers(len(SSM_SHAPES))], "radius": rng.uniform(*scale) * size,
            "colors": rng.uniform(0.0, 1.0, size=(2, 3)), "freq": rng.uniform(1.0, 2.0),
            "tex_angle": rng.uniform(0, np.pi), "phase": rng.uniform(0, 2 * np.pi)}


def _ssm_draw(frame: np.ndarray, obj: dict, cy: float, cx: float, angle: float, radius: float) -> None:
    """Alpha-blend `obj` into `frame` [H, W, 3] in place, centred at (cy, cx) on the torus. Edges are
    anti-aliased over one pixel so that sub-pixel motion changes the pixels."""
    h, w, _ = frame.shape
    yy, xx = np.mgrid[0:h, 0:w]
    dy = (yy - cy + h / 2) % h - h / 2
    dx = (xx - cx + w / 2) % w - w / 2
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # px, in the object's frame
    if obj["shape"] == "disk":
        dist = np.hypot(u, v) - radius
    elif obj["shape"] == "square":
        dist = np.maximum(np.abs(u), np.abs(v)) - 0.8 * radius
    else:  # ellipse 1 x 0.6: a first-order signed distance, exact enough for a one-pixel ramp
        dist = (np.hypot(u, v / 0.6) - radius) * 0.6
    alpha = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
    along = u * math.cos(obj["tex_angle"]) + v * math.sin(obj["tex_angle"])
    tex = (0.5 + 0.5 * np.sin(np.pi * obj["freq"] * along / radius + obj["phase"]))[..., None]
    fg = obj["colors"][0] * tex + obj["colors"][1] * (1 - tex)
    frame *= 1 - alpha
    frame += alpha * fg


def render_ssm_clip(label: int, num_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One clip of `SSM_CLASSES[label]` -> uint8 [T, H, W, 3].

    A textured object (or two, for collide / pass) over a static low-frequency background, moving at
    0.5-1 px per frame on a torus. Classes come in time-reversal pairs (2k, 2k+1) whose only difference is
    the sign of the motion (or its order: start / stop, collide / pass), so a clip drawn with the same `rng`
    state for both members of a pair has the same first frame, and a single frame does not tell them apart.
    """
    if not 0 <= label < len(SSM_CLASSES):
        raise ValueError(f"label must be in [0, {len(SSM_CLASSES)}), got {label}")
    h = w = size
    bg = _smooth_background(rng, h, w).astype(np.float64)
    name = SSM_CLASSES[label]
    sign = 1.0 if label % 2 == 0 else -1.0
    t = np.arange(num_frames, dtype=np.float64)
    speed = rng.uniform(0.5, 1.0)  # px per frame
    two = name in ("collide", "pass")
    objs = [_ssm_object(rng, size, (0.12, 0.17) if two else (0.16, 0.24)) for _ in range(2 if two else 1)]
    cy0, cx0, angle0 = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, 2 * np.pi)
    heading = rng.uniform(0, 2 * np.pi)
    switch = rng.uniform(0.35, 0.65) * (num_frames - 1)  # start / stop and the meeting of collide / pass
    r0 = objs[0]["radius"]
    cy, cx = np.full_like(t, cy0), np.full_like(t, cx0)
    angle, radius = np.full_like(t, angle0), np.full_like(t, r0)
    if name in ("left", "right"):
        cx = cx0 - sign * speed * t
    elif name in ("up", "down"):
        cy = cy0 - sign * speed * t
    elif name in ("rotate_cw", "rotate_ccw"):  # image y points down: a growing angle turns clockwise
        angle = angle0 + sign * (speed / r0) * t  # the rim moves at `speed`
    elif name in ("approach", "recede"):
        rate = min(speed / (2 * r0), math.log(2.0) / num_frames)  # rim speed <= speed while r <= 2 r0
        radius = r0 * np.exp(sign * rate * t)
    elif name in ("start", "stop"):
        moved = np.maximum(t - switch, 0.0) if name == "start" else np.minimum(t, switch)
        cy, cx = cy0 + math.sin(heading) * speed * moved, cx0 + math.cos(heading) * speed * moved
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    for i in range(num_frames):
        frame = bg.copy()
        if two:
            # Along an axis through (cy0, cx0): the objects close in until they touch at `switch`, then
            # move apart again (collide) or go on through each other (pass); object 0 is drawn on top.
            touch = 0.5 * (objs[0]["radius"] + objs[1]["radius"])
            d = speed * (t[i] - switch)
            s0 = -touch + d if (d < 0 or name == "pass") else -touch - d
            for obj, pos in ((objs[1], -s0), (objs[0], s0)):
                _ssm_draw(frame, obj, cy0 + math.sin(heading) * pos, cx0 + math.cos(heading) * pos, angle0,
                          obj["radius"])
        else:
            _ssm_draw(frame, objs[0], cy[i], cx[i], angle[i], radius[i])
        frames[i] = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return frames


def ssm_clips(split: int, count: int, num_frames: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` clips of split number `split` (0 train, 1 val, 2 test, ...) -> (uint8 [N, T, H, W, 3], labels
    int64 [N]). Labels run round robin; clips 2k and 2k+1 are a time-reversal pair drawn from one seed."""
    clips = np.empty((count, num_frames, size, size, 3), np.uint8)
    labels = np.arange(count, dtype=np.int64) % len(SSM_CLASSES)
    for i in range(count):
        rng = np.random.default_rng(np.random.SeedSequence((seed, 100 + split, i - i % 2)))
        clips[i] = render_ssm_clip(int(labels[i]), num_frames, size, rng)
    return clips, labels


def read_raw_clip(path: str | Path) -> np.ndarray:
    """A raw clip file (`.npy`, uint8 [T, H, W, 3]) -> its frames; one clear line for anything else."""
    clip = np.load(path, allow_pickle=False)
    if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"{path}: expected uint8 [T, H, W, 3], got {clip.dtype} {list(clip.shape)}")
    return clip


class RawClipReader:
    """The decoder interface of `videomae.data.decode` (`len`, `get(idx)`) over a raw `.npy` clip, so that list
    files naming `.npy` clips load like videos: `reader = RawClipReader(path)` where the path ends in `.npy`."""

    name = "raw"

    def __init__(self, path: str | Path):
        self.frames = read_raw_clip(path)

    def __len__(self) -> int:
        return len(self.frames)

    def get(self, idx: np.ndarray) -> np.ndarray:
        return self.frames[idx]


def write_raw_dataset(root: str | Path, style: str, num_train: int, num_val: int, num_test: int, num_frames: int,
                      size: int, seed: int) -> dict[str, Path]:
    """Raw clips of a raw style ("ssm", "tiles", "motion"): `videos/{split}_{i:05d}.npy` and the lists train.txt /
    val.txt / test.txt -> paths."""
    if style == "motion":  # imported here: synth_motion draws with this module's helpers
        from videomae.data.synth_motion import MOTION_CLASSES, motion_clips

        make, classes = motion_clips, MOTION_CLASSES
    else:
        make, classes = (ssm_clips, SSM_CLASSES) if style == "ssm" else (tiles_clips, TILES_CLASSES)
    root = Path(root)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    paths = {"root": root}
    for split_id, (split, count) in enumerate((("train", num_train), ("val", num_val), ("test", num_test))):
        clips, labels = make(split_id, count, num_frames, size, seed)
        lines = []
        for i, (clip, label) in enumerate(zip(clips, labels, strict=True)):
            rel = f"videos/{split}_{i:05d}.npy"
            np.save(root / rel, clip)
            lines.append(f"{rel} {label}\n")
        if count:
            (root / f"{split}.txt").write_text("".join(lines))
            paths[split] = root / f"{split}.txt"
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    paths["classes"] = root / "classes.txt"
    return paths


# ---------------------------------------------------------------- writing


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 25, crf: int = 18, gop: int = 32) -> None:
    """uint8 [T, H, W, 3] -> H.264 mp4 (libx264, yuv420p, moov atom first). H and W must be even."""
    import av  # here, not at the top: the raw styles (the study's data) render without PyAV

    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p needs even height and width, got {h}x{w}")
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # One thread per encoder: the writer runs beside the loader workers on shared cores.
        stream.options = {"crf": str(crf), "preset": "veryfast", "g": str(gop), "threads": "1"}
        stream.codec_context.time_base = Fraction(1, fps)
        for i, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            # Explicit timestamps: x264's rate control reads them, so they must not depend on PyAV's defaults.
            video_frame.pts, video_frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_synthetic_dataset(
    root: str | Path,
    num_train: int = 160,
    num_val: int = 40,
    num_frames: int = 32,
    size: int | tuple[int, int] = 64,
    fps: int = 25,
    seed: int = 0,
    crf: int = 18,
    gop: int = 32,
    style: str = "texture",
    num_test: int = 0,
) -> dict[str, Path]:
    """Write the dataset (balanced classes, round robin) and return its paths.

    -> {'root', 'train', 'val', 'classes'} (+ 'test' for a raw style with num_test > 0); list lines are
    `videos/train_00000.mp4 <label>` (`.npy` raw clips for the raw styles: square frames, no codec, no fps).
    Same arguments, same pixels: every clip draws from its own `SeedSequence((seed, split, i))`.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if num_test and style not in RAW_STYLES:
        raise ValueError(f"num_test: only the raw styles {RAW_STYLES} have a test split, got style {style!r}")
    params = SynthParams(num_train, num_val, num_frames, size if isinstance(size, int) else tuple(size), fps, seed,
                         crf, gop, style, num_test=num_test)
    root = Path(root)
    if style in RAW_STYLES:
        if not isinstance(size, int):
            raise ValueError(f"size: style {style!r} renders square frames, got {size}")
        paths = write_raw_dataset(root, style, num_train, num_val, num_test, num_frames, size, seed)
        (root / "meta.json").write_text(json.dumps(asdict(params), indent=1))
        return paths
    (root / "videos").mkdir(parents=True, exist_ok=True)
    for split_id, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        lines = []
        for i in range(count):
            label = i % len(CLASSES)
            rng = np.random.default_rng(np.random.SeedSequence((seed, split_id, i)))
            rel = f"videos/{split}_{i:05d}.mp4"
            write_mp4(root / rel, render_clip(label, num_frames, size, rng, style), fps=fps, crf=crf, gop=gop)
            lines.append(f"{rel} {label}\n")
        (root / f"{split}.txt").write_text("".join(lines))
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in CLASSES))
    # meta.json last: its presence marks a complete dataset for ensure_synthetic_dataset.
    (root / "meta.json").write_text(json.dumps(asdict(params), indent=1))
    return {"root": root, "train": root / "train.txt", "val": root / "val.txt", "classes": root / "classes.txt"}


def ensure_synthetic_dataset(root: str | Path, **kwargs) -> dict[str, Path]:
    """Reuse `root` when its meta.json matches these arguments, else (re)write it."""
    root = Path(root)
    size = kwargs.get("size", SynthParams.size)
    wanted = asdict(SynthParams(**{**kwargs, "size": size if isinstance(size, int) else tuple(size)}))
    meta = root / "meta.json"
    if meta.is_file():
        found = json.loads(meta.read_text())
        if isinstance(found.get("size"), list):
            found["size"] = tuple(found["size"])
        found.setdefault("style", "texture")  # written before styles existed
        found.setdefault("num_test", 0)
        if found == wanted:
            paths = {"root": root, "train": root / "train.txt", "val": root / "val.txt",
                     "classes": root / "classes.txt"}
            return {**paths, "test": root / "test.txt"} if found["num_test"] else paths
        meta.unlink()
    return write_synthetic_dataset(root, **kwargs)
