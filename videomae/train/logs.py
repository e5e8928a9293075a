"""What a person sees during a run: a tqdm bar per epoch on a terminal (plain lines at intervals when
stderr is a file or a pipe: no `\r` spam in logs), one summary line per epoch, a JSONL step log
(`steps.jsonl`), the official per-epoch `log.txt` (JSON lines), and TensorBoard when installed
(loss, lr, grad norm, throughput, data wait; reconstructions per epoch). Only rank 0 creates a `RunLog`;
other ranks get `NullLog`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm


class NullLog:
    def bar(self, total: int, initial: int, desc: str):
        return _NullBar()

    def step(self, row: dict) -> None:
        pass

    def epoch(self, row: dict) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def image(self, tag: str, path: str | Path, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class MemoryLog(NullLog):
    """The step and epoch rows kept in memory, for runs without a folder (the training-parity run reads them)."""

    def __init__(self):
        self.rows: list[dict] = []
        self.epochs: list[dict] = []

    def step(self, row: dict) -> None:
        self.rows.append(row)

    def epoch(self, row: dict) -> None:
        self.epochs.append(row)


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


class RunLog(NullLog):
    def __init__(self, output_dir: str | Path, log_dir: str | Path | None = None, resume_step: int | None = None,
                 tensorboard: bool = True):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.steps_path = self.dir / "steps.jsonl"
        self.epochs_path = self.dir / "log.txt"
        if resume_step is not None:
            # Rows written after the checkpoint by the interrupted run are replayed now: drop them.
            _truncate(self.steps_path, lambda r: r["step"] <= resume_step)
            _truncate(self.epochs_path, lambda r: r.get("global_step", 0) <= resume_step)
        elif self.steps_path.exists() or self.epochs_path.exists():
            self.steps_path.unlink(missing_ok=True)
            self.epochs_path.unlink(missing_ok=True)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(log_dir or self.dir / "tensorboard"))
            except ImportError:
                self.note("TensorBoard is not installed (pip install tensorboard): logging to steps.jsonl only")

    def bar(self, total: int, initial: int, desc: str):
        if not sys.stderr.isatty():
            return LineBar(total, initial, desc)
        return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, leave=False,
                    file=sys.stderr, mininterval=1.0)

    def step(self, row: dict) -> None:
        _append(self.steps_path, row)
        if self.tb is not None:
            for key in ("loss", "lr", "grad_norm", "loss_scale", "clips_per_s", "data_wait_s"):
                if row.get(key) is not None:
                    self.tb.add_scalar(f"train/{key}", row[key], row["step"])

    def image(self, tag: str, path: str | Path, step: int) -> None:
        """A picture written during the run (the epoch's reconstruction) into TensorBoard."""
        if self.tb is not None:
            import numpy as np
            from PIL import Image

            with Image.open(path) as img:
                self.tb.add_image(tag, np.asarray(img.convert("RGB")), step, dataformats="HWC")

    def epoch(self, row: dict) -> None:
        _append(self.epochs_path, row)
        if self.tb is not None:
            for key, value in row.items():
                if isinstance(value, int | float) and key not in ("epoch", "global_step"):
                    self.tb.add_scalar(f"epoch/{key}", value, row["epoch"])
            self.tb.flush()

    def note(self, text: str) -> None:
        print(text, flush=True)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class LineBar:
    """The progress bar for logs that are files or pipes: one plain line every `every` steps (about ten
    per epoch) but at most one per `min_seconds`, and one at the epoch's end, instead of tqdm's carriage-return
    redraws. (Short epochs, as the demo's 10 steps of a second in all, would otherwise log every step.)"""

    def __init__(self, total: int, initial: int, desc: str, lines: int = 10, min_seconds: float = 10.0):
        self.total, self.n, self.desc = total, initial, desc
        self.every, self.min_seconds = max(1, total // lines), min_seconds
        self.postfix, self.start, self.done = "", time.perf_counter(), initial
        self.last = self.start

    def set_postfix_str(self, s: str) -> None:
        self.postfix = s

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if (self.n % self.every == 0 and now - self.last >= self.min_seconds) or self.n == self.total:
            self.last = now
            rate = (self.n - self.done) / max(now - self.start, 1e-9)
            fields = [self.desc, f"step {self.n}/{self.total}", self.postfix, f"({rate:.2f} steps/s)"]
            print("  ".join(f for f in fields if f), file=sys.stderr, flush=True)  # no blank field before a read

    def close(self) -> None:
        pass


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _truncate(path: Path, keep) -> None:
    if path.exists():
        rows = read_jsonl(path)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows if keep(r)))


def read_jsonl(path: str | Path) -> list[dict]:
    """Complete lines only (a killed run may leave half a line)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class Throughput:
    """Clips per second over the steps since the last `reset`."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.t0, self.clips = time.perf_counter(), 0

    def add(self, clips: int) -> float:
        self.clips += clips
        return self.clips / max(time.perf_counter() - self.t0, 1e-9)
