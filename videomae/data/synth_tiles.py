"""Style "tiles", the demo's data: clips whose per-cube normalized pixels a tiny model learns to predict in minutes.

The official target normalizes every cube to zero mean and unit variance, so only a cube's texture is left to
predict. On natural video that texture continues from the visible neighbours (edges, surfaces), and a tiny model
learns to continue it only after long training: on the other synthetic styles the demo's 200 CPU steps end at
the loss of predicting zero (about 1), and the reconstruction is each cube's mean colour.

Here the background repeats exactly every 16 px: two coloured gratings with whole numbers of cycles per cube. So
every background cube of a clip holds the same normalized pattern, which the model can read off any visible cube
and paint into the masked ones. A striped shape slides over it at 0.5-1 px per frame with stripes in its own frame
(off the grid), which the model has to follow from the visible cubes it crosses. The class is the direction of the
slide (`TILES_CLASSES`). The repetition lines up with the cubes only without scale jitter and at the rendered size,
which is why the demo preset sets `--crop_scales 1` and `--input_size` to the clips' size.

Clips are stored raw (`.npy`), as style "ssm": codec noise would become texture in flat regions.
"""

from __future__ import annotations

import math

import numpy as np

TILES_CLASSES = ("left", "right", "up", "down")
TILE = 16  # the cube's side in pixels (patch_size of every model here)


def tile_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """-> float [size, size, 3] in [0, 1] whose 16x16 cells are all the same (exactly: made from coordinates mod 16)."""
    yy, xx = np.mgrid[0:size, 0:size] % TILE
    img = np.broadcast_to(rng.uniform(0.3, 0.7, size=3), (size, size, 3)).copy()
    for _ in range(2):
        cycles = (0, 0)
        while cycles == (0, 0):  # a flat "grating" would leave nothing to predict
            cycles = tuple(int(c) for c in rng.integers(-2, 3, size=2))
        wave = np.sin(2 * np.pi * (cycles[0] * xx + cycles[1] * yy) / TILE + rng.uniform(0, 2 * np.pi))
        img += wave[..., None] * rng.uniform(0.08, 0.22, size=3) * rng.choice((-1.0, 1.0), size=3)
    return np.clip(img, 0.0, 1.0)


def render_tiles_clip(label: int, num_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One clip of `TILES_CLASSES[label]` -> uint8 [T, size, size, 3]: a striped disk or square of radius 16-25% of
    the frame sliding over `tile_background` on a torus, edges anti-aliased over one pixel."""
    if not 0 <= label < len(TILES_CLASSES):
        raise ValueError(f"label must be in [0, {len(TILES_CLASSES)}), got {label}")
    bg = tile_background(rng, size)
    square = bool(rng.integers(2))
    radius = rng.uniform(0.16, 0.25) * size
    colors = rng.uniform(0.0, 1.0, size=(2, 3))
    stripe_angle, period = rng.uniform(0, np.pi), rng.uniform(6.0, 12.0)
    cy, cx, speed = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0.5, 1.0)
    step = {"left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0), "down": (1.0, 0.0)}[TILES_CLASSES[label]]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        y0, x0 = cy + step[0] * speed * t, cx + step[1] * speed * t
        dy = (yy - y0 + size / 2) % size - size / 2  # torus: the shape leaves one side and enters the other
        dx = (xx - x0 + size / 2) % size - size / 2
        dist = np.maximum(np.abs(dx), np.abs(dy)) - 0.8 * radius if square else np.hypot(dx, dy) - radius
        alpha = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
        along = dx * math.cos(stripe_angle) + dy * math.sin(stripe_angle)  # in the shape's frame: they move with it
        stripes = (0.5 + 0.5 * np.sin(2 * np.pi * along / period))[..., None]
        fg = colors[0] * stripes + colors[1] * (1 - stripes)
        frames[t] = (np.clip(bg * (1 - alpha) + fg * alpha, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return frames


def tiles_clips(split: int, count: int, num_frames: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` clips of split number `split` (0 train, 1 val, 2 test) -> (uint8 [N, T, H, W, 3], int64 labels [N]),
    labels round robin, clip i drawn from `SeedSequence((seed, 200 + split, i))`."""
    clips = np.empty((count, num_frames, size, size, 3), np.uint8)
    labels = np.arange(count, dtype=np.int64) % len(TILES_CLASSES)
    for i in range(count):
        rng = np.random.default_rng(np.random.SeedSequence((seed, 200 + split, i)))
        clips[i] = render_tiles_clip(int(labels[i]), num_frames, size, rng)
    return clips, labels
