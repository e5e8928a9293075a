"""The learning study (`bench/study.py`): its PSNR metric, and the smoke configuration end to end."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from videomae.loss import IMAGENET_MEAN, IMAGENET_STD, pixel_loss, pixel_targets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import study  # noqa: E402

REQUIRED = ("run", "init", "mask_type", "mask_ratio", "train_videos", "pretrain_epochs", "finetune_epochs", "top1",
            "seed", "wall_s", "git_sha", "torch")


class _Predictor(nn.Module):
    """Predicts the true normalized target of every masked cube (`oracle`) or zeros."""

    tubelet_size, patch_size, normalize_target = 2, 8, True

    def __init__(self, oracle: bool):
        super().__init__()
        self.oracle = oracle

    def forward(self, videos, mask):
        target = pixel_targets(videos, tubelet_size=2, patch_size=8)
        pred = target[mask].reshape(len(videos), -1, target.shape[-1])
        return pred if self.oracle else torch.zeros_like(pred)

    def forward_loss(self, videos, pred, mask):
        return pixel_loss(pred, videos, mask, tubelet_size=2, patch_size=8)


@pytest.mark.parametrize("mask_type", ["tube", "random", "frame"])
def test_masked_psnr_oracle_and_mean(mask_type):
    cfg = study.CONFIGS["smoke"]
    g = torch.Generator().manual_seed(0)
    pixels = 0.05 + 0.9 * torch.rand(6, 3, cfg.num_frames, cfg.input_size, cfg.input_size, generator=g)
    clips = (pixels - torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    perfect = study.masked_psnr(_Predictor(oracle=True), clips, mask_type, 0.9, cfg, "cpu")
    zero = study.masked_psnr(_Predictor(oracle=False), clips, mask_type, 0.9, cfg, "cpu")
    # The oracle is exact up to the 1e-6 eps of the un-normalization: far above any real model.
    assert perfect["psnr"] > 60 and perfect["norm_mse"] < 1e-8
    # Zero in the normalized space is each cube's own mean color: exactly the baseline.
    assert zero["psnr"] == pytest.approx(zero["psnr_mean_baseline"], abs=1e-4)
    assert zero["psnr_visible_baseline"] < zero["psnr_mean_baseline"]
    n = cfg.tubelet_size * cfg.patch_size**2  # pixels per cube and channel
    assert zero["norm_mse"] == pytest.approx((n - 1) / n, rel=1e-4)


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    out = tmp_path / "results"
    assert study.main(["--config", "smoke", "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
    doc = json.loads((out / "study.json").read_text())
    cfg = study.CONFIGS["smoke"]
    rows = doc["rows"]
    assert doc["state"]["status"] == "complete"
    assert len(rows) == len(study.plan(cfg))

    for row in rows:
        assert all(k in row for k in REQUIRED), set(REQUIRED) - set(row)
        numbers = [v for v in row.values() if isinstance(v, float)]
        assert all(math.isfinite(v) for v in numbers), row

    finetunes = [r for r in rows if r["run"] == "finetune"]
    assert {(r["init"], r["train_videos"]) for r in finetunes} >= {
        (init, n) for init in ("videomae", "scratch", "untrained") for n in cfg.train_sizes}
    for r in finetunes:
        assert 0.0 <= r["top1"] <= 100.0 and math.isfinite(r["train_loss"])
        assert r["finetune_epochs"] == pytest.approx(cfg.finetune_steps * cfg.finetune_batch / r["train_videos"],
                                                     abs=0.05)
        assert (r["pretrain_epochs"] > 0) == (r["init"] == "videomae")

    pretrains = [r for r in rows if r["run"] == "pretrain"]
    assert {(r["mask_type"], r["mask_ratio"]) for r in pretrains} == set(cfg.maskings)
    for r in pretrains:
        # Pretraining must have improved held-out reconstruction over the random initialization (at 24
        # videos and 40 epochs it does not yet beat each cube's own mean color: the sanity run below is
        # the test that it learns).
        assert r["val_psnr"] > r["val_psnr_init"] + 0.3, r
        assert r["pretrain_loss"] < r["pretrain_loss_first_epoch"], r
        for n in cfg.train_sizes:  # frozen-feature probes, before and after pretraining
            assert 0.0 <= r[f"probe_top1_{n}"] <= 100.0 and 0.0 <= r[f"probe_top1_init_{n}"] <= 100.0, r
    tube = next(r for r in pretrains if r["mask_type"] == "tube")
    assert tube["masked_fraction"] == pytest.approx(14 / 16)  # int(0.9 * 16) of each 4x4 slice

    # On smooth motion, where masked cubes are predictable, tube-0.9 pretraining must get clearly below
    # the loss of predicting zeros on held-out clips (0.895 here vs 0.992): the test that it learns.
    (sanity,) = [r for r in rows if r["run"] == "sanity"]
    pixels = cfg.tubelet_size * cfg.patch_size**2
    assert sanity["val_norm_mse"] < 0.95 * (pixels - 1) / pixels, sanity

    md = (out / "study.md").read_text()
    assert "complete" in md and "Partial" not in md
    for n in cfg.train_sizes:
        assert f"\n| {n} | " in md
    for name in ("study_data_efficiency.png", "study_masking.png"):
        assert (out / name).stat().st_size > 5000


def test_copy_psnr_against_hand_computed_error():
    # Slices that differ by a constant brightness step `delta`: copying from a slice `d` slices away is off
    # by `d * delta` in every pixel, so the pooled squared error follows from the masks alone.
    cfg = study.CONFIGS["smoke"]
    t_slices, delta = cfg.num_frames // cfg.tubelet_size, 0.05
    level = 0.3 + delta * (torch.arange(cfg.num_frames) // cfg.tubelet_size).float()  # per frame
    pixels = level.view(1, 1, -1, 1, 1).expand(5, 3, -1, cfg.input_size, cfg.input_size)
    clips = (pixels - torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    got = study.copy_psnr(clips, "frame", 0.9, cfg)
    mask = study.make_mask("frame", 5, study.token_grid(cfg), 0.9, torch.Generator().manual_seed(study.PSNR_SEED))
    hidden = mask.view(5, t_slices, -1)[:, :, 0]  # frame masking: whole slices
    errors = []
    for b in range(5):
        visible = [s for s in range(t_slices) if not hidden[b, s]]
        errors += [(delta * min(abs(s - v) for v in visible)) ** 2 for s in range(t_slices) if hidden[b, s]]
    assert got["covered"] == 1.0
    assert got["psnr"] == pytest.approx(10 * math.log10(1 / (sum(errors) / len(errors))), abs=1e-3)
    # Tube masking hides whole tubes: nothing to copy, so it is exactly the mean-color baseline (flat cubes: inf
    # PSNR is avoided by adding texture that varies inside each cube).
    texture = pixels + 0.1 * torch.rand(pixels.shape, generator=torch.Generator().manual_seed(0))
    clips = (texture - torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    tube = study.copy_psnr(clips, "tube", 0.9, cfg)
    mean = study.masked_psnr(_Predictor(oracle=False), clips, "tube", 0.9, cfg, "cpu")
    assert tube["covered"] == 0.0 and tube["psnr"] == pytest.approx(mean["psnr_mean_baseline"], abs=1e-4)
