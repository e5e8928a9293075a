"""`videomae finetune`'s recipe: supervised fine-tuning with the official recipe (AdamW betas 0.9/0.999, layer decay,
mixup/cutmix, label smoothing, RandAugment, random erasing), a validation pass per epoch and a final multi-view
test (videomae/train/evaluate.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videomae.train import command
from videomae.train.classifier import build_classifier, class_names, make_dataset, optional_list, split_list
from videomae.train.evaluate import evaluate, say_result, write_report
from videomae.train.recipe import AdamW, Recipe
from videomae.train.run import Run, seed_everything
from videomae.train.step import Precision, resolve_precision

# ---------------------------------------------------------------- the recipe


def classification_loss(smoothing: float, mixing: bool):
    """`loss(model, (clips, target)) -> scalar`: soft-target cross entropy under mixup/cutmix (the target already
    smoothed and mixed), else cross entropy with label smoothing."""

    def loss(model: nn.Module, batch) -> torch.Tensor:
        clips, target = batch
        logits = model(clips).float()
        if mixing:
            return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
        return F.cross_entropy(logits, target, label_smoothing=smoothing)

    return loss


class Labels:
    """The training set's classes: `num_classes` (--nb_classes, else from classes.txt or the labels) and names."""

    def __init__(self, args, train_list: Path, train_set):
        labels = [r.label for r in train_set.records]
        self.num_classes = args.nb_classes or len(class_names(train_list, labels, None))
        self.names = class_names(train_list, labels, self.num_classes)


def recipe(args, run: Run, train_set, labels: Labels) -> Recipe:
    """The classifier (from --finetune when given), the loader, layer-decayed AdamW groups and the official
    schedule; a validation pass after each epoch when there is a validation list."""
    from videomae.data.loader import build_loader

    seed_everything(args.seed)
    model = build_classifier(args, labels.num_classes, args.finetune)
    if args.finetune:
        from videomae.checkpoint import load_checkpoint

        run.say(f"initialized from {load_checkpoint(model, args.finetune)}")
    seed_everything(args.seed + run.info.rank)
    loader = build_loader(train_set, args.batch_size, num_workers=args.num_workers, seed=args.seed, drop_last=True,
                          pin_memory=run.device.type == "cuda", rank=run.info.rank,
                          num_replicas=run.info.world_size)
    # One clip per video here (repeated augmentation is not implemented for fine-tuning): videos per step.
    schedule = command.official_schedule(args, run, len(loader), len(train_set),
                                         args.batch_size * args.accum_iter * run.info.world_size)
    mixing = args.mixup > 0 or args.cutmix > 0
    optimizer = AdamW(args.weight_decay, args.opt_betas or (0.9, 0.999), args.opt_eps, args.layer_decay)
    return Recipe(model, classification_loss(args.smoothing, mixing), schedule, optimizer, data=loader,
                  prepare=_prepare(args, run, train_set, labels.num_classes, mixing), accum_iter=args.accum_iter,
                  clip_grad=args.clip_grad, end_of_epoch=_validation(args, run, model))


def _prepare(args, run: Run, train_set, num_classes: int, mixing: bool):
    """A loader batch -> (clips, target) on the device, mixed outside the step; the target is soft when mixing."""
    from videomae.data.feed import DeviceFeed
    from videomae.data.transforms import mixup_cutmix

    feed = DeviceFeed(run.device, args.input_size)  # side-stream copy from pinned memory (the workers crop)

    def prepare(batch):
        clips, target, video = batch
        clips, target = feed((clips, target))
        if not mixing:
            return clips, target
        # A pure function of (seed, epoch, the batch's videos): resumed runs mix the same way.
        rng = np.random.default_rng([args.seed, train_set.epoch, *video.tolist()])
        return mixup_cutmix(clips, target, num_classes, rng, args.mixup, args.cutmix, args.mixup_switch_prob,
                            args.mixup_prob, args.smoothing)

    return prepare


def _validation(args, run: Run, model: nn.Module):
    """The validation pass after each epoch (None without a validation list)."""
    val_list = optional_list(args, "val")
    if val_list is None:
        return None
    val_set = make_dataset(args, val_list, "val")
    precision = Precision(resolve_precision(args.precision, run.device), run.device)  # the trainer's

    def end_of_epoch(epoch: int) -> dict:
        result = evaluate(model, val_set, args, run.device, precision, run.info)
        return {"val_acc1": round(result["top1"], 2), "val_acc5": round(result["top5"], 2)}

    return end_of_epoch


def run(args) -> Path:
    with Run.start(args) as run:
        train_list = split_list(args.data_path, "train")
        train_set = make_dataset(args, train_list, "train")
        labels = Labels(args, train_list, train_set)
        r = recipe(args, run, train_set, labels)
        trainer = command.trainer_for(args, run, r, pretraining=False)
        command.describe(run, f"fine-tuning {args.model} ({{params}}, {labels.num_classes} classes) on "
                         f"{len(train_set)} videos from {train_list}", trainer,
                         args.batch_size * args.accum_iter * run.info.world_size)
        trainer.fit()
        outputs = []
        test_list = optional_list(args, "test")
        if test_list is not None:
            result = evaluate(trainer.model, make_dataset(args, test_list, "test"), args, run.device,
                              trainer.precision, run.info)
            if run.info.is_main:
                say_result(run, result, labels.names)
                outputs += write_report(result, labels.names, run.output_dir, "test")
        command.finish(run, trainer, outputs)
    return run.output_dir
