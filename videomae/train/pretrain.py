"""`videomae pretrain`: masked video pretraining with the official recipe."""

from __future__ import annotations

from pathlib import Path

import torch

from videomae.train import distributed
from videomae.train.data import EpochSampler, make_loader
from videomae.train.engine import (
    Position,
    Precision,
    StepConfig,
    Trainer,
    apply_config,
    make_optimizer,
    pretrain_objective,
)
from videomae.train.plots import training_curves
from videomae.train.run import (
    CheckpointWriter,
    export_weights,
    loop,
    open_log,
    restore,
    resume_path,
    save_args,
    seed_everything,
    setup,
    start_fresh,
)
from videomae.train.schedule import cosine_schedule, scaled_lr


def build_model(args) -> torch.nn.Module:
    from videomae.interop.pretrained import build_for_weights  # --init an HF folder / Hub id: its config's model

    depth = {} if args.decoder_depth is None else {"decoder_depth": args.decoder_depth}
    return build_for_weights(
        getattr(args, "init", None), args.model, given=getattr(args, "_explicit", None), num_frames=args.num_frames,
        img_size=args.input_size, tubelet_size=args.tubelet_size, drop_path_rate=args.drop_path,
        normalize_target=args.normlize_target, use_checkpoint=args.use_checkpoint, **depth,
    )


def build_dataset(args, model, gpu_aug: bool):
    from videomae.data.datasets import MaskGenerator, PretrainDataset
    from videomae.data.lists import load_records
    from videomae.data.skips import SkipLog

    grid = (args.num_frames // args.tubelet_size, args.input_size // model.patch_size,
            args.input_size // model.patch_size)
    decoder_ratio = args.decoder_mask_ratio if args.decoder_mask_type == "run_cell" else None
    mask_fn = MaskGenerator(args.mask_type, args.mask_ratio, grid, decoder_ratio)
    records = load_records(args.data_path, root=args.data_root, fmt=args.list_format)
    return PretrainDataset(
        records, num_frames=args.num_frames, sampling_rate=args.sampling_rate, input_size=args.input_size,
        mask_fn=mask_fn, num_sample=args.num_sample, sampling=args.sampling, gpu_aug=gpu_aug, seed=args.seed,
        backend=args.video_backend, skip_log=SkipLog(), scales=args.crop_scales,
    )


def preview_clip(dataset, args) -> torch.Tensor | None:
    """One fixed clip for the per-epoch reconstruction preview (the first readable video)."""
    from videomae.data.decode import VideoReadError
    from videomae.visualize import load_clip

    for record in dataset.records[:20]:
        if record.is_frame_folder:
            continue
        try:
            return load_clip(record.path, args.num_frames, args.sampling_rate, args.input_size)[None]
        except VideoReadError:
            continue
    return None


def run(args) -> Path:
    s = setup(args)
    seed_everything(args.seed)  # same initial weights on every rank (FSDP2 does not broadcast them)
    model = build_model(args)
    if args.init:  # continue from existing weights (official, MAE-ST, Hugging Face or ours): domain adaptation
        from videomae.checkpoint import load_checkpoint

        s.say(f"initialized from {load_checkpoint(model, args.init)}")
    model = model.to(s.device)
    seed_everything(args.seed + s.info.rank)
    config = StepConfig.from_args(args).resolve(s.device, pretraining=True)
    args.step = config.as_dict()  # the switches in force, resolved for this device: into args.json
    precision = Precision(config.precision, s.device)
    gpu_aug = s.device.type == "cuda" if args.gpu_aug is None else args.gpu_aug
    dataset = build_dataset(args, model, gpu_aug)

    world = s.info.world_size
    sampler = EpochSampler(len(dataset), s.info, seed=args.seed, shuffle=True)
    steps_per_epoch = sampler.per_rank // args.batch_size // args.accum_iter
    if steps_per_epoch < 1:
        raise ValueError(f"{len(dataset)} videos make no full step of --batch_size {args.batch_size} x "
                         f"--accum_iter {args.accum_iter} x {world} process(es)")
    total_batch = args.batch_size * args.num_sample * args.accum_iter * world
    lr, min_lr = scaled_lr(args.lr, total_batch), scaled_lr(args.min_lr, total_batch)
    lr_schedule = cosine_schedule(lr, min_lr, args.epochs, steps_per_epoch, args.warmup_epochs,
                                  warmup_steps=args.warmup_steps)
    wd_schedule = cosine_schedule(args.weight_decay, args.weight_decay_end, args.epochs, steps_per_epoch) \
        if args.weight_decay_end is not None else None

    core = model  # checkpoints, exports and previews use the bare module
    apply_config(core, config)
    model = distributed.wrap(model, s.info, s.device, fsdp=args.fsdp)
    optimizer = make_optimizer(core, lr, args.weight_decay, betas=args.opt_betas or (0.9, 0.95), eps=args.opt_eps,
                               config=config)
    from videomae.data.feed import DeviceFeed

    prepare = DeviceFeed(s.device, args.input_size)  # side-stream copy, batched crop/resize, uint8 clips

    objective = pretrain_objective(model, config, core)
    trainer = Trainer(model, optimizer, lr_schedule, wd_schedule, precision, accum_iter=args.accum_iter,
                      clip_grad=args.clip_grad, max_skipped=args.max_skipped_steps, max_steps=args.max_steps,
                      log_interval=getattr(args, "log_interval", 10), config=config, prepare=prepare)
    writer = CheckpointWriter(s, core, optimizer, trainer, args, args.fsdp)

    position = Position()
    start_from = resume_path(args, s.output_dir)
    if start_from is not None:
        position = restore(start_from, s, core, optimizer, trainer, args.fsdp)
        s.say(f"resumed from {start_from} at epoch {position.epoch + 1}, step {position.step} "
              f"(global step {position.global_step})")
    else:
        start_fresh(s, args)
    open_log(s, args, trainer, position.global_step if start_from is not None else None)
    save_args(s, args)
    s.say(f"pretraining {args.model} ({sum(p.numel() for p in core.parameters()) / 1e6:.2f}M params) on "
          f"{len(dataset)} videos from {args.data_path}: {args.epochs} epochs x {steps_per_epoch} steps, "
          f"global batch {total_batch} clips, lr {lr:.3g}, {precision.name} on {s.device}"
          + (f" x {world} processes" if world > 1 else ""))

    from videomae.data.datasets import ClipCollate

    collate = ClipCollate(repeated=args.num_sample > 1, token_ids=True)  # masks -> TokenIds, checked once

    def batches_for(pos: Position):
        dataset.set_epoch(pos.epoch)
        sampler.set_position(pos.epoch, skip=pos.step * args.accum_iter * args.batch_size)
        return make_loader(dataset, sampler, args.batch_size, args.num_workers, collate, args.seed, drop_last=True,
                           pin_memory=s.device.type == "cuda")

    previews = s.info.is_main and not args.fsdp and args.preview
    clip = preview_clip(dataset, args) if previews else None
    mark = dataset.skip_log.mark()

    def end_of_epoch(epoch: int, stats: dict) -> dict:
        nonlocal mark
        skipped = dataset.skip_log.since(mark)
        mark = dataset.skip_log.mark()
        if skipped.count:
            s.say(f"epoch {epoch + 1}: skipped unreadable videos: {skipped}")
        if clip is not None:
            png = s.output_dir / "preview" / f"epoch_{epoch + 1:04d}.png"
            _preview(core, clip.to(s.device), args, png)
            s.log.image("reconstruction", png, epoch + 1)
        return {"skipped_files": len(skipped.files)} if skipped.count else {}

    loop(s, args, trainer, writer, position, args.epochs, steps_per_epoch, batches_for, objective, end_of_epoch)

    exported = export_weights(s, core, args.fsdp, args)
    if s.info.is_main:
        skipped = dataset.skip_log.since(None)
        if skipped.count:
            s.say(f"unreadable videos over the run: {skipped}")
        from videomae.train.logs import read_jsonl

        plots = training_curves(read_jsonl(s.log.steps_path), s.output_dir)
        pictures = []
        if clip is not None:
            png, gif = s.output_dir / "reconstruction.png", s.output_dir / "reconstruction.gif"
            _preview(core, clip.to(s.device), args, png, gif)
            pictures = [png, gif]
        s.log.close()
        s.say("wrote:\n" + "\n".join(f"  {p}" for p in [*exported, *plots, *pictures]))
    distributed.shutdown()
    return s.output_dir


def _preview(model, clip: torch.Tensor, args, png: Path, gif: Path | None = None) -> None:
    from videomae.visualize import preview_mask, save_reconstruction

    png.parent.mkdir(parents=True, exist_ok=True)
    mask = preview_mask(model, clip, args.mask_type, args.mask_ratio, seed=args.seed)
    save_reconstruction(model, clip, mask, png, gif, mask_type=args.mask_type)
