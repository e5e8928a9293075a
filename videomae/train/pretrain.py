"""`videomae pretrain`'s recipe: masked video pretraining as the official scripts run it (AdamW betas 0.9/0.95,
lr x total batch / 256, warmup then per-step cosine, tube masks turned into TokenIds by the loader's collate)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from videomae.train import command, distributed
from videomae.train.recipe import AdamW, Recipe
from videomae.train.run import Run, seed_everything


def pretrain_loss(model: nn.Module, batch) -> torch.Tensor:
    """(videos [B, 3, T, H, W] ImageNet-normalized, TokenIds) -> the normalized-pixel MSE over the decoded cubes
    (`ops.norm_pix_mse`): the official objective, forward and loss in one function (one graph under --compile)."""
    videos, ids = batch
    return distributed.unwrap(model).forward_loss(videos, model(videos, ids), ids)


def build_model(args) -> nn.Module:
    from videomae.interop.pretrained import build_for_weights  # --init an HF folder / Hub id: its config's model

    depth = {} if args.decoder_depth is None else {"decoder_depth": args.decoder_depth}
    return build_for_weights(
        getattr(args, "init", None), args.model, given=getattr(args, "_explicit", None), num_frames=args.num_frames,
        img_size=args.input_size, tubelet_size=args.tubelet_size, drop_path_rate=args.drop_path,
        normalize_target=args.normlize_target, use_checkpoint=args.use_checkpoint, **depth,
    )


def build_dataset(args, patch_size: int, gpu_aug: bool):
    from videomae.data.loader import build_pretrain_dataset

    decoder_ratio = args.decoder_mask_ratio if args.decoder_mask_type == "run_cell" else None
    return build_pretrain_dataset(
        args.data_path, root=args.data_root, list_format=args.list_format, num_frames=args.num_frames,
        sampling_rate=args.sampling_rate, input_size=args.input_size, patch_size=patch_size,
        tubelet_size=args.tubelet_size, mask_type=args.mask_type, mask_ratio=args.mask_ratio,
        decoder_mask_ratio=decoder_ratio, num_sample=args.num_sample, sampling=args.sampling,
        crop_scales=args.crop_scales, gpu_aug=gpu_aug, seed=args.seed, backend=args.video_backend,
    )


def recipe(args, run: Run) -> Recipe:
    """The model (from --init when given), the loader, AdamW's groups and the official schedule."""
    from videomae.data.loader import build_loader

    seed_everything(args.seed)  # same initial weights on every rank (FSDP2 does not broadcast them)
    model = build_model(args)
    if args.init:  # continue from existing weights (official, MAE-ST, Hugging Face or ours): domain adaptation
        from videomae.checkpoint import load_checkpoint

        run.say(f"initialized from {load_checkpoint(model, args.init)}")
    seed_everything(args.seed + run.info.rank)
    gpu_aug = run.device.type == "cuda" if args.gpu_aug is None else args.gpu_aug
    dataset = build_dataset(args, model.patch_size, gpu_aug)
    loader = build_loader(dataset, args.batch_size, num_workers=args.num_workers, seed=args.seed, drop_last=True,
                          pin_memory=run.device.type == "cuda", rank=run.info.rank,
                          num_replicas=run.info.world_size)
    schedule = command.official_schedule(args, run, len(loader), len(dataset), total_batch(args, run))
    return Recipe(model, pretrain_loss, schedule, AdamW(args.weight_decay, args.opt_betas or (0.9, 0.95), args.opt_eps),
                  data=loader, prepare=_prepare(args, run), accum_iter=args.accum_iter,
                  clip_grad=args.clip_grad, end_of_epoch=EpochEnd(args, run, model, dataset))


def total_batch(args, run: Run) -> int:
    """Clips per optimizer step over every process: what the lr scales with."""
    return args.batch_size * args.num_sample * args.accum_iter * run.info.world_size


def _prepare(args, run: Run):
    """A loader batch -> (videos, TokenIds) on the device, outside the step: `DeviceFeed` copies it on a side
    stream from pinned memory (overlapping the step before) and, for the `gpu_aug` loader's batches (uint8
    crops + boxes), crops and resizes the whole batch there; clips stay uint8 (the fused ops normalize as they read)."""
    from videomae.data.feed import DeviceFeed

    return DeviceFeed(run.device, args.input_size)


class EpochEnd:
    """After each epoch: the files skipped in it, and the reconstruction preview of one fixed clip (`clip`, None
    off rank 0, under FSDP2 or --no_preview), which the run's final picture shows too."""

    def __init__(self, args, run: Run, model: nn.Module, dataset):
        self.args, self.run, self.model, self.dataset = args, run, model, dataset
        self.clip = preview_clip(dataset, args) if run.info.is_main and not args.fsdp and args.preview else None
        self.mark = dataset.skip_log.mark()

    def __call__(self, epoch: int) -> dict:
        skipped = self.dataset.skip_log.since(self.mark)
        self.mark = self.dataset.skip_log.mark()
        if skipped.count:
            self.run.say(f"epoch {epoch + 1}: skipped unreadable videos: {skipped}")
        if self.clip is not None:
            png = self.run.output_dir / "preview" / f"epoch_{epoch + 1:04d}.png"
            _preview(self.model, self.clip.to(self.run.device), self.args, png)
            self.run.log.image("reconstruction", png, epoch + 1)
        return {"skipped_files": len(skipped.files)} if skipped.count else {}


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
    with Run.start(args) as run:
        r = recipe(args, run)
        trainer = command.trainer_for(args, run, r, pretraining=True)
        command.describe(run, f"pretraining {args.model} ({{params}}) on {len(r.data.dataset)} videos from "
                         f"{args.data_path}", trainer, total_batch(args, run))
        trainer.fit()
        pictures = []
        clip = r.end_of_epoch.clip
        if run.info.is_main:
            skipped = r.data.dataset.skip_log.since(None)
            if skipped.count:
                run.say(f"unreadable videos over the run: {skipped}")
            if clip is not None:
                pictures = [run.output_dir / "reconstruction.png", run.output_dir / "reconstruction.gif"]
                _preview(trainer.model, clip.to(run.device), args, *pictures)
        command.finish(run, trainer, pictures)
    return run.output_dir


def _preview(model, clip: torch.Tensor, args, png: Path, gif: Path | None = None) -> None:
    from videomae.visualize import preview_mask, save_reconstruction

    png.parent.mkdir(parents=True, exist_ok=True)
    mask = preview_mask(model, clip, args.mask_type, args.mask_ratio, seed=args.seed)
    save_reconstruction(model, clip, mask, png, gif, mask_type=args.mask_type)
