"""The optimizer-step loop shared by pretraining and fine-tuning, and the mixed-precision policy.

bf16 autocast by default on GPU, fp32 on CPU; fp16 runs with a GradScaler. A step whose loss or
gradients are not finite is skipped (the scaler does this for fp16) and counted; `max_skipped` such
steps in a row stop the run with `TrainingDiverged` instead of silently training on garbage.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from videomae.train import distributed
from videomae.train.logs import NullLog, Throughput

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


class TrainingDiverged(RuntimeError):
    """Too many consecutive optimizer steps had inf/NaN losses or gradients."""


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


class Precision:
    """Autocast context and (for fp16) the GradScaler, by name: bf16 | fp16 | fp32."""

    def __init__(self, name: str, device: torch.device):
        if name not in PRECISIONS[1:]:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
        self.name, self.device = name, device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    def autocast(self):
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


@dataclass
class Position:
    """Where a run is: `step` optimizer steps done inside `epoch`, `global_step` in total."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0


class StepGuard:
    """Counts skipped (non-finite) optimizer steps; raises after `max_in_a_row` consecutive ones."""

    def __init__(self, max_in_a_row: int = 20):
        self.max_in_a_row, self.in_a_row, self.total = max_in_a_row, 0, 0

    def update(self, skipped: bool, position: Position, precision: str) -> None:
        if not skipped:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.total += 1
        if self.max_in_a_row and self.in_a_row >= self.max_in_a_row:
            hint = " (fp16 overflows: try --precision bf16)" if precision == "fp16" else ""
            raise TrainingDiverged(
                f"{self.in_a_row} optimizer steps in a row had inf/NaN loss or gradients (last at epoch "
                f"{position.epoch}, step {position.global_step}); stopping. Lower --lr, set --clip_grad{hint}")


def grad_norm(params: list[torch.Tensor], clip: float | None = None) -> float:
    """Total L2 norm of the gradients, clipped to `clip` when given (FSDP2's DTensor norms gathered)."""
    if clip:
        norm = nn.utils.clip_grad_norm_(params, clip)
    else:
        grads = [p.grad for p in params if p.grad is not None]
        norm = nn.utils.get_total_norm(grads) if grads else torch.zeros(())
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


class Trainer:
    """Runs optimizer steps: schedule -> `accum_iter` micro-batches (autocast, scaled backward) ->
    unscale, clip, non-finite check, step. `loss_fn(batch) -> (loss, num_clips)` does the model part."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, lr_schedule: np.ndarray,
                 wd_schedule: np.ndarray | None, precision: Precision, *, accum_iter: int = 1,
                 clip_grad: float | None = None, max_skipped: int = 20, max_steps: int | None = None,
                 log=None):
        self.model, self.optimizer, self.precision = model, optimizer, precision
        self.lr_schedule, self.wd_schedule = lr_schedule, wd_schedule
        self.accum_iter, self.clip_grad, self.max_steps = accum_iter, clip_grad, max_steps
        self.guard = StepGuard(max_skipped)
        self.log = log or NullLog()
        self.params = [p for p in model.parameters() if p.requires_grad]

    def done(self, position: Position) -> bool:
        return bool(self.max_steps) and position.global_step >= self.max_steps

    def _set_schedule(self, global_step: int) -> float:
        it = min(global_step, len(self.lr_schedule) - 1)
        lr = float(self.lr_schedule[it])
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            if self.wd_schedule is not None and group["weight_decay"] > 0:
                group["weight_decay"] = float(self.wd_schedule[it])
        return lr

    def _no_sync(self, last: bool):
        if not last and isinstance(self.model, nn.parallel.DistributedDataParallel):
            return self.model.no_sync()  # gradients are all-reduced once, on the last micro-batch
        return contextlib.nullcontext()

    def step(self, micro_batches: list, loss_fn: Callable, position: Position) -> dict:
        """One optimizer step over `micro_batches` -> its log row (loss averaged over micro-batches)."""
        lr = self._set_schedule(position.global_step)
        scaler = self.precision.scaler
        losses, clips = [], 0
        for i, batch in enumerate(micro_batches):
            with self._no_sync(i == len(micro_batches) - 1):
                with self.precision.autocast():
                    loss, n = loss_fn(batch)
                loss = loss.float()
                losses.append(loss.detach())
                clips += n
                scaled = loss / len(micro_batches)
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
        loss_value = float(torch.stack(losses).mean())
        loss_value = distributed.mean_across_ranks(loss_value, losses[0].device)
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        norm = grad_norm(self.params, self.clip_grad)
        if scaler is not None:
            # The scaler skips the step itself when it found inf/NaN gradients; a lowered scale tells us.
            before = scaler.get_scale()
            scaler.step(self.optimizer)
            scaler.update()
            skipped = scaler.get_scale() < before
        else:
            skipped = not (math.isfinite(loss_value) and math.isfinite(norm))
            skipped = distributed.mean_across_ranks(float(skipped), losses[0].device) > 0  # every rank agrees
            if not skipped:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.guard.update(skipped, position, self.precision.name)
        position.step += 1
        position.global_step += 1
        row = {"step": position.global_step, "epoch": position.epoch, "loss": loss_value if not skipped else None,
               "lr": lr, "grad_norm": norm if math.isfinite(norm) else None, "clips": clips, "skipped": skipped}
        if scaler is not None:
            row["loss_scale"] = scaler.get_scale()
        return row

    def run_epoch(self, batches: Iterator, steps_per_epoch: int, loss_fn: Callable, position: Position,
                  after_step: Callable[[Position], None] | None = None, desc: str = "") -> dict:
        """Optimizer steps from `position.step` to the end of the epoch (or `max_steps`) -> epoch means."""
        bar = self.log.bar(steps_per_epoch, position.step, desc)
        speed = Throughput()
        losses, lr = [], 0.0
        try:
            while position.step < steps_per_epoch and not self.done(position):
                micro = [next(batches) for _ in range(self.accum_iter)]
                row = self.step(micro, loss_fn, position)
                row["clips_per_s"] = speed.add(row["clips"] * distributed.world_size())
                self.log.step(row)
                if row["loss"] is not None:
                    losses.append(row["loss"])
                lr = row["lr"]
                bar.set_postfix_str(f"loss {_fmt(row['loss'])}  lr {lr:.2e}  {row['clips_per_s']:.1f} clips/s")
                bar.update(1)
                if after_step is not None:
                    after_step(position)
        finally:
            bar.close()
        return {"loss": float(np.mean(losses)) if losses else float("nan"), "lr": lr,
                "skipped_steps": self.guard.total}


def _fmt(v: float | None) -> str:
    return "skipped" if v is None else f"{v:.4f}"
