"""What every run shares: process setup, seeding, the resumable loop over epochs, TrainState files, exports.

SIGINT and SIGTERM (Ctrl-C, a cluster's preemption) do not kill a run: the step in flight finishes, a
TrainState is written at that step boundary, and the run exits with `Interrupted` (exit status 130 / 143)
so that `--resume auto` continues it bit for bit.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from videomae.train import distributed
from videomae.train import state as ckpt
from videomae.train.distributed import DistInfo
from videomae.train.engine import Position, Trainer
from videomae.train.logs import NullLog, RunLog


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global generator, for third-party code
    torch.manual_seed(seed)


@dataclass
class Setup:
    info: DistInfo
    device: torch.device
    output_dir: Path
    log: NullLog = field(default_factory=NullLog)

    def say(self, text: str) -> None:
        if self.info.is_main:
            print(text, flush=True)


def cpu_threads(num_workers: int) -> None:
    """On CPU, leave a core to each loader worker: oversubscribed intra-op threads run many times slower.
    An explicit OMP_NUM_THREADS (torchrun sets 1) wins."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - num_workers))


def setup(args) -> Setup:
    info = distributed.from_env()
    device = distributed.pick_device(args.device, info)
    if device.type == "cpu":
        cpu_threads(args.num_workers)
    distributed.init(info, device)
    out = Path(args.output_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    return Setup(info, device, out)


def resume_path(args, output_dir: Path) -> Path | None:
    """The TrainState to continue from: the one the command line checks chose (`resume_from`), else
    `--resume FILE`, or for `--resume auto` the newest valid one in output_dir (None: a fresh start)."""
    if getattr(args, "resume_from", None):
        return Path(args.resume_from)
    if not args.resume:
        return None
    if args.resume == "auto":
        return ckpt.newest_valid(output_dir)[0]
    return Path(args.resume)


def start_fresh(s: Setup, args) -> None:
    """A new run. The command line refused a used folder unless --overwrite was given; then the earlier
    run's files go now (never before every check passed)."""
    if s.info.is_main and getattr(args, "overwrite", False):
        gone = ckpt.clear_run(s.output_dir)
        if gone:
            s.say(f"--overwrite: deleted {len(gone)} file(s) of the earlier run in {s.output_dir}")
    distributed.barrier()


class EpochMeter:
    """The epoch's loss sum and step count, carried across a resume in the TrainState, so the epoch mean
    logged after a mid-epoch resume is the uninterrupted run's. Also times the wait for each batch."""

    def __init__(self, accum_iter: int = 1):
        self.loss_sum, self.count, self.accum_iter = 0.0, 0, accum_iter
        self.waits: collections.deque[float] = collections.deque()  # per micro-batch, until its step is logged

    def state(self) -> dict:
        return {"loss_sum": self.loss_sum, "count": self.count}

    def load(self, state: dict | None) -> None:
        self.loss_sum, self.count = (state["loss_sum"], state["count"]) if state else (0.0, 0)

    def mean(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")

    def batches(self, it):
        """`it`, timing each `next` (the data wait of the step that asked)."""
        while True:
            start = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.waits.append(time.perf_counter() - start)
            yield batch

    def take_wait(self) -> float:
        """The data wait of the oldest step not yet logged (steps are logged in order, maybe lazily)."""
        n = min(self.accum_iter, len(self.waits))
        return sum(self.waits.popleft() for _ in range(n))


class MeteredLog:
    """Forwards to the run's log; counts each step's loss into the epoch meter and adds the data wait."""

    def __init__(self, log, meter: EpochMeter):
        self.log, self.meter = log, meter

    def step(self, row: dict) -> None:
        if row.get("loss") is not None:
            self.meter.loss_sum += row["loss"]
            self.meter.count += 1
        row["data_wait_s"] = round(self.meter.take_wait(), 6)
        self.log.step(row)

    def __getattr__(self, name):
        return getattr(self.log, name)


def open_log(s: Setup, args, trainer: Trainer, resume_step: int | None) -> None:
    if s.info.is_main:
        s.output_dir.mkdir(parents=True, exist_ok=True)
        s.log = RunLog(s.output_dir, getattr(args, "log_dir", None), resume_step=resume_step,
                       tensorboard=not getattr(args, "no_tensorboard", False))
    trainer.log = MeteredLog(s.log, _meter_of(trainer))


def save_args(s: Setup, args) -> None:
    if s.info.is_main:
        (s.output_dir / "args.json").write_text(json.dumps(vars(args), indent=1, default=str))


class CheckpointWriter:
    """Writes resumable checkpoints from rank 0 (every rank joins the state gathering).
    `model` is the bare module (not the DDP / torch.compile wrapper), so keys are the official ones."""

    def __init__(self, s: Setup, model: nn.Module, optimizer, trainer: Trainer, args, fsdp: bool):
        self.s, self.model, self.optimizer, self.trainer = s, model, optimizer, trainer
        self.args, self.fsdp = args, fsdp

    def save(self, name: str, next_pos: Position) -> Path:
        # Every rank reads the pending steps first (a collective): the skip count and the epoch sums are then
        # complete, and no rank waits alone in a reduction.
        skipped = self.trainer.guard.total
        sums = _meter_of(self.trainer).state() if next_pos.step else None
        model_sd = ckpt.model_state(self.model, self.fsdp)
        optim_sd = ckpt.optimizer_state(self.model, self.optimizer, self.fsdp)
        rngs = ckpt.gather_rng_states()
        path = self.s.output_dir / name
        if self.s.info.is_main:
            scaler = self.trainer.precision.scaler
            ckpt.atomic_save({
                "format": ckpt.FORMAT, "model": model_sd, "optimizer": optim_sd,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "next_epoch": next_pos.epoch, "next_step": next_pos.step, "global_step": next_pos.global_step,
                "skipped_steps": skipped, "world_size": self.s.info.world_size,
                "rng": rngs, "args": plain_args(self.args), "epoch_sums": sums,
            }, path)
            ckpt.prune(self.s.output_dir, self.args.keep_last)
        distributed.barrier()
        return path


def plain_args(args) -> dict:
    """The run's arguments as plain JSON data (what TrainState and weight files store)."""
    return json.loads(json.dumps({k: v for k, v in vars(args).items() if not k.startswith("_")}, default=str))


def _meter_of(trainer: Trainer) -> EpochMeter:
    """The run's epoch meter, kept on the trainer (restore() fills it before open_log() wires it in)."""
    if not hasattr(trainer, "meter"):
        trainer.meter = EpochMeter(trainer.accum_iter)
    return trainer.meter


def restore(path: Path, s: Setup, model: nn.Module, optimizer, trainer: Trainer, fsdp: bool) -> Position:
    """Model (bare module), optimizer, scaler, position and this rank's RNG states from a checkpoint."""
    state = ckpt.read(path)
    if state["world_size"] != s.info.world_size:
        raise ValueError(f"{path} was written by {state['world_size']} process(es), this run has "
                         f"{s.info.world_size}: the data order would differ; resume with the same world size")
    ckpt.load_model_state(model, state["model"], fsdp)
    ckpt.load_optimizer_state(model, optimizer, state["optimizer"], fsdp)
    if trainer.precision.scaler is not None and state.get("scaler"):
        trainer.precision.scaler.load_state_dict(state["scaler"])
    trainer.guard.total = state.get("skipped_steps", 0)
    _meter_of(trainer).load(state.get("epoch_sums"))
    ckpt.set_rng_state(state["rng"][s.info.rank])
    return Position(state["next_epoch"], state["next_step"], state["global_step"])


def loop(s: Setup, args, trainer: Trainer, writer: CheckpointWriter, position: Position, epochs: int,
         steps_per_epoch: int, batches_for: Callable[[Position], object], loss_fn: Callable,
         end_of_epoch: Callable[[int, dict], dict] | None = None) -> Position:
    """Epochs from `position` on; checkpoints every `save_ckpt_freq` epochs, every `save_ckpt_steps`
    optimizer steps, and at the end (also when `max_steps` stops the run mid-epoch)."""

    meter = _meter_of(trainer)
    with StopSignals() as stop:

        def save_and_exit(pos: Position) -> None:
            at_epoch_end = pos.step == 0 and pos.epoch > 0
            name = ckpt.checkpoint_name(pos.epoch - 1) if at_epoch_end else ckpt.checkpoint_name(pos.epoch, pos.step)
            raise Interrupted(stop.name, writer.save(name, pos))

        interval = max(1, getattr(args, "log_interval", 1))

        def after_step(pos: Position) -> None:
            if stop.requested(s.device, agree=pos.global_step % interval == 0):
                save_and_exit(pos)
            if args.save_ckpt_steps and pos.global_step % args.save_ckpt_steps == 0 and pos.step < steps_per_epoch:
                writer.save(ckpt.checkpoint_name(pos.epoch, pos.step), pos)

        while position.epoch < epochs and not trainer.done(position):
            start = time.perf_counter()
            if position.step == 0:
                meter.load(None)
            batches = meter.batches(iter(batches_for(position)))
            try:
                stats = trainer.run_epoch(batches, steps_per_epoch, loss_fn, position, after_step,
                                          desc=f"epoch {position.epoch + 1}/{epochs}")
            except Exception:
                # A signal also reaches the loader's workers, which then die: the error that follows is
                # the signal's doing. The model is still at the last step boundary, so save there.
                if stop.name is None:
                    raise
                save_and_exit(position)
            loss = meter.mean()
            if position.step < steps_per_epoch:  # stopped by --max_steps inside the epoch
                writer.save(ckpt.checkpoint_name(position.epoch, position.step), position)
                s.say(f"stopped after --max_steps {args.max_steps} optimizer steps (epoch {position.epoch + 1}, "
                      f"step {position.step}/{steps_per_epoch}); loss {loss:.4f}")
                break
            epoch = position.epoch
            extra = end_of_epoch(epoch, stats) if end_of_epoch else {}
            s.say(f"epoch {epoch + 1}/{epochs}  loss {loss:.4f}  lr {stats['lr']:.2e}  "
                  + "".join(f"{k} {v}  " for k, v in extra.items() if not isinstance(v, dict))
                  + f"({time.perf_counter() - start:.1f}s)")
            position = Position(epoch + 1, 0, position.global_step)
            s.log.epoch({"epoch": epoch, "global_step": position.global_step, "train_loss": loss,
                         "train_lr": stats["lr"], "skipped_steps": stats["skipped_steps"], **extra})
            if (epoch + 1) % args.save_ckpt_freq == 0 or epoch + 1 == epochs or trainer.done(position):
                writer.save(ckpt.checkpoint_name(epoch), position)
            if stop.requested(s.device, agree=True):
                save_and_exit(position)
    return position


class Interrupted(Exception):
    """SIGINT/SIGTERM: a TrainState was written at the step boundary; the run stops."""

    def __init__(self, signal_name: str, path: Path):
        super().__init__(f"{signal_name}: saved {path} at the step boundary; continue with --resume auto")
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


def export_weights(s: Setup, model: nn.Module, fsdp: bool, args=None) -> list[Path]:
    """Final weights of the bare module in the official layout (.pth: `{'model': sd}` for pretraining,
    `{'module': sd}` for a classifier, as `videomae.save_checkpoint`) and as safetensors."""
    sd = ckpt.model_state(model, fsdp)
    if not s.info.is_main:
        return []
    from safetensors.torch import save_file

    latest = ckpt.latest_checkpoint(s.output_dir)  # the resumable one, listed first in the summary
    pth, st = s.output_dir / "model.pth", s.output_dir / "model.safetensors"
    key = "model" if any(k.startswith("encoder.") for k in sd) else "module"
    # The arguments ride along (as in official files), so `evaluate`/`visualize` can rebuild the model.
    ckpt.atomic_save({key: sd, **({"args": plain_args(args)} if args is not None else {})}, pth)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st), metadata={"format": "pt"})
    return ([latest] if latest is not None else []) + [pth, st]
