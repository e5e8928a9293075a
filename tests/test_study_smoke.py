"""The study (experiments/study.py): its loss baselines, label subsets, lr choice, gate 0, verdicts, run graph and
calibration, and the smoke config end to end (the cpu config's whole graph at toy sizes), plus the gpu config's
rehearsal (its 16-frame graph on the CPU)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from experiments import study, study_plan, study_plots, study_runs

CFG = study.CONFIGS["smoke"]
CPU = study.CONFIGS["cpu"]


@pytest.fixture(autouse=True)
def cpu_users_ops(monkeypatch):
    """The study's runs with the fused ops a CPU user gets (`auto` picks `torch` there). Under CI's
    TRITON_INTERPRET=1 `auto` would pick the interpreted Triton kernels (tested by tests/ops): the gpu config's
    rehearsal took 284 s instead of 16. The workers inherit the variable."""
    monkeypatch.setenv("VIDEOMAE_BACKEND", "torch")


def _clips(n: int, static: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    shape = (n, 3, 1 if static else CFG.num_frames, CFG.input_size, CFG.input_size)
    x = torch.rand(shape, generator=g)
    return x.expand(-1, -1, CFG.num_frames, -1, -1).contiguous() if static else x


def test_cube_targets_by_hand():
    videos = _clips(2, static=False)
    target = study_runs.cube_targets(videos, CFG.patch_size)  # [B, N, 2*p*p*3]
    # Cube n = (t, h, w) raster; inside it (t, y, x, c) with the channel fastest.
    p, side = CFG.patch_size, CFG.input_size // CFG.patch_size
    t, h, w = 1, 1, 0
    n = t * side * side + h * side + w
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


def test_label_subsets_are_balanced_nested_and_paired():
    subsets = {n: study_runs.label_subset(CPU, n, seed=1) for n in CPU.label_budgets}
    for n, idx in subsets.items():
        assert len(set(idx.tolist())) == n and idx.max() < CPU.num_labeled
        assert np.bincount(idx % 4, minlength=4).tolist() == [n // 4] * 4  # labels run round robin
    assert set(subsets[120]) <= set(subsets[480]) <= set(subsets[2400])
    assert np.array_equal(study_runs.label_subset(CPU, 120, 1), subsets[120])  # every arm of a seed: the same clips
    assert not np.array_equal(study_runs.label_subset(CPU, 120, 2), subsets[120])
    with pytest.raises(ValueError, match="label budget 121"):
        study_runs.label_subset(CPU, 121, 0)


def _ft(arm: str, n: int, lr: float, val: float, test: float, seed: int = 0) -> dict:
    return {"key": study_plan.tune_key(arm, n, lr) if seed == 0 else f"ft-{arm}-n{n}-s{seed}", "kind": "finetune",
            "arm": arm, "init": "scratch" if arm == "scratch" else "videomae",
            "mask_type": None if arm == "scratch" else arm, "mask_ratio": None if arm == "scratch" else 0.75,
            "train_videos": n, "lr": lr, "seed": seed, "split": "val" if seed == 0 else "test",
            "top1": val if seed == 0 else test, "val_top1": val, "test_top1": test, "steps": 10, "train_loss": 0.4,
            "plateau": 0.01}


def test_lr_choice_uses_seed_zero_val_and_gate0_uses_its_test():
    rows = {r["key"]: r for r in (_ft("scratch", 2400, 3e-4, 60.0, 99.0), _ft("scratch", 2400, 1e-3, 70.0, 55.0))}
    assert study_plan.chosen_lr(CPU, rows, "scratch", 2400) is None and study_plan.gate0(CPU, rows) is None
    rows.update({r["key"]: r for r in [_ft("scratch", 2400, 3e-3, 70.0, 40.0)]})  # a tie on val: the smaller lr
    assert study_plan.chosen_lr(CPU, rows, "scratch", 2400) == 1e-3
    gate = study_plan.gate0(CPU, rows)
    assert gate["top1"] == 55.0 and gate["gate_passed"] and gate["lr"] == 1e-3
    rows[study_plan.tune_key("scratch", 2400, 1e-3)]["test_top1"] = 49.9
    assert not study_plan.gate0(CPU, rows)["gate_passed"]


def _doc(rows: dict) -> dict:
    cfg = dataclasses.replace(CPU, seeds=(0, 1))
    return {"config": json.loads(json.dumps(dataclasses.asdict(cfg))), "rows": study_plots.report_rows(cfg, rows)}


def _arms(tube: tuple, scratch: tuple, random: tuple, frame: tuple, scratch_top=(80.0, 80.0)) -> dict:
    rows = [_ft("scratch", 2400, lr, 50.0 + i, 80.0) for i, lr in enumerate(CPU.finetune_lrs)]
    rows += [_ft("scratch", 2400, CPU.finetune_lrs[-1], 0.0, scratch_top[1], seed=1)]
    rows[-2]["test_top1"] = scratch_top[0]
    for arm, acc in (("tube", tube), ("scratch", scratch), ("random", random), ("frame", frame)):
        rows += [_ft(arm, 120, CPU.finetune_lrs[0], 50.0, acc[0]), _ft(arm, 120, CPU.finetune_lrs[0], 0, acc[1], 1)]
        rows += [_ft(arm, 120, lr, 10.0, 0.0) for lr in CPU.finetune_lrs[1:]]
    return {r["key"]: r for r in rows}


def test_verdicts_follow_the_preregistered_criteria():
    def verdict(*args, **kw) -> list[str]:
        return [v for _, v in study_plots.verdicts(_doc(_arms(*args, **kw)))]

    # tube - scratch: +15 and +10 (C1 holds), tube = random + 0.5 (C3), random = frame + 3 (C4)
    assert verdict((50, 45), (35, 35), (49.5, 44.5), (46.5, 41.5)) == ["holds"] * 4
    assert verdict((50, 44), (35, 35), (49.5, 44.5), (46.5, 41.5))[0] == "does not hold"  # seed 1: +9
    assert verdict((50, 45), (35, 35), (51.5, 45.6), (46.5, 41.5))[2] == "does not hold"  # tube < random - 1
    assert verdict((50, 45), (35, 35), (49.5, 44.5), (46.6, 41.5))[3] == "does not hold"  # random < frame + 3
    assert verdict((50, 45), (35, 35), (49.5, 44.5), (46.5, 41.5), scratch_top=(80.0, 49.0))[1] == "does not hold"
    rows = _arms((50, 45), (35, 35), (49.5, 44.5), (46.5, 41.5))
    del rows["ft-frame-n120-s1"]
    assert [v for _, v in study_plots.verdicts(_doc(rows))][3] == "not run"  # a missing seed is never a verdict


def test_plan_of_the_cpu_config():
    tasks = study_plan.plan(CPU)
    kinds = [t["kind"] for t in tasks]
    assert kinds.count("pretrain") == 9 and kinds.count("probe") == 3
    assert kinds.count("finetune") == 4 * 3 * (3 + 2)  # arms x budgets x (lr grid at seed 0 + seeds 1, 2)
    gate = {study_plan.tune_key("scratch", 2400, lr) for lr in CPU.finetune_lrs}
    by_key = {t["key"]: t for t in tasks}
    for t in tasks:
        assert all(d in by_key for d in t["deps"]), t["key"]
        if t["kind"] == "pretrain":
            assert set(t["deps"]) == gate  # nothing is pretrained before gate 0
        if t["after_gate"]:
            assert gate <= set(t["deps"]), t["key"]
        if t["kind"] == "finetune" and t["init"] == "videomae":
            assert f"pre-{t['arm']}-s{t['seed']}" in t["deps"]  # each seed fine-tunes its own pretraining
    assert not any(by_key[k]["after_gate"] for k in gate)
    # Every (arm, budget) x seed is reported: seed 0 by its picked grid run, the others by their own runs.
    seeds = {(t["arm"], t["train_videos"], t["seed"]) for t in tasks if t["kind"] == "finetune"}
    assert seeds == {(a, n, s) for a in ("scratch", "tube", "random", "frame") for n in CPU.label_budgets
                     for s in CPU.seeds}


def test_simulated_schedule_by_hand():
    def t(key, cost, deps=()):
        return {"key": key, "cost": cost, "deps": list(deps), "priority": 0.0}

    # a (3) -> c (1); b (2): on 2 workers a and b start together, c follows a: 4 s. On 1 worker: 6 s.
    tasks = [t("a", 3.0), t("b", 2.0), t("c", 1.0, ["a"])]
    for x, p in zip(tasks, (4.0, 2.0, 1.0), strict=True):
        x["priority"] = p
    assert study_plan.simulate(tasks, 2) == 4.0 and study_plan.simulate(tasks, 1) == 6.0


def test_calibration_fills_the_budget_and_never_more():
    times = [{"pretrain_step_s": 0.05, "pretrain_run_s": 2.0, "finetune_step_s": 0.05, "finetune_run_s": 1.0,
              "val_eval_s": 0.5, "probe_s": 3.0}] * 2
    budget = 3600.0
    cal = study_plan.calibrate_steps(CPU, times, budget)
    target = budget * (1 - CPU.margin) / 60
    assert cal["fits"] and cal["finetune_steps"] == list(CPU.finetune_steps)
    assert target - 0.5 < cal["estimated_min"] <= target  # fills it to within half a minute
    # The schedule itself: every run's cost at the calibrated counts, simulated on the workers, matches.
    tasks = study_plan.plan(dataclasses.replace(CPU, pretrain_steps=cal["pretrain_steps"]), cal)
    assert study_plan.simulate(tasks, CPU.workers) / 60 == pytest.approx(cal["estimated_min"])
    slow = study_plan.calibrate_steps(CPU, [{**times[0], "finetune_step_s": 0.5}] * 2, budget)
    assert slow["pretrain_steps"] == CPU.min_pretrain_steps and slow["finetune_steps"][-1] < CPU.finetune_steps[-1]
    assert slow["estimated_min"] <= target


def _run(cfg_name: str, out, cache, *extra) -> dict:
    assert study.main(["--config", cfg_name, "--out", str(out), "--cache", str(cache), *extra]) == 0
    return json.loads((out / "study.json").read_text())


def test_smoke_study_end_to_end(tmp_path):
    out, cache = tmp_path / "results", tmp_path / "cache"
    doc = _run("smoke", out, cache)
    assert doc["state"]["status"] == "complete"
    assert doc["calibration"]["pretrain_step_s"] > 0 and doc["calibration"]["pretrain_steps"] == CFG.pretrain_steps
    rows = doc["rows"]
    for r in rows:
        for field in ("init", "mask_type", "mask_ratio", "train_videos", "top1", "seed", "split", "gate_passed"):
            assert field in r, (field, r["key"])
    assert [r["kind"] for r in rows].count("gate0") == 1
    cells = study_plots.cells(doc)
    assert set(cells) == {(a, n) for a in ("scratch", *CFG.maskings) for n in CFG.label_budgets}
    assert all(set(v) == set(CFG.seeds) and all(0 <= x <= 100 for x in v.values()) for v in cells.values())
    assert set(study_plots.cells(doc, "probe")) == set(cells)
    pre = [r for r in rows if r["kind"] == "pretrain"]
    assert len(pre) == len(CFG.maskings) * len(CFG.seeds) and all(r["steps"] == CFG.pretrain_steps for r in pre)
    assert {f"{m} {CFG.mask_ratio} motion" for m in CFG.maskings} <= set(doc["redundancy"])
    md = (out / "study.md").read_text()
    assert "**Gate 0: passed**" in md and "## Pre-registration" in md and "- C1:" in md
    for name in ("study_pretrain_curves.png", "study_probe.png", "study_accuracy.png"):
        assert (out / name).stat().st_size > 1000
    # --resume with nothing left runs nothing new and keeps every run.
    again = _run("smoke", out, cache, "--resume")
    assert len(again["runs"]) == len(doc["runs"]) and again["state"]["status"] == "complete"


@pytest.mark.slow
def test_gate0_failure_stops_before_pretraining(tmp_path, monkeypatch):
    monkeypatch.setitem(study.CONFIGS, "smoke", dataclasses.replace(CFG, gate0_top1=100.1))
    doc = _run("smoke", tmp_path / "r", tmp_path / "c")
    assert doc["state"]["status"] == "gate 0 failed"
    assert not any(r["kind"] in ("pretrain", "probe") or r["init"] == "videomae" for r in doc["runs"])
    assert "no arm is reported" in (tmp_path / "r" / "study.md").read_text()


@pytest.mark.slow
def test_gpu_config_rehearsal(tmp_path):
    """The gpu config's graph (16 frames: 8 time slots) on the CPU at toy sizes."""
    doc = _run("gpu", tmp_path / "r", tmp_path / "c", "--rehearse")
    assert doc["state"]["status"] == "complete" and doc["config"]["num_frames"] == 16
    assert len(study_plots.cells(doc)) == 4 * len(study.CONFIGS["gpu"].label_budgets)


def test_preregistration_is_written_before_and_kept_after(tmp_path):
    assert study.main(["--config", "cpu", "--out", str(tmp_path), "--preregister"]) == 0
    text = (tmp_path / "study.md").read_text()
    assert "pre-registered, not run yet" in text
    assert study_plots.preregistration(dataclasses.asdict(CPU)) in text
    for needle in ("Gate 0", "C1: tube - scratch >= +10 points at 120 labels", "C2: scratch at 2400 labels >= 50%",
                   "C3: tube >= random - 1", "C4: random >= frame + 3", "ratio 0.75", "10000 clips"):
        assert needle in text, needle
