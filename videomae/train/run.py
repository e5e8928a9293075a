"""What every run shares: process setup, seeding, the resumable loop over epochs, checkpoints, exports."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from videomae.train import checkpointing as ckpt
from videomae.train import distributed
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
    """`--resume auto` = newest checkpoint in output_dir (None when there is none yet: a fresh start)."""
    if not args.resume:
        return None
    if args.resume == "auto":
        return ckpt.latest_checkpoint(output_dir)
    return Path(args.resume)


def set_aside_old_checkpoints(s: Setup) -> None:
    """A fresh run in a folder holding another run's checkpoints moves them into `previous-<time>/`, so
    a later `--resume auto` can never pick up the other run's newer-looking file."""
    old = ckpt.list_checkpoints(s.output_dir)
    if not s.info.is_main or not old:
        return
    target = s.output_dir / time.strftime("previous-%Y%m%d-%H%M%S")
    target.mkdir()
    for path in old:
        path.rename(target / path.name)
    s.say(f"{s.output_dir} held {len(old)} checkpoint(s) of an earlier run: moved to {target} "
          "(pass --resume auto to continue a run instead)")


def open_log(s: Setup, args, trainer: Trainer, resume_step: int | None) -> None:
    if s.info.is_main:
        s.log = RunLog(s.output_dir, getattr(args, "log_dir", None), resume_step=resume_step,
                       tensorboard=not getattr(args, "no_tensorboard", False))
        trainer.log = s.log


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
                "skipped_steps": self.trainer.guard.total, "world_size": self.s.info.world_size,
                "rng": rngs, "args": json.loads(json.dumps(vars(self.args), default=str)),
            }, path)
            ckpt.prune(self.s.output_dir, self.args.keep_last)
        distributed.barrier()
        return path


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
    ckpt.set_rng_state(state["rng"][s.info.rank])
    return Position(state["next_epoch"], state["next_step"], state["global_step"])


def loop(s: Setup, args, trainer: Trainer, writer: CheckpointWriter, position: Position, epochs: int,
         steps_per_epoch: int, batches_for: Callable[[Position], object], loss_fn: Callable,
         end_of_epoch: Callable[[int, dict], dict] | None = None) -> Position:
    """Epochs from `position` on; checkpoints every `save_ckpt_freq` epochs, every `save_ckpt_steps`
    optimizer steps, and at the end (also when `max_steps` stops the run mid-epoch)."""

    def after_step(pos: Position) -> None:
        if args.save_ckpt_steps and pos.global_step % args.save_ckpt_steps == 0 and pos.step < steps_per_epoch:
            writer.save(ckpt.checkpoint_name(pos.epoch, pos.step), pos)

    while position.epoch < epochs and not trainer.done(position):
        start = time.perf_counter()
        batches = batches_for(position)
        stats = trainer.run_epoch(iter(batches), steps_per_epoch, loss_fn, position, after_step,
                                  desc=f"epoch {position.epoch + 1}/{epochs}")
        if position.step < steps_per_epoch:  # stopped by --max_steps inside the epoch
            writer.save(ckpt.checkpoint_name(position.epoch, position.step), position)
            s.say(f"stopped after --max_steps {args.max_steps} optimizer steps (epoch {position.epoch + 1}, "
                  f"step {position.step}/{steps_per_epoch}); loss {stats['loss']:.4f}")
            break
        epoch = position.epoch
        extra = end_of_epoch(epoch, stats) if end_of_epoch else {}
        s.say(f"epoch {epoch + 1}/{epochs}  loss {stats['loss']:.4f}  lr {stats['lr']:.2e}  "
              + "".join(f"{k} {v}  " for k, v in extra.items() if not isinstance(v, dict))
              + f"({time.perf_counter() - start:.1f}s)")
        position = Position(epoch + 1, 0, position.global_step)
        s.log.epoch({"epoch": epoch, "global_step": position.global_step, "train_loss": stats["loss"],
                     "train_lr": stats["lr"], "skipped_steps": stats["skipped_steps"], **extra})
        if (epoch + 1) % args.save_ckpt_freq == 0 or epoch + 1 == epochs or trainer.done(position):
            writer.save(ckpt.checkpoint_name(epoch), position)
    return position


def export_weights(s: Setup, model: nn.Module, fsdp: bool) -> list[Path]:
    """Final weights of the bare module in the official layout (.pth: `{'model': sd}` for pretraining,
    `{'module': sd}` for a classifier, as `videomae.save_checkpoint`) and as safetensors."""
    sd = ckpt.model_state(model, fsdp)
    if not s.info.is_main:
        return []
    from safetensors.torch import save_file

    latest = ckpt.latest_checkpoint(s.output_dir)  # the resumable one, listed first in the summary
    pth, st = s.output_dir / "model.pth", s.output_dir / "model.safetensors"
    key = "model" if any(k.startswith("encoder.") for k in sd) else "module"
    ckpt.atomic_save({key: sd}, pth)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st), metadata={"format": "pt"})
    return ([latest] if latest is not None else []) + [pth, st]
