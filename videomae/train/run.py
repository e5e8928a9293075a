"""Where a run lives: this process among its peers, its device, and its folder (`Run`); the signals that stop
it at a step boundary (`StopSignals`, `Interrupted`).

The folder changes only in `Run.begin`, after the model, the data and the trainer are built and the checkpoint
to resume (if any) is read: it takes the folder's lock (a second run there refuses in one line), removes the
temporary files a killed save left, clears an earlier run under `--overwrite`, opens the logs and writes
args.json. A run that fails before its first step, in a folder it created, leaves no folder behind.

SIGINT and SIGTERM (Ctrl-C, a cluster's preemption, sent to the whole process group) do not kill a run: the step
in flight finishes, a checkpoint is written at that step boundary, and the run exits with `Interrupted` (exit
status 130 / 143) so that `--resume auto` continues it bit for bit. The loader's workers ignore both signals
(`videomae.data.loader`), so the save never depends on them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from videomae.train import distributed
from videomae.train import state as ckpt
from videomae.train.distributed import DistInfo
from videomae.train.lock import RunLock
from videomae.train.logs import NullLog, RunLog


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global generator, for third-party code
    torch.manual_seed(seed)


def plain_args(args) -> dict:
    """The run's arguments as plain JSON data (what checkpoints and weight files store)."""
    return json.loads(json.dumps({k: v for k, v in vars(args).items() if not k.startswith("_")}, default=str))


@dataclass
class Run:
    """A run's place: `info` (rank, world size), `device`, `output_dir` (None: no files, as the parity run, the study
    and the benchmark), `args` (stored with every checkpoint: a resume checks them), and `log`."""

    info: DistInfo
    device: torch.device
    output_dir: Path | None = None
    args: dict = field(default_factory=dict)
    log: NullLog = field(default_factory=NullLog)
    verbose: bool = True
    _lock: RunLock | None = None
    _created: bool = False

    @classmethod
    def start(cls, args) -> Run:
        """The process of a `videomae` command: torchrun's ranks, this rank's device, CPU threads, the process
        group. Touches no file."""
        info = distributed.from_env()
        device = distributed.pick_device(args.device, info)
        if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # Leave a core to each loader worker: oversubscribed intra-op threads run many times slower.
            # An explicit OMP_NUM_THREADS (torchrun sets 1) wins.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) - args.num_workers))
        distributed.init(info, device)
        return cls(info, device, Path(args.output_dir))

    @classmethod
    def local(cls, device: torch.device | str = "cpu", log: NullLog | None = None) -> Run:
        """One quiet process and no folder (the parity run, the study, the benchmark)."""
        return cls(DistInfo(), torch.device(device), None, {}, log or NullLog(), verbose=False)

    def say(self, text: str) -> None:
        if self.info.is_main and self.verbose:
            print(text, flush=True)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind, err, tb) -> bool:
        if self.info.is_main:
            self.log.close()
            if kind is not None and self._created and self._lock is not None and self._did_nothing():
                shutil.rmtree(self.output_dir, ignore_errors=True)  # a new folder, and no step was taken
            if self._lock is not None:
                self._lock.release()
                self._lock = None
        if kind is None:
            distributed.shutdown()  # a barrier: only when every rank got here
        return False

    def _did_nothing(self) -> bool:
        steps = self.output_dir / "steps.jsonl"
        return not ckpt.list_checkpoints(self.output_dir) and not (steps.is_file() and steps.stat().st_size)

    def begin(self, args, resume_step: int | None = None) -> None:
        """The first change on disk. Rank 0: create the folder, take its lock, remove stale temporary files, clear
        an earlier run (`--overwrite`, or `--resume auto` starting over a run that saved no checkpoint), open the
        logs (a resumed run's rows after `resume_step` are dropped: it replays them), write args.json."""
        self.args = plain_args(args)  # as the checks left them (the resolved step switches included)
        if self.info.is_main and self.output_dir is not None:
            try:
                self._begin(args, resume_step)
            except OSError as err:  # a read-only or full disk: one line naming the path
                raise ckpt.WriteFailed(err.errno, err.strerror, err.filename or str(self.output_dir)) from None
        distributed.barrier()

    def _begin(self, args, resume_step: int | None) -> None:
        out = self.output_dir
        self._created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        self._lock = RunLock.acquire(out)
        if self._lock.previous:
            p = self._lock.previous
            self.say(f"took over the stale lock of pid {p.get('pid')} on {p.get('host')} (that run is gone)")
        ckpt.remove_temporaries(out)
        starting_over = getattr(args, "overwrite", False) or (args.resume == "auto" and resume_step is None)
        if starting_over:
            gone = ckpt.clear_run(out)
            if gone:
                flag = "--overwrite" if getattr(args, "overwrite", False) else "--resume auto"
                self.say(f"{flag}: deleted {len(gone)} file(s) of the earlier run in {out}")
        self.log = RunLog(out, getattr(args, "log_dir", None), resume_step=resume_step,
                          tensorboard=not getattr(args, "no_tensorboard", False))
        (out / "args.json").write_text(json.dumps(self.args, indent=1))

    def export(self, model: nn.Module, fsdp: bool) -> list[Path]:
        """Final weights of the bare module in the official layout (.pth: `{'model': sd}` for pretraining,
        `{'module': sd}` for a classifier, as `videomae.save_checkpoint`, with the run's arguments so that
        `evaluate`/`visualize` rebuild the model) and as safetensors; each with its SHA-256 sidecar.
        -> [the newest resumable checkpoint, model.pth, model.safetensors] (rank 0; [] elsewhere)."""
        sd = ckpt.model_state(model, fsdp)
        if not self.info.is_main or self.output_dir is None:
            return []
        latest = ckpt.latest_checkpoint(self.output_dir)
        pth, st = self.output_dir / "model.pth", self.output_dir / "model.safetensors"
        key = "model" if any(k.startswith("encoder.") for k in sd) else "module"
        ckpt.atomic_save({key: sd, "args": self.args}, pth)
        ckpt.atomic_save_safetensors(sd, st)
        return ([latest] if latest is not None else []) + [pth, st]


def resume_path(args, output_dir: Path) -> Path | None:
    """The checkpoint to continue from: the one the command line checks chose (`resume_from`), else
    `--resume FILE`, or for `--resume auto` the newest valid one in output_dir (None: a fresh start)."""
    if getattr(args, "resume_from", None):
        return Path(args.resume_from)
    if not args.resume:
        return None
    if args.resume == "auto":
        return ckpt.newest_valid(output_dir)[0]
    return Path(args.resume)


class Interrupted(Exception):
    """SIGINT/SIGTERM: a checkpoint was written at the step boundary (None: the run has no folder); the run stops."""

    def __init__(self, signal_name: str, path: Path | None):
        where = f"saved {path} at the step boundary; continue with --resume auto" if path is not None else \
            "stopped at the step boundary (no run folder: nothing saved)"
        super().__init__(f"{signal_name}: {where}")
        self.signal_name, self.path = signal_name, path
        self.exit_code = 128 + getattr(signal, signal_name, signal.SIGINT).value


class StopSignals:
    """SIGINT/SIGTERM set a flag instead of killing; a second SIGINT kills as usual. Under torchrun every
    rank must stop at the same step (each joins the save), so the ranks agree on the flag with one
    all-reduce, only at the steps where the loop reads its losses anyway (`--log_interval`): a step in
    between never waits on the host for it."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        self.name: str | None = None
        self.previous = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():  # signal handlers live on the main thread
            for name in self.SIGNALS:
                self.previous[name] = signal.signal(getattr(signal, name), self._handle)
        return self

    def __exit__(self, *exc):
        for name, handler in self.previous.items():
            signal.signal(getattr(signal, name), handler)
        return False

    def _handle(self, signum, frame):
        if self.name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now, without saving
        self.name = signal.Signals(signum).name

    def requested(self, device: torch.device, agree: bool) -> bool:
        if distributed.world_size() > 1:
            return agree and distributed.mean_across_ranks(float(self.name is not None), device) > 0
        return self.name is not None
