"""Provenance and outputs of the training parity (experiments/train_parity.py): versions and shas, the plot, the
one-paragraph console report per row."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def official_provenance(root: str | Path) -> dict:
    root = Path(root).resolve()
    sha_file = root / ".git_sha"
    return {"path": str(root.relative_to(REPO)) if root.is_relative_to(REPO) else str(root),
            "sha": sha_file.read_text().strip() if sha_file.is_file() else git_sha(root)}


def versions() -> dict:
    import timm

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {"torch": torch.__version__, "timm": timm.__version__, "triton": triton_version, "numpy": np.__version__,
            "python": platform.python_version(), "device": "cpu", "precision": "fp32",
            "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1", "torch_threads": torch.get_num_threads(),
            "git_sha": git_sha()}


def git_sha(repo: Path = REPO) -> str | None:
    """The checkout's commit (+ "-dirty" with uncommitted changes); `GIT_SHA` for this repository without .git."""
    if repo == REPO and os.environ.get("GIT_SHA"):
        return os.environ["GIT_SHA"]
    if repo != REPO and not (repo / ".git").exists():
        return None  # an exported copy inside this checkout: git would answer with this repository's commit
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 7), sharex=True, height_ratios=(3, 2))
    rows = [(name, r) for name, r in result["rows"].items() if "steps" in r]
    for (name, r), color in zip(rows, ("C0", "C2", "C1", "C4")):
        steps = [row["step"] for row in r["steps"]]
        top.plot(steps, [row["loss_official"] for row in r["steps"]], lw=4, alpha=0.35, color=color,
                 label=f"{name}: official")
        top.plot(steps, [row["loss_ours"] for row in r["steps"]], lw=1, ls="--", color=color, label=f"{name}: ours")
        bottom.semilogy(steps, [max(row["loss_rel_err"], 1e-10) for row in r["steps"]], color=color, lw=1,
                        label=f"{name}: ours vs official")
        if "noise_floor" in r:
            floor = r["noise_floor"]["loss_rel_err_per_step"]
            bottom.semilogy(steps, [max(e, 1e-10) for e in floor], color=color, lw=0.8, ls=":",
                            label=f"{name}: official fp32 vs fp64")
    top.set_ylabel("normalized-pixel MSE")
    top.set_title("Training parity with the official engine, CPU fp32 (official: thick, ours: dashed)\n"
                  "a zero error is drawn at 1e-10", fontsize=9)
    top.legend(fontsize=6, ncol=2)
    gate = result["gates"]["loss_rel_err"]
    bottom.axhline(gate, color="k", ls="--", lw=0.8, label=f"gate {gate:g}")
    bottom.set_ylabel("|loss rel. err|")
    bottom.set_xlabel("optimizer step")
    bottom.legend(fontsize=5.5, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(name: str, r: dict) -> str:
    if "skipped" in r:
        return f"{name}: skipped ({r['skipped']})"
    c = r["checks"]
    lines = [f"{name}: {len(r['steps'])} steps in {r['seconds']:.0f}s: loss {c['loss_rel_err']['value']:.2e}, weights "
             f"{c['weights_rel_err']['value']:.2e}, worst tensor {c['tensor_rel_err']['value']:.2e} "
             f"({c['tensor_rel_err']['tensor']}), moved {c['weights_moved_rel']['value']:.2e}"
             + (f"; FAILED {r['failed']}" if r["failed"] else "")]
    if "noise_floor" in r:
        f = r["noise_floor"]["official_fp32_vs_fp64"]
        lines.append(f"  noise floor, official fp32 vs fp64: loss {f['max_loss_rel_err']:.2e}, weights "
                     f"{f['weights_rel_err']:.2e}, worst tensor {f['worst_tensor']['rel_err']:.2e}")
    for bug, p in r.get("planted", {}).items():
        where = ", ".join(f"{k} (step {p['checks'][k]['first_step_over']})" if p["checks"][k].get("first_step_over")
                          else k for k in p["failed"])
        lines.append(f"  planted {bug}: {'caught by ' + where if p['failed'] else 'NOT CAUGHT'}")
    return "\n".join(lines)
