"""The trainer: one object that owns a run, built from a recipe.

    recipe = Recipe(model, pretrain_loss, Schedule.official(...), AdamW(betas=(0.9, 0.95)), data=loader,
                    prepare=feed)
    trainer = Trainer(recipe, Options(step=StepConfig(), log_interval=10), run)
    trainer.fit()                          # the epoch loop, all of it, in `fit` below
    state = trainer.state_dict()           # everything a resume needs; `load_state_dict(state)` continues bit for bit

A `Recipe` says what is trained: the model, its loss, the data, the optimizer groups and the schedule. `Options` say
how the trainer runs it (the step's switches, how often it reads the device, saves, stops). A `Run`
(`videomae.train.run`) says where: this process among its peers, its device, the run folder and its log.
`videomae pretrain` and `videomae finetune` differ only in their recipes; the training-parity run, the study and
`bench/train_step.py` build theirs in a few lines and call `fit` or `step`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from videomae.train import distributed
from videomae.train import state as ckpt
from videomae.train.logs import Throughput
from videomae.train.recipe import Options, Recipe
from videomae.train.run import Interrupted, Run, StopSignals
from videomae.train.step import (
    GraphedStep,
    Precision,
    StepGuard,
    StepOut,
    apply_config,
    build_objective,
    make_optimizer,
    ops_context,
    train_step,
)


@dataclass
class Position:
    """Where a run is: `step` optimizer steps done inside `epoch`, `global_step` in total."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0


# ---------------------------------------------------------------- the trainer


class Trainer:
    """Owns a run: the model on its device (wrapped for DDP/FSDP2), the optimizer, the compiled objective, the
    position, the skip count and the epoch's loss sums. `fit` runs the epochs; `step` one optimizer step."""

    def __init__(self, recipe: Recipe, options: Options | None = None, run: Run | None = None):
        self.recipe, self.options = recipe, options or Options()
        self.run = run or Run.local(_device_of(recipe.model))
        device = self.run.device
        if self.options.step.cuda_graphs and recipe.schedule.weight_decay is not None:
            raise ValueError("cuda_graphs bakes the weight decay into the graph: drop --weight_decay_end")
        self.config = self.options.step.resolve(device)
        self.model = recipe.model.to(device)  # the bare module: checkpoints, exports, previews
        apply_config(self.model, self.config)
        self.wrapped = distributed.wrap(self.model, self.run.info, device, fsdp=self.options.fsdp)
        opt = recipe.optimizer
        self.optimizer = make_optimizer(self.model, float(np.max(recipe.schedule.lr)), opt.weight_decay, opt.betas,
                                        opt.eps, opt.layer_decay, self.config)
        self.objective = build_objective(self.wrapped, self.config, recipe.loss)
        self.precision = Precision(self.config.precision, device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self._train_step = functools.partial(train_step, self.wrapped, self.optimizer, objective=self.objective,
                                             precision=self.precision, clip_grad=recipe.clip_grad, params=self.params)
        self.position = Position()
        self.guard = StepGuard(self.options.max_skipped)
        self.epoch_loss = [0.0, 0]  # the epoch's loss sum and count: its mean survives a mid-epoch resume
        self.last_lr = 0.0
        self.speed = Throughput()
        self._pending: list[tuple[StepOut, Position, float]] = []
        self._waits: collections.deque[float] = collections.deque()  # per micro-batch, until its row is read
        self._graphed: GraphedStep | None = None

    @property
    def device(self) -> torch.device:
        return self.run.device

    @property
    def log(self):
        return self.run.log

    @property
    def done(self) -> bool:
        """`max_steps` reached."""
        return bool(self.options.max_steps) and self.position.global_step >= self.options.max_steps

    # ------------------------------------------------------------ one step

    def step(self, micro_batches: list, flush: bool = True) -> dict | None:
        """One optimizer step over `micro_batches` (loader batches; `recipe.prepare` moves each to the device) at
        the schedule's value for this step. -> its log row, read now when `flush` (one wait for the device),
        else None (the row comes with the next `flush`)."""
        pos = self.position
        lr = self.last_lr = self._set_schedule(pos.global_step)
        prepare = self.recipe.prepare
        batches = [prepare(b) for b in micro_batches] if prepare is not None else list(micro_batches)
        with ops_context(self.config):
            if not self.config.cuda_graphs:
                out = self._train_step(batches)
            else:  # captured at the first step, replayed after; a replay overwrites the outputs: keep this step's
                self._graphed = self._graphed or GraphedStep(self._train_step, batches, self.params, self.optimizer)
                out = self._graphed(batches)
                out = StepOut(out.loss.clone(), out.grad_norm.clone(), out.skipped.clone(), out.clips)
        pos.step += 1
        pos.global_step += 1
        self._pending.append((out, dataclasses.replace(pos), lr))
        return self.flush()[-1] if flush else None

    def _set_schedule(self, global_step: int) -> float:
        schedule = self.recipe.schedule
        it = min(global_step, len(schedule.lr) - 1)
        lr = float(schedule.lr[it])
        for group in self.optimizer.param_groups:
            value = lr * group.get("lr_scale", 1.0)
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(value)  # in place: a captured graph reads this tensor
            else:
                group["lr"] = value
            if schedule.weight_decay is not None and group["weight_decay"] > 0:
                group["weight_decay"] = float(schedule.weight_decay[it])
        return lr

    def flush(self, raise_now: bool = True) -> list[dict]:
        """Read every pending step's loss, grad norm and flag in one transfer (the only wait for the device),
        count them into the guard (may raise TrainingDiverged) and the epoch's loss, and log their rows. No
        collective: the values already agree across ranks (see `train_step`)."""
        if not self._pending:
            if raise_now:
                self.guard.check()
            return []
        pending, self._pending = self._pending, []
        values = torch.stack([torch.stack([o.loss.float(), o.grad_norm.float(), o.skipped.float()])
                              for o, _, _ in pending]).cpu().tolist()
        scale = self.precision.scaler.get_scale() if self.precision.scaler is not None else None
        speed = self.speed.add(sum(o.clips for o, _, _ in pending) * distributed.world_size())
        rows = []
        for (out, pos, lr), (loss, norm, skipped) in zip(pending, values):
            skipped = skipped > 0
            wait = sum(self._waits.popleft() for _ in range(min(self.recipe.accum_iter, len(self._waits))))
            row = {"step": pos.global_step, "epoch": pos.epoch, "loss": None if skipped else loss, "lr": lr,
                   "grad_norm": norm if math.isfinite(norm) else None, "clips": out.clips, "skipped": skipped,
                   "clips_per_s": speed, "data_wait_s": round(wait, 6)}
            if scale is not None:
                row["loss_scale"] = scale
            if not skipped:
                self.epoch_loss[0] += loss
                self.epoch_loss[1] += 1
            self.log.step(row)
            rows.append(row)
            self.guard.update(skipped, pos.epoch, pos.global_step, self.precision.name, raise_now=False)
        if raise_now:
            self.guard.check()
        return rows

    # ------------------------------------------------------------ the epochs

    def fit(self) -> Position:
        """Epochs from `position` to the schedule's end (or `max_steps`). Reads the device every `log_interval`
        steps and at each epoch's end; checkpoints every `save_ckpt_freq` epochs, every `save_ckpt_steps` steps
        and at the end. SIGINT/SIGTERM (Ctrl-C, a cluster's preemption) finish the step in flight, save there and
        raise `Interrupted`, so that a resume continues bit for bit."""
        recipe, opts, pos = self.recipe, self.options, self.position
        epochs, per_epoch = recipe.schedule.epochs, recipe.schedule.steps_per_epoch
        if recipe.data is None or len(recipe.data) < per_epoch * recipe.accum_iter:
            have = "no data" if recipe.data is None else f"{len(recipe.data)} batches per epoch"
            raise ValueError(f"the schedule has {per_epoch} steps of {recipe.accum_iter} batch(es) per epoch, the "
                             f"recipe's data {have}: fit needs both to agree (step() takes batches by hand)")
        with StopSignals() as stop:
            while pos.epoch < epochs and not self.done:
                start = time.perf_counter()
                if pos.step == 0:
                    self.epoch_loss = [0.0, 0]
                bar = self.log.bar(per_epoch, pos.step, f"epoch {pos.epoch + 1}/{epochs}")
                self.speed.reset()
                batches = self._batches()
                try:
                    while pos.step < per_epoch and not self.done:
                        self.step([next(batches) for _ in range(recipe.accum_iter)], flush=False)
                        if pos.global_step % opts.log_interval == 0 or pos.step == per_epoch or self.done:
                            self._read(bar)
                        bar.update(1)
                        if stop.requested(self.device, agree=pos.global_step % opts.log_interval == 0):
                            self._stop(stop.name)
                        if opts.save_ckpt_steps and pos.global_step % opts.save_ckpt_steps == 0 \
                                and pos.step < per_epoch:
                            self.save(ckpt.checkpoint_name(pos.epoch, pos.step))
                except Interrupted:
                    raise
                except Exception:
                    # The loader's workers ignore the signals, but a signal from outside the process group may
                    # still kill one; the model is at the last step boundary, so save there.
                    if stop.name is None:
                        raise
                    self._stop(stop.name)
                finally:
                    batches.close()  # now, not when collected: the loader's epoch ends here (its skips, workers)
                    bar.close()
                loss = self.epoch_loss[0] / self.epoch_loss[1] if self.epoch_loss[1] else float("nan")
                if pos.step < per_epoch:  # --max_steps, inside the epoch
                    self.save(ckpt.checkpoint_name(pos.epoch, pos.step))
                    self.run.say(f"stopped after --max_steps {opts.max_steps} optimizer steps (epoch {pos.epoch + 1}, "
                                 f"step {pos.step}/{per_epoch}); loss {loss:.4f}")
                    break
                epoch = pos.epoch
                extra = recipe.end_of_epoch(epoch) if recipe.end_of_epoch is not None else {}
                self.run.say(f"epoch {epoch + 1}/{epochs}  loss {loss:.4f}  lr {self.last_lr:.2e}  "
                             + "".join(f"{k} {v}  " for k, v in extra.items() if not isinstance(v, dict))
                             + f"({time.perf_counter() - start:.1f}s)")
                self.position = pos = Position(epoch + 1, 0, pos.global_step)
                self.log.epoch({"epoch": epoch, "global_step": pos.global_step, "train_loss": loss,
                                "train_lr": self.last_lr, "skipped_steps": self.guard.total, **extra})
                if (epoch + 1) % opts.save_ckpt_freq == 0 or epoch + 1 == epochs or self.done:
                    self.save(ckpt.checkpoint_name(epoch))
                if stop.requested(self.device, agree=True):
                    self._stop(stop.name)
        return pos

    def _batches(self) -> Iterator:
        """This epoch's batches from the current position on, timing the wait for each."""
        pos, data = self.position, self.recipe.data
        data.set_epoch(pos.epoch, start=pos.step * self.recipe.accum_iter)
        it = iter(data)
        try:
            while True:
                start = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    return
                self._waits.append(time.perf_counter() - start)
                yield batch
        finally:
            if hasattr(it, "close"):  # a generator (VideoLoader): run its end of epoch now
                it.close()

    def _read(self, bar) -> None:
        rows = self.flush()
        if rows:
            r = rows[-1]
            loss = "skipped" if r["loss"] is None else f"{r['loss']:.4f}"
            bar.set_postfix_str(f"loss {loss}  lr {r['lr']:.2e}  {r['clips_per_s']:.1f} clips/s")

    def _stop(self, signal_name: str) -> None:
        pos = self.position
        at_epoch_end = pos.step == 0 and pos.epoch > 0
        name = ckpt.checkpoint_name(pos.epoch - 1) if at_epoch_end else ckpt.checkpoint_name(pos.epoch, pos.step)
        raise Interrupted(signal_name, self.save(name))

    # ------------------------------------------------------------ resuming

    def state_dict(self) -> dict:
        """Everything a resume needs: weights (the bare module's official keys), optimizer, scaler, position, skip
        count, the epoch's loss sums and every rank's RNG states. Reads the pending steps first, so that the counts
        are complete. Every rank calls it (FSDP2 gathers the weights, the RNG states are gathered)."""
        self.flush(raise_now=False)  # no collective; a divergence is raised by the loop's next read
        pos, fsdp, scaler = self.position, self.options.fsdp, self.precision.scaler
        return {
            "model": ckpt.model_state(self.model, fsdp),
            "optimizer": ckpt.optimizer_state(self.model, self.optimizer, fsdp),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "next_epoch": pos.epoch, "next_step": pos.step, "global_step": pos.global_step,
            "skipped_steps": self.guard.total, "world_size": self.run.info.world_size,
            "epoch_sums": {"loss_sum": self.epoch_loss[0], "count": self.epoch_loss[1]} if pos.step else None,
            "rng": ckpt.gather_rng_states(),
        }

    def load_state_dict(self, state: dict) -> None:
        """The inverse of `state_dict` (this rank's RNG states); refuses another world size (the data order would
        differ)."""
        world = self.run.info.world_size
        if state["world_size"] != world:
            raise ValueError(f"the checkpoint was written by {state['world_size']} process(es), this run has "
                             f"{world}: the data order would differ; resume with the same world size")
        ckpt.load_model_state(self.model, state["model"], self.options.fsdp)
        ckpt.load_optimizer_state(self.model, self.optimizer, state["optimizer"], self.options.fsdp)
        if self.precision.scaler is not None and state.get("scaler"):
            self.precision.scaler.load_state_dict(state["scaler"])
        self.guard.total = state.get("skipped_steps", 0)
        sums = state.get("epoch_sums")
        self.epoch_loss = [sums["loss_sum"], sums["count"]] if sums else [0.0, 0]
        ckpt.set_rng_state(state["rng"][self.run.info.rank])
        self.position = Position(state["next_epoch"], state["next_step"], state["global_step"])

    def save(self, name: str) -> Path | None:
        """A resumable checkpoint `name` in the run folder, with the run's arguments (rank 0 writes; every rank
        joins `state_dict`). None when the run has no folder."""
        if self.run.output_dir is None:
            return None
        state = self.state_dict()
        path = self.run.output_dir / name
        if self.run.info.is_main:
            ckpt.atomic_save({"format": ckpt.FORMAT, **state, "args": self.run.args}, path)
            ckpt.prune(self.run.output_dir, self.options.keep_last)
        distributed.barrier()
        return path

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint file (read once, verified against its content hash)."""
        self.load_state_dict(ckpt.read(path))


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))
