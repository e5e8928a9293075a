"""Reconstruction pictures: the official per-cube un-normalization, and the PNG/GIF writers."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

import videomae
from videomae.constants import IMAGENET_MEAN, IMAGENET_STD
from videomae.masking import tube_mask
from videomae.ops.norm_pix_mse import patchify, pixel_targets
from videomae.visualize import LABEL_W, MASK_SHADE, TITLE_H, animation_gif, caption, grid_png, reconstruct


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
    cubes = patchify(pixels, 2, 16)  # [B, N, P, C]
    std = cubes.var(dim=-2, unbiased=True, keepdim=True).sqrt()
    rec = patchify(views["reconstruction"], 2, 16)
    expected = (cubes + (std + 1e-6)).clamp(0, 1)
    torch.testing.assert_close(rec[mask], expected[mask], atol=2e-5, rtol=0)
    torch.testing.assert_close(rec[~mask], cubes[~mask], atol=1e-6, rtol=0)


def test_masked_view_shades_exactly_the_masked_cubes():
    videos, pixels = _clip(4)
    mask = tube_mask(2, (2, 2, 3), 0.5, torch.Generator().manual_seed(3))
    shaded = patchify(reconstruct(Oracle(True), videos, mask)["masked"], 2, 16)
    assert torch.all(shaded[mask] == MASK_SHADE)
    torch.testing.assert_close(shaded[~mask], patchify(pixels, 2, 16)[~mask], atol=1e-6, rtol=0)


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
    png = grid_png(views, tmp_path / "r.png", gap=2, title=caption(Oracle(True), mask, "tube"))
    gif = animation_gif(views, tmp_path / "r.gif", gap=2)
    with Image.open(png) as im:
        # frames upscaled x5 (32 -> 160 rows): a title band, a label column, 3 rows of 160, 4 columns of 240,
        # 2-pixel gaps
        assert im.size == (LABEL_W + 4 * 240 + 3 * 2, TITLE_H + 3 * 160 + 2 * 2)
        pixels = np.asarray(im.convert("RGB"))
    top_left = pixels[TITLE_H:TITLE_H + 160, LABEL_W:LABEL_W + 240]
    expected = (views["original"][0, :, 0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(top_left[::5, ::5], expected)
    # Each row has its label written in the label column, and the title band carries text.
    for r in range(3):
        label = pixels[TITLE_H + r * 162:TITLE_H + r * 162 + 160, :LABEL_W]
        assert (label < 128).any(), f"row {r} has no label"
    assert (pixels[:TITLE_H, LABEL_W:] < 128).any()
    with Image.open(gif) as im:
        assert im.n_frames == 4 and im.size == (3 * 240 + 2 * 2, TITLE_H + 160)


def test_caption_names_the_mask_ratio_and_the_target():
    mask = tube_mask(1, (2, 2, 2), 0.5)
    assert caption(Oracle(True), mask, "tube") == "mask ratio 0.50 (tube), target: per-cube normalized pixels"
    assert caption(Oracle(False), mask) == "mask ratio 0.50, target: raw pixels"


# ---------------------------------------------------------------- run pictures and logs


def test_lr_curve_is_drawn_raw_and_the_loss_smoothed(tmp_path, monkeypatch):
    from videomae.train import plots

    drawn = []
    real = plots.curve

    def spy(steps, values, ylabel, path, log_y=False, smooth=True):
        drawn.append((ylabel, smooth))
        return real(steps, values, ylabel, path, log_y, smooth)

    monkeypatch.setattr(plots, "curve", spy)
    rows = [{"step": i, "loss": 1.0 / i, "lr": min(i, 40) * 1e-4} for i in range(1, 101)]
    paths = plots.training_curves(rows, tmp_path)
    assert [p.name for p in paths] == ["loss.png", "lr.png"]
    assert drawn == [("loss", True), ("learning rate", False)]


def test_confusion_matrix_counts_are_white_on_dark_cells():
    from videomae.train.plots import text_color

    assert text_color(0.9) == "white" and text_color(1.0) == "white"
    assert text_color(0.1) == "black" and text_color(0.0) == "black"


def test_plain_progress_lines_when_stderr_is_not_a_terminal(capsys):
    from videomae.train.logs import LineBar

    bar = LineBar(total=20, initial=0, desc="epoch 1/3", min_seconds=0.0)
    for _ in range(20):
        bar.set_postfix_str("loss 0.5")
        bar.update(1)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 10 and lines[-1].startswith("epoch 1/3  step 20/20  loss 0.5")
    # A fast epoch (20 steps well inside 10 s) logs its last step only.
    fast = LineBar(total=20, initial=0, desc="epoch 2/3")
    for _ in range(20):
        fast.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("epoch 2/3  step 20/20")
