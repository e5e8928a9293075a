"""What `videomae pretrain` and `videomae finetune` share besides their recipes: checked flags -> a `Trainer`
(resumed or new, its folder begun), and at the end the exported weights and the curves."""

from __future__ import annotations

from pathlib import Path

from videomae.train.recipe import Options, Recipe, Schedule
from videomae.train.run import Run, resume_path
from videomae.train.schedule import scaled_lr
from videomae.train.step import StepConfig
from videomae.train.trainer import Trainer


def trainer_for(args, run: Run, recipe: Recipe, pretraining: bool) -> Trainer:
    """The trainer of `recipe` with the flags' switches (resolved for this device: args.json records them),
    restored from the checkpoint the checks chose, then the run folder begun (lock, logs, args.json)."""
    config = StepConfig.from_args(args).resolve(run.device, pretraining=pretraining)
    args.step = config.as_dict()
    trainer = Trainer(recipe, Options.from_args(args, config), run)
    start = resume_path(args, run.output_dir)
    if start is not None:
        trainer.resume(start)
        pos = trainer.position
        run.say(f"resumed from {start} at epoch {pos.epoch + 1}, step {pos.step} (global step {pos.global_step})")
    run.begin(args, resume_step=trainer.position.global_step if start is not None else None)
    return trainer


def official_schedule(args, run: Run, batches: int, videos: int, total_batch: int) -> Schedule:
    """The official lr / weight-decay schedule for `batches` loader batches per epoch (of `videos` videos), its lr
    scaled by `total_batch` (what each command counts as one step's batch); no full step is one line."""
    steps_per_epoch = batches // args.accum_iter
    if steps_per_epoch < 1:
        raise ValueError(f"{videos} videos make no full step of --batch_size {args.batch_size} x "
                         f"--accum_iter {args.accum_iter} x {run.info.world_size} process(es)")
    return Schedule.official(scaled_lr(args.lr, total_batch), scaled_lr(args.min_lr, total_batch), args.epochs,
                             steps_per_epoch, args.warmup_epochs, args.warmup_steps, args.weight_decay,
                             args.weight_decay_end)


def finish(run: Run, trainer: Trainer, outputs: list[Path]) -> list[Path]:
    """Export the weights (model.pth, model.safetensors), plot the curves, and list what the run wrote."""
    exported = run.export(trainer.model, trainer.options.fsdp)
    if not run.info.is_main:
        return []
    from videomae.train.logs import read_jsonl
    from videomae.train.plots import accuracy_curve, training_curves

    plots = training_curves(read_jsonl(run.log.steps_path), run.output_dir)
    if run.log.epochs_path.exists():  # none before the first epoch ends (--max_steps)
        plots += accuracy_curve(read_jsonl(run.log.epochs_path), run.output_dir)  # [] without validation
    written = [*exported, *outputs, *plots]
    run.say("wrote:\n" + "\n".join(f"  {p}" for p in written))
    return written


def describe(run: Run, what: str, trainer: Trainer, total_batch: int) -> None:
    """The run's first line: what, on how much, for how long, at which lr, precision and device."""
    schedule = trainer.recipe.schedule
    params = sum(p.numel() for p in trainer.model.parameters()) / 1e6
    world = run.info.world_size
    run.say(f"{what.format(params=f'{params:.2f}M params')}: {schedule.epochs} epochs x {schedule.steps_per_epoch} "
            f"steps, global batch {total_batch} clips, lr {float(max(schedule.lr)):.3g}, {trainer.precision.name} on "
            f"{run.device}" + (f" x {world} processes" if world > 1 else ""))
