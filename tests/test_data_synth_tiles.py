"""Style "tiles", the demo's data: a background that repeats exactly on the 16-px cube grid, so the per-cube
normalized target of its cubes is the same everywhere in a clip, under a striped shape moving in its class's
direction. Checked on the rendered pixels, not on the renderer's parameters."""

import numpy as np
import pytest

from videomae.data.synth import write_synthetic_dataset
from videomae.data.synth_tiles import TILES_CLASSES, render_tiles_clip, tile_background, tiles_clips


def cells(frame: np.ndarray) -> np.ndarray:
    """[H, W, 3] -> [H/16 * W/16, 16, 16, 3] in raster order."""
    h, w, c = frame.shape
    return frame.reshape(h // 16, 16, w // 16, 16, c).swapaxes(1, 2).reshape(-1, 16, 16, c)


def test_background_repeats_on_the_cube_grid_and_is_textured():
    for k in range(8):
        bg = tile_background(np.random.default_rng(k), 64)
        grid = cells(bg)
        assert (grid == grid[0]).all()  # bitwise: what a model can copy from any visible cube
        assert grid[0].std(axis=(0, 1)).max() > 0.05  # texture, not a flat colour


def test_most_cubes_of_a_frame_are_the_same_background_cube():
    clips, labels = tiles_clips(0, 8, 4, 64, seed=3)
    assert labels.tolist() == [i % 4 for i in range(8)]
    for clip in clips:
        grid = cells(clip[0]).reshape(16, -1)
        same = max((grid == grid[i]).all(axis=1).sum() for i in range(16))
        assert same >= 7, same  # a shape of diameter <= 32 px touches at most 9 of the 16 cubes


@pytest.mark.parametrize("name, axis, sign", [("left", 1, -1), ("right", 1, 1), ("up", 0, -1), ("down", 0, 1)])
def test_the_shape_moves_in_its_class_direction(name, axis, sign):
    label = TILES_CLASSES.index(name)
    for k in range(4):
        clip = render_tiles_clip(label, 16, 64, np.random.default_rng((5, k))).astype(np.float64)
        # Where a frame differs from a frame 2 steps later: around the shape (the background is static).
        where = [np.abs(clip[t] - clip[t + 2]).sum(-1) > 0 for t in (0, 12)]
        centre = []
        for mask in where:
            theta = 2 * np.pi * np.arange(64) / 64
            centre.append([np.angle((mask.sum(1 - a) * np.exp(1j * theta)).sum()) * 64 / (2 * np.pi) for a in (0, 1)])
        step = (np.array(centre[1]) - np.array(centre[0]) + 32) % 64 - 32  # on the torus
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
