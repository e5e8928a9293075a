"""The study (experiments/study.py): its loss baselines, lr choice, gates and verdicts, and the smoke config end
to end (the same code path as `--config gpu`: calibration, process pool, three stages, plots)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from experiments import study, study_plots, study_runs

CFG = study.CONFIGS["smoke"]


def _clips(n: int, static: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    shape = (n, 3, 1 if static else CFG.num_frames, CFG.input_size, CFG.input_size)
    x = torch.rand(shape, generator=g)
    return x.expand(-1, -1, CFG.num_frames, -1, -1).contiguous() if static else x


def test_cube_targets_by_hand():
    videos = _clips(2, static=False)
    target = study_runs.cube_targets(videos, CFG.patch_size)  # [B, N, 2*p*p*3]
    # Cube n = (t, h, w) raster; inside it (t, y, x, c) with the channel fastest.
    p, (t, h, w) = CFG.patch_size, (1, 2, 3)
    n = t * (CFG.input_size // p) ** 2 + h * (CFG.input_size // p) + w
    std, mean = (torch.tensor(v)[:, None, None, None] for v in (study_runs.STD, study_runs.MEAN))
    pixels = videos[1] * std + mean
    cube = pixels[:, 2 * t:2 * t + 2, h * p:(h + 1) * p, w * p:(w + 1) * p].double()  # [3, 2, p, p]
    flat = cube.reshape(3, -1)
    norm = (flat - flat.mean(1, keepdim=True)) / (flat.var(1, unbiased=True, keepdim=True).sqrt() + 1e-6)
    expected = norm.reshape(3, 2, p, p).permute(1, 2, 3, 0).reshape(-1)
    torch.testing.assert_close(target[1, n].double(), expected, rtol=1e-5, atol=1e-5)


def test_copy_baseline_floor_and_exact_copies():
    moving, static = _clips(4, static=False), _clips(4, static=True)
    e = 2 * CFG.patch_size**2  # pixels per cube and channel
    for mask_type in ("tube", "random", "frame"):
        mask = study_runs.eval_masks(CFG, mask_type, 0.75, 4)
        # Predicting 0: the normalized target's mean square, (E - 1) / E with the unbiased variance.
        assert study_runs.baselines(moving, mask, CFG)["floor"] == pytest.approx((e - 1) / e, rel=1e-4)
    tube = study_runs.baselines(static, study_runs.eval_masks(CFG, "tube", 0.75, 4), CFG)
    frame = study_runs.baselines(static, study_runs.eval_masks(CFG, "frame", 0.75, 4), CFG)
    assert tube["copy_covered"] == 0 and tube["copy"] == pytest.approx(tube["floor"])  # nothing to copy from
    assert frame["copy_covered"] == 1 and frame["copy"] < 1e-8  # static clips: each copy is exact


def _row(**kw) -> dict:
    base = {"run": "finetune", "init": "videomae", "mask_type": "tube", "mask_ratio": 0.9, "seed": 0,
            "split": "test", "train_videos": 48, "lr": 1e-3, "steps": 10, "epochs": 1.0, "train_loss": 1.0,
            "test_pair_confusion": 50.0}
    return {**base, **kw}


def _pre(seed: int, passed: bool, lr: float = 1e-3, val_loss: float = 0.5) -> dict:
    return _row(run="pretrain", split="val", seed=seed, lr=lr, val_loss=val_loss, gate_passed=passed, top1=None,
                floor=0.97, copy=0.97, masked_fraction=0.89, probe_val_init=10.0, probe_val=20.0, probe_test=20.0)


def test_lr_choice_uses_seed_zero_val_only():
    cfg = dataclasses.replace(CFG, seeds=(0, 1), pretrain_lrs=(1e-3, 3e-3), finetune_lrs=(1e-3, 3e-3))
    rows = {i: r for i, r in enumerate([
        _pre(0, True, lr=1e-3, val_loss=0.8), _pre(0, True, lr=3e-3, val_loss=0.7),
        _pre(1, True, lr=1e-3, val_loss=0.1),  # another seed: never used for the choice
        _row(init="scratch", mask_type=None, mask_ratio=None, split="val", lr=1e-3, top1=30.0),
        _row(init="scratch", mask_type=None, mask_ratio=None, split="val", lr=3e-3, top1=20.0),
        _row(init="scratch", mask_type=None, mask_ratio=None, split="test", lr=3e-3, top1=90.0),  # test: ignored
    ])}
    assert study.chosen_pretrain_lr(cfg, rows, "tube", 0.9) == 3e-3
    assert study.chosen_finetune_lr(cfg, rows, "scratch", None, None) == 1e-3
    assert study.chosen_finetune_lr(cfg, rows, "untrained", None, None) is None


def _doc(rows: list[dict], maskings=(("tube", 0.9),)) -> dict:
    cfg = dataclasses.asdict(dataclasses.replace(CFG, maskings=maskings, seeds=(0, 1), label_budgets=(48, 480)))
    return {"config": json.loads(json.dumps(cfg)), "state": {"status": "complete"}, "calibration": {},
            "shared": {}, "rows": rows}


def _finetunes(videomae: tuple[float, float], scratch: tuple[float, float], untrained: tuple[float, float]):
    rows = []
    for seed in (0, 1):
        rows += [_row(seed=seed, top1=videomae[seed]),
                 _row(init="scratch", mask_type=None, mask_ratio=None, seed=seed, top1=scratch[seed]),
                 _row(init="untrained", mask_type=None, mask_ratio=None, seed=seed, top1=untrained[seed])]
    return rows


def test_verdicts_follow_the_gate():
    wins = _finetunes((60.0, 55.0), (30.0, 40.0), (35.0, 44.0))  # +25 and +11 over the better baseline
    close = _finetunes((60.0, 50.0), (30.0, 40.0), (35.0, 44.0))  # seed 1 only +6
    passed, failed = [_pre(0, True), _pre(1, True)], [_pre(0, True), _pre(1, False)]
    assert "**holds**" in study_plots.hypotheses(_doc(passed + wins))[0]
    assert "**does not hold**" in study_plots.hypotheses(_doc(passed + close))[0]
    # A pretraining arm that did not pass its gate is never reported as a result, whatever the numbers say.
    verdict = study_plots.hypotheses(_doc(failed + close))[0]
    assert study_plots.NOT_TESTED in verdict and "does not hold" not in verdict
    md = study_plots.markdown(_doc(failed + close))
    assert f"{study_plots.NOT_TESTED} (measured" in md
    assert "**not run**" in study_plots.hypotheses(_doc(close))[0]  # no pretraining rows at all


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    out, cache = tmp_path / "results", tmp_path / "cache"
    # The smoke config's scale is fixed (min_scale == max_scale), so --minutes only moves the deadline: a slow or
    # loaded CI machine must not turn "complete" into "partial" (the deadline exists for the cpu and gpu configs).
    assert study.main(["--config", "smoke", "--out", str(out), "--cache", str(cache), "--minutes", "30"]) == 0
    doc = json.loads((out / "study.json").read_text())
    assert doc["state"]["status"] == "complete"
    assert doc["calibration"]["pretrain_step_s"] > 0 and doc["calibration"]["pretrain_steps"] >= 1
    rows = doc["rows"]
    for r in rows:
        for field in ("init", "mask_type", "mask_ratio", "train_videos", "top1", "seed", "split", "lr"):
            assert field in r, (field, r["key"])
    pre = [r for r in rows if r["run"] == "pretrain"]
    assert {(r["mask_type"], r["mask_ratio"]) for r in pre} == set(CFG.maskings)
    assert all(isinstance(r["gate_passed"], bool) and len(r["probe_curve"]) == CFG.probe_points + 1 for r in pre)
    # Every run used the calibrated step counts, not the config's starting ones.
    assert {r["steps"] for r in pre} == {doc["calibration"]["pretrain_steps"]}
    assert {r["steps"] for r in rows if r["run"] == "finetune"} == {doc["calibration"]["finetune_steps"]}
    reported = [r for r in rows if r["run"] == "finetune" and r["split"] == "test"]
    # (a): every init at every budget and seed; the other maskings at the smallest budget.
    expect = 3 * len(CFG.seeds) * len(CFG.label_budgets) + (len(CFG.maskings) - 1) * len(CFG.seeds)
    assert len(reported) == expect
    assert all(0 <= r["top1"] <= 100 for r in reported)
    assert any(r["split"] == "sanity" for r in rows)
    assert {f"{m} {r} ssm" for m, r in study.FULL} <= set(doc["redundancy"])
    md = (out / "study.md").read_text()
    assert "## Hypotheses" in md and "## Redundancy" in md
    for name in ("study_pretrain_curves.png", "study_probe.png", "study_accuracy.png", "study_pairs.png"):
        assert (out / name).stat().st_size > 1000
    # --resume with nothing left runs nothing new and keeps every row.
    assert study.main(["--config", "smoke", "--out", str(out), "--cache", str(cache), "--resume", "--minutes",
                       "30"]) == 0
    assert len(json.loads((out / "study.json").read_text())["rows"]) == len(rows)


def test_gpu_plan_stages_match_the_calibration_count():
    # The gpu config's plan (every arm, 3 seeds, 3 budgets), walked with made-up finished rows: what calibration
    # budgets for is what the stages launch, and every reported cell gets every seed.
    cfg = study.CONFIGS["gpu"]
    rows, launched = {}, []
    for stage in (1, 2, 3):
        tasks = study.stage_tasks(cfg, stage, rows)
        launched += tasks
        for i, t in enumerate(tasks):
            rows[t["key"]] = {**t, "run": t["kind"], "val_loss": 1.0 - 0.01 * i, "top1": float(i),
                              "test_top1": float(i)}
    pre, ft = study.planned_steps(cfg)
    assert sum(t["kind"] == "pretrain" for t in launched) == pre
    # Seed 0 at the smallest budget with the chosen lr repeats a tuning run: the study copies it, calibration
    # does not count it; the sanity run (a 3D CNN, 2x the steps) counts as 3 fine-tuning runs.
    repeats = [t for t in launched if t["split"] == "test" and study._tuned(t) in rows]
    assert len(repeats) == 2 + len(cfg.maskings)
    runs = sum({"finetune": 1, "sanity": 3}.get(t["kind"], 0) for t in launched)
    assert runs - len(repeats) == ft
    reported = [t for t in launched if t["split"] == "test"]
    a_arms = {"scratch", "untrained", f"videomae-{cfg.maskings[0][0]}{cfg.maskings[0][1]}"}
    for arm in a_arms:
        cells = {(t["n"], t["seed"]) for t in reported if study.arm_name(t["init"], t["mask_type"], t["mask_ratio"])
                 == arm}
        assert cells == {(n, s) for n in cfg.label_budgets for s in cfg.seeds}, arm
    assert len({t["key"] for t in launched}) == len(launched)
