"""Reconstruction pictures: the official per-cube un-normalization, and the PNG/GIF writers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import videomae
from videomae.constants import IMAGENET_MEAN, IMAGENET_STD
from videomae.masking import tube_mask
from videomae.ops.norm_pix_mse import patchify, pixel_targets
from videomae.visualize import (
    LABEL_W,
    LINE_H,
    MASK_SHADE,
    TITLE_H,
    animation_gif,
    caption,
    grid_png,
    raw_display,
    reconstruct,
    wrap,
)


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
    title = caption(Oracle(True), mask, "tube")
    png = grid_png(views, tmp_path / "r.png", gap=2, title=title)
    gif = animation_gif(views, tmp_path / "r.gif", gap=2, title=title)
    width = LABEL_W + 4 * 240 + 3 * 2
    band = 4 + LINE_H * len(wrap(title, width - 8))
    assert len(wrap(title, width - 8)) >= 2  # the title is wrapped, not cut at the picture's edge
    with Image.open(png) as im:
        # frames upscaled x5 (32 -> 160 rows): a title band, a label column, 3 rows of 160, 4 columns of 240,
        # 2-pixel gaps
        assert im.size == (width, band + 3 * 160 + 2 * 2)
        assert im.text["Title"] == title
        pixels = np.asarray(im.convert("RGB"))
    top_left = pixels[band:band + 160, LABEL_W:LABEL_W + 240]
    expected = (views["original"][0, :, 0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(top_left[::5, ::5], expected)
    # Each row has its label written in the label column, and each line of the title band carries text.
    for r in range(3):
        label = pixels[band + r * 162:band + r * 162 + 160, :LABEL_W]
        assert (label < 128).any(), f"row {r} has no label"
    for i in range((band - 4) // LINE_H):
        assert (pixels[2 + i * LINE_H:2 + (i + 1) * LINE_H] < 128).any(), f"title line {i} is blank"
    with Image.open(gif) as im:
        assert im.n_frames == 4 and im.size == (3 * 240 + 2 * 2, TITLE_H + 160)
        assert im.info["comment"].decode() == title


def test_caption_says_where_the_reconstruction_colours_come_from():
    mask = tube_mask(1, (2, 2, 2), 0.5)
    text = caption(Oracle(True), mask, "tube")
    assert text.startswith("mask ratio 0.50 (tube), target: per-cube normalized pixels. ")
    assert "colour and contrast" in text and "from the original clip" in text and "official" in text
    assert "--raw" in text  # where to see the prediction itself
    raw = caption(Oracle(True), mask, "tube", raw=True)
    assert "0.5 + z/6" in raw and "nothing is taken from the original clip" in raw
    assert caption(Oracle(False), mask).startswith("mask ratio 0.50, target: raw pixels. ")
    assert "predicted pixels as they are" in caption(Oracle(False), mask)


class Fixed(nn.Module):
    """Predicts a given tensor [B, N_masked, t*p*p*3], whatever the clip."""

    tubelet_size, patch_size = 2, 16

    def __init__(self, pred: torch.Tensor, normalize_target: bool = True):
        super().__init__()
        self.pred, self.normalize_target = pred, normalize_target

    def forward(self, videos, mask):
        return self.pred


def test_raw_view_is_the_prediction_through_the_documented_affine():
    """--raw: a masked cube's pixels are 0.5 + z/6 of the predicted values z (clamped to [0, 1]), channel fastest
    in the prediction as in the loss target; visible cubes show the clip's per-cube normalized target the same
    way; no statistics of the clip enter the masked cubes."""
    videos, pixels = _clip(5)
    mask = tube_mask(2, (2, 2, 3), 0.5, torch.Generator().manual_seed(4))
    pred = torch.randn(2, int(mask[0].sum()), 2 * 16 * 16 * 3, generator=torch.Generator().manual_seed(6)) * 2
    views = reconstruct(Fixed(pred), videos, mask, raw=True)
    assert list(views) == ["original", "masked", "target", "prediction"]
    shown = patchify(views["prediction"], 2, 16)  # [B, N, 512, 3]
    expected = (0.5 + pred.view(2, -1, 512, 3) / 6).clamp(0, 1)
    torch.testing.assert_close(shown[mask], expected.reshape(-1, 512, 3), atol=1e-6, rtol=0)
    assert (expected == 0).any() and (expected == 1).any()  # the clamp is exercised
    cubes = patchify(pixels, 2, 16).double()
    z = (cubes - cubes.mean(-2, keepdim=True)) / (cubes.var(-2, keepdim=True).sqrt() + 1e-6)
    target = patchify(views["target"], 2, 16)
    torch.testing.assert_close(target.double(), (0.5 + z / 6).clamp(0, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(shown[~mask], target[~mask], atol=0, rtol=0)
    # The same prediction on a brighter clip: the default view moves with the clip, the raw view does not.
    brighter = (pixels * 0.5 + 0.4 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)) / \
        torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    raw_b = patchify(reconstruct(Fixed(pred), brighter, mask, raw=True)["prediction"], 2, 16)
    torch.testing.assert_close(raw_b[mask], shown[mask], atol=0, rtol=0)
    rec = patchify(reconstruct(Fixed(pred), videos, mask)["reconstruction"], 2, 16)
    rec_b = patchify(reconstruct(Fixed(pred), brighter, mask)["reconstruction"], 2, 16)
    assert (rec_b[mask] - rec[mask]).abs().max() > 0.1


def test_raw_view_of_a_raw_pixel_model_is_its_prediction_as_it_is():
    videos, pixels = _clip(6)
    mask = tube_mask(2, (2, 2, 3), 0.5, torch.Generator().manual_seed(5))
    pred = torch.rand(2, int(mask[0].sum()), 1536, generator=torch.Generator().manual_seed(7))
    views = reconstruct(Fixed(pred, normalize_target=False), videos, mask, raw=True)
    shown = patchify(views["prediction"], 2, 16)
    torch.testing.assert_close(shown[mask], pred.view(2, -1, 512, 3).reshape(-1, 512, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(views["target"], pixels, atol=1e-6, rtol=0)


def test_raw_display_is_the_stated_affine():
    z = torch.tensor([-4.0, -3.0, 0.0, 1.5, 3.0, 9.0])
    assert raw_display(z).tolist() == [0.0, 0.0, 0.5, 0.75, 1.0, 1.0]


def test_visualize_cli_titles_both_modes(synth, tmp_path):
    """The real CLI on a video (random weights): the default picture's title names the borrowed statistics,
    --raw draws four rows and says it takes nothing from the clip."""
    import subprocess
    import sys

    base = [sys.executable, "-m", "videomae", "visualize", "--model", "pretrain_videomae_tiny_patch16_224",
            "--video", str(synth / "videos" / "val_00000.mp4"), "--input_size", "32", "--num_frames", "4",
            "--sampling_rate", "2", "--mask_ratio", "0.5"]
    for extra, out in (([], tmp_path / "default"), (["--raw"], tmp_path / "raw")):
        proc = subprocess.run([*base, *extra, "--output_dir", str(out)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        with Image.open(out / "val_00000.png") as im:
            title, height = im.text["Title"], im.size[1]
        rows = 4 if extra else 3
        assert height - rows * 160 - (rows - 1) * 2 > 0  # a title band above the rows
        if extra:
            assert "--raw:" in title and "nothing is taken from the original clip" in title
            assert "original | masked | target | prediction" in proc.stdout
        else:
            assert "colour and contrast" in title and "original clip" in title
            assert "original | masked | reconstruction" in proc.stdout


def test_visualize_builds_the_model_an_hf_folder_describes(synth, tmp_path):
    """An HF folder whose decoder is not the named model's default (1 block, not 4): visualize builds what its
    config.json says (before, it built the default model and refused the weights as missing decoder blocks)."""
    import json

    from safetensors.torch import save_file

    from videomae import cli
    from videomae.interop.hf import hf_config, official_to_hf

    torch.manual_seed(0)
    ours = videomae.create_model("pretrain_videomae_tiny_patch16_224", img_size=32, num_frames=4, decoder_depth=1)
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(hf_config(ours)))
    save_file({k: v.contiguous() for k, v in official_to_hf(ours.state_dict()).items()},
              str(folder / "model.safetensors"))
    out = tmp_path / "vis"
    assert cli.main(["visualize", "--checkpoint", str(folder), "--video", str(synth / "videos" / "val_00000.mp4"),
                     "--sampling_rate", "2", "--mask_ratio", "0.5", "--output_dir", str(out)]) == 0
    assert (out / "val_00000.png").is_file() and (out / "val_00000.gif").is_file()


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


def test_finetune_accuracy_plot_draws_validation_accuracy_per_epoch(tmp_path):
    from videomae.train import plots

    # log.txt rows as the finetune loop writes them (a resumed run may log an epoch out of order).
    rows = [{"epoch": e, "train_loss": 2.0 - 0.3 * e, "train_lr": 1e-3, "val_acc1": acc, "val_acc5": acc + 20}
            for e, acc in [(0, 10.0), (2, 31.5), (1, 22.25), (3, 40.0)]]
    fig = plots.accuracy_figure(rows)
    acc, loss = fig.axes
    top1, top5 = acc.get_lines()
    assert top1.get_label() == "val top-1" and list(top1.get_xdata()) == [0, 1, 2, 3]
    assert list(top1.get_ydata()) == [10.0, 22.25, 31.5, 40.0] and list(top5.get_ydata()) == [30.0, 42.25, 51.5, 60.0]
    assert list(loss.get_lines()[0].get_ydata()) == pytest.approx([2.0, 1.7, 1.4, 1.1])
    assert acc.get_xlabel() == "epoch" and "validation accuracy" in acc.get_ylabel()
    (path,) = plots.accuracy_curve(rows, tmp_path)
    assert path == tmp_path / "accuracy.png"
    with Image.open(path) as im:
        assert im.size[0] > im.size[1] and np.asarray(im.convert("L")).min() < 128
    # Without validation (no val_acc1 in the rows) there is no accuracy to draw.
    assert plots.accuracy_curve([{k: v for k, v in r.items() if not k.startswith("val")} for r in rows],
                                tmp_path / "none") == []


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
