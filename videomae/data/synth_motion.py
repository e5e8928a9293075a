"""Style "motion", the study's data: several large textured objects drift together, and their direction is the class.

Built so that motion carries the target the way VideoMAE's sampled clips carry it (issue 23):
- **Sampled every 4th rendered frame.** Objects move 0.5-1 px per rendered frame; a clip keeps rendered frames
  0, 4, 8, ... (`RATE`), so they move 2-4 px per sampled frame, as the official sampling rate 4 gives on
  Kinetics-like footage. (Frame `k` of a clip is rendered at time `RATE * k`: the same pixels as rendering every
  frame and keeping every 4th, without drawing the frames that would be thrown away.)
- **Several large textured objects.** `NUM_OBJECTS` opaque disks, squares or ellipses of radius 10-14% of the frame
  (6-9 px across at 32x32, about one 8x8 patch), each filled with a two-colour grating in its own frame so that
  its inside moves too, edges anti-aliased over one pixel (so sub-pixel positions change the pixels). Larger or
  more objects touch nearly every cube of a 4x4 grid in every time slot, and the clips stop being temporally
  redundant: copying the nearest visible cube in time then does no better than predicting zero, while on real
  footage it roughly halves the loss (the study's redundancy table).
- **The class is their common direction** (`MOTION_CLASSES`): every object moves that way, each at its own speed.
  Start positions, shapes, textures and speeds are drawn independently of the class, on a torus (objects leave one
  side and come back on the other), so no single frame tells the classes apart.
- **A background that is neither flat nor a smooth ramp:** value noise on a 4-px lattice (bilinear, periodic)
  over a grating of 2-6 cycles per frame. It is static, so a visible cube at the same place in another frame
  predicts most of a hidden one: the temporal redundancy of real video, which tube masking takes away.

Clips are stored raw (`.npy`, uint8 [T, H, W, 3]) like the styles "ssm" and "tiles": codec noise would become the
normalized target of flat cubes.
"""

from __future__ import annotations

import numpy as np

from videomae.data.synth import _background, _ssm_draw

MOTION_CLASSES = ("left", "right", "up", "down")
DIRECTIONS = {"left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0), "down": (1.0, 0.0)}  # (dy, dx)
RATE = 4  # rendered frames per sampled frame
SPEED = (0.5, 1.0)  # px per rendered frame: 2-4 px per sampled frame
NUM_OBJECTS = 3
RADIUS = (0.10, 0.14)  # of the frame side
LATTICE = 4  # px between value-noise nodes


def noise_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A static textured background -> float [size, size, 3] in [0, 1]: periodic value noise (random colours on a
    `LATTICE`-px lattice, bilinear between nodes, wrapping at the edges like the objects) over `_background`'s
    gratings, at a contrast below the objects'."""
    cells = max(1, size // LATTICE)
    nodes = rng.uniform(-1.0, 1.0, size=(cells, cells, 3))
    coord = np.arange(size) * cells / size  # lattice units
    i0 = np.floor(coord).astype(int)
    frac = coord - i0
    i0, i1 = i0 % cells, (i0 + 1) % cells
    rows = nodes[i0] * (1 - frac)[:, None, None] + nodes[i1] * frac[:, None, None]  # [size, cells, 3]
    noise = rows[:, i0] * (1 - frac)[None, :, None] + rows[:, i1] * frac[None, :, None]  # [size, size, 3]
    img = 0.5 * _background(rng, size, size) + 0.25 + 0.18 * noise
    return np.clip(img, 0.0, 1.0)


def _object(rng: np.random.Generator, size: int) -> dict:
    """One object in `_ssm_draw`'s form: shape, radius in px, two colours, a grating of 0.75-1.5 cycles per
    diameter."""
    return {"shape": ("disk", "square", "ellipse")[rng.integers(3)], "radius": rng.uniform(*RADIUS) * size,
            "colors": rng.uniform(0.0, 1.0, size=(2, 3)), "freq": rng.uniform(0.75, 1.5),
            "tex_angle": rng.uniform(0, np.pi), "phase": rng.uniform(0, 2 * np.pi)}


def render_motion_clip(label: int, num_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One clip of `MOTION_CLASSES[label]` -> uint8 [T, size, size, 3], frame k rendered at time `RATE * k`."""
    if not 0 <= label < len(MOTION_CLASSES):
        raise ValueError(f"label must be in [0, {len(MOTION_CLASSES)}), got {label}")
    bg = noise_background(rng, size)
    objs = [_object(rng, size) for _ in range(NUM_OBJECTS)]
    start = rng.uniform(0, size, size=(NUM_OBJECTS, 2))
    angle = rng.uniform(0, 2 * np.pi, size=NUM_OBJECTS)
    speed = rng.uniform(*SPEED, size=NUM_OBJECTS)
    dy, dx = DIRECTIONS[MOTION_CLASSES[label]]
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for k in range(num_frames):
        frame = bg.copy()
        for i, obj in enumerate(objs):
            step = speed[i] * RATE * k
            _ssm_draw(frame, obj, start[i, 0] + dy * step, start[i, 1] + dx * step, float(angle[i]), obj["radius"])
        frames[k] = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return frames


def motion_clip(split: int, i: int, num_frames: int, size: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """Clip `i` of split number `split` (0 train, 1 val, 2 test) -> (uint8 [T, size, size, 3], label): label
    `i % 4` (round robin), pixels drawn from `SeedSequence((seed, 300 + split, i))` alone."""
    label = i % len(MOTION_CLASSES)
    rng = np.random.default_rng(np.random.SeedSequence((seed, 300 + split, i)))
    return render_motion_clip(label, num_frames, size, rng), label


def motion_clips(split: int, count: int, num_frames: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` clips of split number `split` -> (uint8 [N, T, H, W, 3], int64 labels [N])."""
    clips = np.empty((count, num_frames, size, size, 3), np.uint8)
    labels = np.arange(count, dtype=np.int64) % len(MOTION_CLASSES)
    for i in range(count):
        clips[i] = motion_clip(split, i, num_frames, size, seed)[0]
    return clips, labels
