"""What a run trains (`Recipe`: model, loss, data, optimizer groups, schedule) and how the trainer runs it
(`Options`). `videomae pretrain` and `videomae finetune` each state only their recipe (videomae/train/pretrain.py,
finetune.py); `Trainer` (videomae/train/trainer.py) does the rest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from videomae.train.schedule import cosine_schedule
from videomae.train.step import StepConfig


@dataclass
class AdamW:
    """The official recipes' optimizer: AdamW over `optim.param_groups` (no decay on biases, norms, the mask token
    and positions; `layer_decay` scales each block's lr for fine-tuning)."""

    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    layer_decay: float | None = None


@dataclass
class Schedule:
    """One value per optimizer step: `lr` float64 [epochs * steps_per_epoch], `weight_decay` the same or None
    (constant, as the optimizer groups set it)."""

    lr: np.ndarray
    epochs: int = 1
    weight_decay: np.ndarray | None = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.lr) // self.epochs

    @classmethod
    def official(cls, lr: float, min_lr: float, epochs: int, steps_per_epoch: int, warmup_epochs: int = 0,
                 warmup_steps: int = -1, weight_decay: float = 0.05, weight_decay_end: float | None = None) -> Schedule:
        """The official scripts' `utils.cosine_scheduler`: linear warmup from 0, per-step cosine to `min_lr`;
        weight decay cosine to `weight_decay_end` when given."""
        wd = None if weight_decay_end is None else cosine_schedule(weight_decay, weight_decay_end, epochs,
                                                                   steps_per_epoch)
        return cls(cosine_schedule(lr, min_lr, epochs, steps_per_epoch, warmup_epochs, warmup_steps=warmup_steps),
                   epochs, wd)

    @classmethod
    def constant(cls, lr: float, steps: int = 1) -> Schedule:
        return cls(np.full(max(1, steps), lr, dtype=np.float64))


@dataclass
class Recipe:
    """What a run trains. The trainer does everything else (device, wrapping, optimizer, loop, checkpoints, logs).

    model:     the bare module, its weights initialized (checkpoints and exports use its keys)
    loss:      `loss(model, batch) -> scalar` on a device batch; `model` is the module the trainer runs (under
               torchrun a DDP wrapper: reach the bare module's own methods with `distributed.unwrap(model)`)
    schedule:  lr (and weight decay) per optimizer step, and the epochs
    optimizer: AdamW's hyperparameters and groups
    data:      the training batches: `set_epoch(epoch, start)` (skip the first `start` batches) then iteration,
               `len(data)` batches per epoch (a `videomae.data.VideoLoader`); None when `step` is fed by hand
    prepare:   a loader batch -> the device batch, outside the step (one call: copy, augment on the device)
    end_of_epoch: `(epoch) -> {name: value}` after each epoch (validation, previews), logged with the epoch
    """

    model: nn.Module
    loss: Callable[[nn.Module, Any], torch.Tensor]
    schedule: Schedule
    optimizer: AdamW = field(default_factory=AdamW)
    data: Any = None
    prepare: Callable[[Any], Any] | None = None
    accum_iter: int = 1
    clip_grad: float | None = None
    end_of_epoch: Callable[[int], dict] | None = None


@dataclass
class Options:
    """How the trainer runs a recipe, never what it computes."""

    step: StepConfig = field(default_factory=StepConfig)
    log_interval: int = 1  # optimizer steps between reads of the device (each read waits for it)
    max_steps: int | None = None  # stop after this many optimizer steps (the schedule is unchanged)
    max_skipped: int = 20  # stop after this many non-finite steps in a row (0: never)
    save_ckpt_freq: int = 1  # epochs between checkpoints (and at the end)
    save_ckpt_steps: int = 0  # optimizer steps between mid-epoch checkpoints (0: none)
    keep_last: int = 3  # checkpoints kept (0: all)
    fsdp: bool = False  # under torchrun: FSDP2 instead of DDP

    @classmethod
    def from_args(cls, args, step: StepConfig) -> Options:
        return cls(step=step, log_interval=max(1, getattr(args, "log_interval", 10)), max_steps=args.max_steps,
                   max_skipped=args.max_skipped_steps, save_ckpt_freq=args.save_ckpt_freq,
                   save_ckpt_steps=args.save_ckpt_steps, keep_last=args.keep_last, fsdp=args.fsdp)


class Batches:
    """Batches held in memory as a trainer's data (the loader's protocol): one list per epoch, or one list for
    every epoch. `set_epoch(epoch, start)`, then that epoch's batches from `start` on; `len`: batches per epoch."""

    def __init__(self, per_epoch: list[list]):
        self.per_epoch, self.epoch, self.start = per_epoch, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return len(self.per_epoch[0])

    def __iter__(self):
        return iter(self.per_epoch[self.epoch % len(self.per_epoch)][self.start:])
