"""The study's design as data: its configuration, the graph of runs, gate 0, the lr choice, and the calibration that
sizes the runs to the budget (experiments/study.py executes the graph)."""

from __future__ import annotations

import dataclasses
import heapq


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    gate0_top1: float = 50.0  # scratch, every label, test top-1 (%): below it the data cannot carry the comparison
    data_seed: int = 1  # the development runs used 99: the study's val and test clips were never seen
    num_pool: int = 10000  # unlabeled pretraining clips; the first num_labeled of them carry labels
    num_labeled: int = 2400
    num_val: int = 600
    num_test: int = 1200
    num_frames: int = 8
    input_size: int = 32
    patch_size: int = 8  # with tubelet 2: a 4 x 4 grid x 4 time slots = 64 tokens at 8 frames
    embed_dim: int = 64
    depth: int = 4
    heads: int = 2
    decoder_dim: int = 64
    decoder_depth: int = 1
    decoder_heads: int = 2
    maskings: tuple[str, ...] = ("tube", "random", "frame")
    mask_ratio: float = 0.75  # the highest ratio at which all three hide the same share of a 4x4x4 grid (75%)
    pretrain_steps: int = 5000  # the design's count; calibration sets the run's (fills the budget)
    pretrain_batch: int = 32
    pretrain_lr: float = 3e-3  # of {1e-3, 3e-3}, the lower tube val loss after 1200 development steps
    label_budgets: tuple[int, ...] = (120, 480, 2400)
    finetune_steps: tuple[int, ...] = (300, 600, 1500)  # per budget: scratch reaches its train-loss plateau
    finetune_batch: int = 32
    finetune_lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    seeds: tuple[int, ...] = (0, 1, 2)
    workers: int = 2
    device: str = "cpu"
    minutes: float = 60.0  # wall clock, everything included (rendering, calibration, runs, plots)
    min_pretrain_steps: int = 1000  # below it calibration shortens fine-tuning too (and says so)
    margin: float = 0.04  # of the budget kept free: the estimate's error
    fixed_steps: bool = False  # True: the design's step counts and no deadline (the smoke config: CI must not
    # turn a slow machine into a partial run)


def arms(cfg: Config) -> tuple[str, ...]:
    return ("scratch", *cfg.maskings)


def tune_key(arm: str, n: int, lr: float) -> str:
    return f"ft-{arm}-n{n}-lr{lr:g}-s0"


def plan(cfg: Config, cost: dict | None = None) -> list[dict]:
    """Every run of the study, with its dependencies and estimated seconds (`cost`: the calibration's timings).
    Seed 0 of every (arm, budget) is its lr grid (val top-1 picks the lr); seeds 1.. run at the picked lr."""
    cost = cost or {"pretrain_step_s": 1.0, "pretrain_run_s": 0.0, "finetune_step_s": 1.0, "finetune_run_s": 0.0,
                    "probe_s": 0.0, "val_eval_s": 0.0}
    s0, top = cfg.seeds[0], max(cfg.label_budgets)
    gate = [tune_key("scratch", top, lr) for lr in cfg.finetune_lrs]
    steps = dict(zip(cfg.label_budgets, cfg.finetune_steps, strict=True))
    ft_cost = {n: steps[n] * cost["finetune_step_s"] + cost["finetune_run_s"] for n in cfg.label_budgets}
    tasks = []

    def add(key, kind, arm, n, lr, seed, split, deps, secs, **extra):
        init = "scratch" if arm == "scratch" else "videomae"
        tasks.append({"key": key, "kind": kind, "arm": arm, "init": init,
                      "mask_type": None if init == "scratch" else arm,
                      "mask_ratio": None if init == "scratch" else cfg.mask_ratio, "train_videos": n, "lr": lr,
                      "seed": seed, "split": split, "deps": deps, "cost": secs,
                      "after_gate": init == "videomae" or split == "test", **extra})

    for seed in cfg.seeds:
        add(f"probe-scratch-s{seed}", "probe", "scratch", cfg.num_labeled, None, seed, "test", gate, cost["probe_s"])
        for m in cfg.maskings:
            add(f"pre-{m}-s{seed}", "pretrain", m, cfg.num_pool, cfg.pretrain_lr, seed, "val", gate,
                cfg.pretrain_steps * cost["pretrain_step_s"] + cost["pretrain_run_s"] + 9 * cost["val_eval_s"]
                + cost["probe_s"], steps=cfg.pretrain_steps)
    for arm in arms(cfg):
        for n in cfg.label_budgets:
            grid = [tune_key(arm, n, lr) for lr in cfg.finetune_lrs]
            pre = [] if arm == "scratch" else [f"pre-{arm}-s{s0}"]
            for lr, key in zip(cfg.finetune_lrs, grid, strict=True):
                add(key, "finetune", arm, n, lr, s0, "val", pre, ft_cost[n], steps=steps[n],
                    pretrain_key=pre[0] if pre else None)
            for seed in cfg.seeds[1:]:
                pre_s = [] if arm == "scratch" else [f"pre-{arm}-s{seed}"]
                add(f"ft-{arm}-n{n}-s{seed}", "finetune", arm, n, None, seed, "test", grid + pre_s, ft_cost[n],
                    steps=steps[n], pretrain_key=pre_s[0] if pre_s else None)
    for t in tasks:  # nothing reported runs before gate 0 has passed
        if t["after_gate"]:
            t["deps"] = list(dict.fromkeys([*gate, *t["deps"]]))
    by_key = {t["key"]: t for t in tasks}
    if len(by_key) != len(tasks):
        raise AssertionError("duplicate run keys in the plan")
    # Priority: the longest chain of work a run still holds up (its own cost + its longest dependent chain).
    children: dict[str, list[str]] = {k: [] for k in by_key}
    for t in tasks:
        for d in t["deps"]:
            children[d].append(t["key"])

    memo: dict[str, float] = {}

    def level(key: str) -> float:
        if key not in memo:
            memo[key] = by_key[key]["cost"] + max((level(c) for c in children[key]), default=0.0)
        return memo[key]

    for t in tasks:
        t["priority"] = level(t["key"])
    return tasks


def chosen_lr(cfg: Config, rows: dict, arm: str, n: int) -> float | None:
    """The grid lr with the best seed-0 val top-1 for (arm, n) (ties: the smaller lr); None until all ran."""
    found = [rows.get(tune_key(arm, n, lr)) for lr in cfg.finetune_lrs]
    if any(r is None for r in found):
        return None
    return max(found, key=lambda r: (r["val_top1"], -r["lr"]))["lr"]


def gate0(cfg: Config, rows: dict) -> dict | None:
    """The gate-0 row once scratch's lr grid at every label has run: the picked run's test top-1 against
    `cfg.gate0_top1` (None before)."""
    top = max(cfg.label_budgets)
    lr = chosen_lr(cfg, rows, "scratch", top)
    if lr is None:
        return None
    r = rows[tune_key("scratch", top, lr)]
    return {"key": "gate0", "kind": "gate0", "init": "scratch", "mask_type": None, "mask_ratio": None,
            "train_videos": top, "top1": r["test_top1"], "seed": cfg.seeds[0], "split": "test", "lr": lr,
            "threshold": cfg.gate0_top1, "gate_passed": r["test_top1"] >= cfg.gate0_top1, "steps": r["steps"],
            "train_loss": r["train_loss"], "plateau": r["plateau"], "val_top1": r["val_top1"]}


def ready(tasks: dict, rows: dict, skipped: set, running: set, slots: int) -> list[str]:
    """Up to `slots` runs whose dependencies have finished, highest priority first. A run whose dependency was
    skipped or failed is skipped too (added to `skipped`)."""
    out = []
    for key, t in sorted(tasks.items(), key=lambda kv: -kv[1]["priority"]):
        if key in rows or key in skipped or key in running:
            continue
        if any(d in skipped for d in t["deps"]):
            skipped.add(key)
        elif all(d in rows for d in t["deps"]) and len(out) < slots:
            out.append(key)
    return out


def resolve(task: dict, cfg: Config, rows: dict, gate: dict | None) -> dict:
    """The run as the worker gets it: the picked lr for seeds 1.., and the gate's verdict so far."""
    t = dict(task)
    if t["lr"] is None:
        t["lr"] = chosen_lr(cfg, rows, t["arm"], t["train_videos"])
    t["gate_passed"] = None if gate is None else gate["gate_passed"]
    return t


def simulate(tasks: list[dict], workers: int) -> float:
    """Seconds the scheduler of study.py takes for `tasks` on `workers` (same policy: ready runs, highest
    priority first, each on the first free worker)."""
    by_key = {t["key"]: t for t in tasks}
    done: set[str] = set()
    clock, free, events = 0.0, workers, []
    started: set[str] = set()
    while len(done) < len(tasks):
        for t in sorted(tasks, key=lambda t: -t["priority"]):
            if free and t["key"] not in started and all(d in done for d in t["deps"]):
                started.add(t["key"])
                free -= 1
                heapq.heappush(events, (clock + t["cost"], t["key"]))
        if not events:
            raise AssertionError("the plan has a dependency cycle or a missing run")
        clock, key = heapq.heappop(events)
        done.add(by_key[key]["key"])
        free += 1
    return clock


def calibrate_steps(cfg: Config, times: list[dict], seconds_left: float) -> dict:
    """From the workers' timings (medians): the pretraining step count whose simulated schedule fills
    `seconds_left` less the margin, fine-tuning at its design counts; if even `min_pretrain_steps` does not fit,
    fine-tuning is shortened by one factor too. `cfg.fixed_steps` keeps the design counts."""
    cost = {k: sorted(t[k] for t in times)[len(times) // 2] for k in times[0]}
    target = seconds_left * (1 - cfg.margin)

    def makespan(pre: int, ft: tuple[int, ...]) -> float:
        return simulate(plan(dataclasses.replace(cfg, pretrain_steps=pre, finetune_steps=ft), cost), cfg.workers)

    pre, ft = cfg.pretrain_steps, tuple(cfg.finetune_steps)
    if not cfg.fixed_steps:
        lo, hi = cfg.min_pretrain_steps, 4 * cfg.pretrain_steps
        if makespan(lo, ft) > target:  # too slow a machine: shorten fine-tuning as well
            f_lo, f_hi = 0.05, 1.0
            for _ in range(20):
                f = (f_lo + f_hi) / 2
                f_lo, f_hi = (f, f_hi) if makespan(lo, tuple(max(1, round(s * f)) for s in ft)) <= target else (f_lo, f)
            ft, pre = tuple(max(1, round(s * f_lo)) for s in ft), lo
        else:
            while hi - lo > 10:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if makespan(mid, ft) <= target else (lo, mid)
            pre = lo
    return {**cost, "pretrain_steps": pre, "finetune_steps": list(ft), "design_pretrain_steps": cfg.pretrain_steps,
            "design_finetune_steps": list(cfg.finetune_steps), "seconds_left": seconds_left,
            "estimated_min": makespan(pre, ft) / 60, "fits": makespan(pre, ft) <= target}
