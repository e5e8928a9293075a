"""`videomae evaluate`: multi-view evaluation of a classifier (top-1/top-5, per class, confusion matrix)."""

from __future__ import annotations

import videomae.commands._common as c
import videomae.commands.runs as runs

NAME = "evaluate"
HELP = "multi-view evaluation: top-1/top-5, per-class accuracy, confusion matrix"
DESCRIPTION = ("Evaluate a classifier: test_num_segment x test_num_crop views per video, softmax averaged; "
               "writes eval.json and confusion_matrix.png. Without --model the model stored with the "
               "checkpoint is used.")


def add_arguments(p) -> None:
    c.add_common(p, training=False, output_dir="runs/evaluate")
    c.add_model_data(p, None, ("dense", "segment"))
    g = p.add_argument_group("checkpoint")
    c.flag(g, "--checkpoint", "--resume", dest="checkpoint", default=None,
           help="fine-tuned weights to evaluate (file or Hugging Face folder)")
    c.flag(g, "--nb_classes", type=int, default=None, help="number of classes (default: from the checkpoint's head)")
    c.flag(g, "--batch_size", type=int, default=8, help="clips per batch")
    c.add_eval_views(p)


def check(args) -> None:
    c.check_data_path(args)
    runs.check_weights(args, "checkpoint")
    runs.model_from_weights(args, "checkpoint", "vit")
    c.check_model(args, "vit")
    c.check_geometry(args, c.model_patch_size(args.model))
    c.check_positive(args, "batch_size", "test_num_segment", "test_num_crop", "nb_classes")
    from videomae.train.classifier import split_list

    try:
        c.check_list(args, split_list(args.data_path, "test"))
    except FileNotFoundError as err:
        c.fail(args, str(err))
    if args.nb_classes is not None:
        from videomae.train.evaluate import head_classes

        head = head_classes(args.checkpoint)
        if head is not None and head != args.nb_classes:
            c.fail(args, f"--nb_classes {args.nb_classes}, but --checkpoint {args.checkpoint} has a {head}-class head: "
                   f"leave --nb_classes out (it is read from the head) or give {head}")


def run(args) -> int:
    from videomae.train.evaluate import run_evaluation

    args.drop_rate = args.attn_drop_rate = 0.0
    run_evaluation(args)
    return 0
