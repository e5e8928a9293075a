"""`videomae visualize`: original | masked | reconstruction of one video, as PNG and GIF."""

from __future__ import annotations

from videomae.commands import _common as c
from videomae.commands import official, runs
from videomae.masking import MASK_TYPES

NAME = "visualize"
HELP = "original | masked | reconstruction of one video as PNG and GIF"
DESCRIPTION = ("Reconstruct one video with pretraining weights; writes NAME.png (labeled rows, frames in columns) "
               "and NAME.gif. The reconstruction row follows the official per-cube un-normalization: each masked "
               "cube takes its colour and contrast from the original clip, and the title says so; --raw shows the "
               "model's normalized prediction as it is. Without --model the model stored with the checkpoint is "
               "used.")


def add_arguments(p) -> None:
    g = p.add_argument_group("visualize")
    c.flag(g, "--config", metavar="FILE.yaml", help="YAML file of flag values")
    c.flag(g, "--model", default=None, help="pretraining model name (default: the checkpoint's)")
    c.flag(g, "--checkpoint", default=None, help="pretraining weights (any supported layout or an HF folder)")
    c.flag(g, "--video", default=None, help="video file to reconstruct")
    c.flag(g, "--output_dir", "--save_path", dest="output_dir", default="runs/visualize", help="output folder")
    c.flag(g, "--mask_type", default="tube", choices=MASK_TYPES, help="mask type")
    c.flag(g, "--mask_ratio", type=float, default=0.9, help="fraction of cubes hidden")
    c.flag(g, "--input_size", type=int, default=224, help="clip size in pixels")
    c.flag(g, "--num_frames", type=int, default=16, help="frames per clip")
    c.flag(g, "--sampling_rate", type=int, default=4, help="temporal stride")
    c.flag(g, "--tubelet_size", type=int, default=2, help="frames per cube")
    c.flag(g, "--decoder_depth", type=int, default=None, help="decoder blocks of the checkpoint (default: the "
           "model's, 4 for the official sizes)")
    official.boolean_flag(g, "normlize_target", True, "the checkpoint regresses per-cube normalized pixels")
    c.flag(g, "--raw", action="store_true", help="show target and prediction in the model's per-cube normalized "
           "units (drawn as 0.5 + z/6) instead of un-normalizing the prediction with the original clip's statistics")
    c.flag(g, "--seed", type=int, default=0, help="mask seed")
    c.flag(g, "--fps", type=int, default=4, help="GIF frames per second")
    c.flag(g, "--device", default="auto", help="auto, cuda or cpu")


def check(args) -> None:
    c.need_file(args, "video", "the video to reconstruct")
    if args.checkpoint is not None:
        runs.check_weights(args, "checkpoint")
        runs.model_from_weights(args, "checkpoint", "pretrain")
        stored = _stored(args)
        for key in ("normlize_target", "decoder_depth", "mask_ratio", "mask_type"):
            if key in stored and key not in args._explicit and stored[key] is not None:
                setattr(args, key, stored[key])
    if args.model is None:
        args.model = "pretrain_videomae_base_patch16_224"
    c.check_model(args, "pretrain")
    c.check_geometry(args, c.model_patch_size(args.model))
    if not 0.0 <= args.mask_ratio < 1.0:
        c.fail(args, f"--mask_ratio must be in [0, 1), got {args.mask_ratio}")


def _stored(args) -> dict:
    from videomae.checkpoint import stored_args

    return stored_args(args.checkpoint)


def run(args) -> int:
    from videomae.visualize import main

    main(args)
    return 0
