"""Reconstruction pictures: the official per-cube un-normalization, and the PNG/GIF writers."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

import videomae
from videomae.loss import IMAGENET_MEAN, IMAGENET_STD, pixel_targets
from videomae.masking import tube_mask
from videomae.visualize import MASK_SHADE, animation_gif, grid_png, reconstruct


class Oracle(nn.Module):
    """Predicts exactly the loss target of the masked cubes (so a perfect model)."""

    tubelet_size, patch_size = 2, 16

    def __init__(self, normalize_target: bool, offset: float = 0.0):
        super().__init__()
        self.normalize_target, self.offset = normalize_target, offset

    def forward(self, videos, mask):
        target = pixel_targets(videos, normalize_target=self.normalize_target)
        return target[mask].reshape(videos.shape[0], -1, target.shape[-1]) + self.offset


def _clip(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(2, 3, 4, 32, 48, generator=g)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    return (pixels - mean) / std, pixels


def test_a_perfect_prediction_reconstructs_the_clip_through_per_cube_unnormalization():
    for normalize in (True, False):
        videos, pixels = _clip()
        mask = tube_mask(2, (2, 2, 3), 0.5, torch.Generator().manual_seed(1))
        views = reconstruct(Oracle(normalize), videos, mask)
        torch.testing.assert_close(views["reconstruction"], pixels, atol=2e-5, rtol=0)
        torch.testing.assert_close(views["original"], pixels, atol=1e-6, rtol=0)


def test_each_masked_cube_is_unnormalized_with_its_own_statistics():
    videos, pixels = _clip(3)
    mask = tube_mask(2, (2, 2, 3), 0.5, torch.Generator().manual_seed(2))
    views = reconstruct(Oracle(True, offset=1.0), videos, mask)  # +1 in normalized units = +1 std of the cube
    cubes = videomae.loss.patchify(pixels, 2, 16)  # [B, N, P, C]
    std = cubes.var(dim=-2, unbiased=True, keepdim=True).sqrt()
    rec = videomae.loss.patchify(views["reconstruction"], 2, 16)
    expected = (cubes + (std + 1e-6)).clamp(0, 1)
    torch.testing.assert_close(rec[mask], expected[mask], atol=2e-5, rtol=0)
    torch.testing.assert_close(rec[~mask], cubes[~mask], atol=1e-6, rtol=0)


def test_masked_view_shades_exactly_the_masked_cubes():
    videos, pixels = _clip(4)
    mask = tube_mask(2, (2, 2, 3), 0.5, torch.Generator().manual_seed(3))
    shaded = videomae.loss.patchify(reconstruct(Oracle(True), videos, mask)["masked"], 2, 16)
    assert torch.all(shaded[mask] == MASK_SHADE)
    torch.testing.assert_close(shaded[~mask], videomae.loss.patchify(pixels, 2, 16)[~mask], atol=1e-6, rtol=0)


def test_reconstruct_runs_a_real_model_in_eval_mode_and_restores_train_mode():
    model = videomae.create_model("pretrain_videomae_tiny_patch16_224", img_size=32, num_frames=4, drop_path_rate=0.5)
    model.train()
    videos, _ = _clip()
    videos = videos[..., :32].contiguous()
    mask = tube_mask(2, (2, 2, 2), 0.5)
    a = reconstruct(model, videos, mask)["reconstruction"]
    b = reconstruct(model, videos, mask)["reconstruction"]
    assert torch.equal(a, b) and model.training  # eval mode: no drop path randomness


def test_png_grid_and_gif_layout(tmp_path):
    videos, _ = _clip()
    mask = tube_mask(2, (2, 2, 3), 0.5)
    views = reconstruct(Oracle(True), videos, mask)
    png = grid_png(views, tmp_path / "r.png", gap=2)
    gif = animation_gif(views, tmp_path / "r.gif", gap=2)
    with Image.open(png) as im:
        # frames upscaled x5 (32 -> 160 rows): 3 rows of 160, 4 columns of 240, 2-pixel gaps
        assert im.size == (4 * 240 + 3 * 2, 3 * 160 + 2 * 2)
        top_left = np.asarray(im.convert("RGB"))[:160, :240]
    expected = (views["original"][0, :, 0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(top_left[::5, ::5], expected)
    with Image.open(gif) as im:
        assert im.n_frames == 4 and im.size == (3 * 240 + 2 * 2, 160)
