"""PNG figures written at the end of a run (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve(steps: list[int], values: list[float], ylabel: str, path: str | Path, log_y: bool = False,
          smooth: bool = True) -> Path:
    """`values` per step; with `smooth` (noisy series such as the loss) a moving average is drawn over them.
    A schedule (the lr) is drawn raw: smoothing would move its warmup peak."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    noisy = smooth and len(values) > 50
    ax.plot(steps, values, lw=1.0, alpha=0.5 if noisy else 1.0)
    if noisy:  # a moving average makes the trend readable through per-step noise
        k = max(len(values) // 25, 2)
        smooth = np.convolve(values, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, lw=2.0)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def training_curves(rows: list[dict], output_dir: str | Path) -> list[Path]:
    """steps.jsonl rows -> loss.png and lr.png."""
    rows = [r for r in rows if r.get("loss") is not None]
    if not rows:
        return []
    steps = [r["step"] for r in rows]
    out = Path(output_dir)
    return [curve(steps, [r["loss"] for r in rows], "loss", out / "loss.png"),
            curve(steps, [r["lr"] for r in rows], "learning rate", out / "lr.png", smooth=False)]


def accuracy_figure(rows: list[dict]):
    """log.txt rows (one per epoch) -> a matplotlib Figure: validation top-1 (and top-5 where logged) per epoch
    on the left, the epoch's mean training loss on the right. None when no row has `val_acc1`."""
    rows = sorted((r for r in rows if r.get("val_acc1") is not None), key=lambda r: r["epoch"])
    if not rows:
        return None
    plt = _pyplot()
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=110)
    epochs = [r["epoch"] for r in rows]
    acc.plot(epochs, [r["val_acc1"] for r in rows], marker="o", lw=1.5, label="val top-1")
    if all(r.get("val_acc5") is not None for r in rows):
        acc.plot(epochs, [r["val_acc5"] for r in rows], marker=".", lw=1.0, alpha=0.7, label="val top-5")
    acc.set_ylabel("validation accuracy (%)")
    acc.legend(loc="lower right")
    trained = [r for r in rows if r.get("train_loss") is not None]
    loss.plot([r["epoch"] for r in trained], [r["train_loss"] for r in trained], marker="o", lw=1.5, color="C3")
    loss.set_ylabel("training loss (epoch mean)")
    for ax in (acc, loss):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def accuracy_curve(rows: list[dict], output_dir: str | Path) -> list[Path]:
    """log.txt rows -> accuracy.png (see `accuracy_figure`); [] when the run had no validation."""
    fig = accuracy_figure(rows)
    if fig is None:
        return []
    path = Path(output_dir) / "accuracy.png"
    fig.savefig(path)
    _pyplot().close(fig)
    return [path]


def confusion_matrix(matrix: np.ndarray, class_names: list[str], path: str | Path) -> Path:
    """matrix[true, predicted] counts -> row-normalized heat map with the counts written in."""
    plt = _pyplot()
    k = len(class_names)
    size = min(max(4.0, 0.45 * k + 2), 30)
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    rows = matrix.sum(axis=1, keepdims=True)
    share = matrix / np.maximum(rows, 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=90 if k > 8 else 45, ha="right" if k <= 8 else "center")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color=text_color(share[i, j]))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def text_color(share: float) -> str:
    """White on the dark half of the Blues map, black on the light half: counts stay readable."""
    return "white" if share > 0.5 else "black"
