"""`videomae finetune`: supervised fine-tuning with the official recipe, validation per epoch, a final test."""

from __future__ import annotations

import videomae.commands._common as c
import videomae.commands.official as official
import videomae.commands.runs as runs

NAME = "finetune"
HELP = "fine-tune a classifier from pretrained weights"
DESCRIPTION = ("Supervised fine-tuning with the official recipe (layer decay, mixup/cutmix, label smoothing, "
               "RandAugment, random erasing), a validation pass per epoch and a final multi-view test.")


def add_arguments(p) -> None:
    c.add_common(p, output_dir="runs/finetune")
    c.add_model_data(p, "vit_base_patch16_224", ("dense", "segment"))
    c.add_training(p, batch=64, epochs=30, lr=1e-3, min_lr=1e-6, warmup=5, betas_default=(0.9, 0.999),
                   save_freq=100, drop_path=0.1)
    g = p.add_argument_group("fine-tuning regularization (official defaults)")
    c.flag(g, "--finetune", default=None, help="pretrained weights to initialize from (official, MAE-ST, "
           "Hugging Face file or folder, or ours)")
    c.flag(g, "--nb_classes", type=int, default=None, help="number of classes (default: from classes.txt or labels)")
    c.flag(g, "--layer_decay", type=float, default=0.75, help="lr x layer_decay^(L+1-layer id)")
    c.flag(g, "--mixup", type=float, default=0.8, help="mixup alpha (0: off)")
    c.flag(g, "--cutmix", type=float, default=1.0, help="cutmix alpha (0: off)")
    c.flag(g, "--mixup_prob", type=float, default=1.0, help="probability of mixing a batch")
    c.flag(g, "--mixup_switch_prob", type=float, default=0.5, help="probability of cutmix when both are on")
    c.flag(g, "--smoothing", type=float, default=0.1, help="label smoothing")
    c.flag(g, "--aa", default="rand-m7-n4-mstd0.5-inc1", help="RandAugment policy ('none': off)")
    c.flag(g, "--reprob", type=float, default=0.25, help="random erasing probability")
    c.switch(g, "--flip", True, "horizontal flip (turn off for SSv2-like, direction-sensitive data)")
    c.flag(g, "--init_scale", type=float, default=0.001, help="scale of the fresh head's initial weights")
    c.flag(g, "--fc_drop_rate", type=float, default=0.0, help="dropout before the head")
    c.flag(g, "--log_interval", type=int, default=10, help="optimizer steps between reads of the loss on the host")
    c.add_eval_views(p)
    official.add_official(p, NAME)


def check(args) -> None:
    c.check_model(args, "vit")
    c.check_geometry(args, c.model_patch_size(args.model))
    c.check_training(args)
    c.check_positive(args, "log_interval", "test_num_segment", "test_num_crop", "nb_classes")
    c.check_data_path(args)
    if args.finetune is not None:
        runs.check_weights(args, "finetune")
    from videomae.train.classifier import split_list

    try:
        train_list = split_list(args.data_path, "train")
        from videomae.data.lists import load_records

        records = load_records(train_list, root=args.data_root, fmt=args.list_format)
    except (ValueError, FileNotFoundError) as err:
        c.fail(args, str(err).splitlines()[0])
    if getattr(args, "eval_only", False) or getattr(args, "validation_only", False):
        if args.resume is None and args.finetune is None:
            c.fail(args, "--eval/--validation need the weights to evaluate: --resume FILE or --finetune FILE")
        if args.resume is not None:
            runs.check_weights(args, "resume")
        return
    runs.steps_check(args, len(records))
    if args.finetune is not None:
        from videomae.train.classifier import build_classifier

        runs.check_fits(args, "finetune", lambda: build_classifier(args, args.nb_classes or 2, args.finetune))
    runs.check_run_folder(args)
    _say_what_is_missing(args)


def _say_what_is_missing(args) -> None:
    """No silent defaults: a start from random weights, and a run without validation or test, say so at the start."""
    from videomae.train.classifier import optional_list

    if args.finetune is None and getattr(args, "resume_from", None) is None:
        c.say("note: no --finetune: the classifier starts from random weights (fine-tuning needs pretrained "
              "weights to match the paper's accuracy)")
    try:
        val, test = optional_list(args, "val"), optional_list(args, "test")
    except FileNotFoundError:
        return  # an --eval_data_path without its list: the run names it
    if val is None and test is None:
        c.say(f"note: no validation per epoch and no final test: --data_path {args.data_path} holds no val/test list "
              "(give a folder with train/val/test lists, or --eval_data_path)")
    elif val is None:
        c.say("note: no validation per epoch (--disable_eval_during_finetuning); the final test runs")


def run(args) -> int:
    if getattr(args, "eval_only", False) or getattr(args, "validation_only", False):
        # Official `--eval` / `--validation`: evaluate the given weights instead of training.
        from videomae.train.evaluate import run_evaluation

        args.checkpoint = args.resume or args.finetune
        args.eval_split = "test" if getattr(args, "eval_only", False) else "val"
        run_evaluation(args)
        return 0
    from videomae.train.finetune import run as train

    train(args)
    return 0
