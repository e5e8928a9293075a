"""`videomae pretrain`: masked video pretraining (no --data_path: the built-in synthetic demo)."""

from __future__ import annotations

import os
from pathlib import Path

import videomae.commands._common as c
import videomae.commands.official as official
import videomae.commands.runs as runs
from videomae.data.loader import default_cache_dir as cache_dir  # noqa: F401 - also cli.cache_dir: one function
from videomae.data.transforms import PRETRAIN_SCALES
from videomae.masking import MASK_TYPES

NAME = "pretrain"
HELP = "masked video pretraining (no --data_path: built-in synthetic demo)"

# `videomae pretrain` with no --data_path: a tiny model on the built-in "tiles" clips with the official
# normalized-pixel target, sized to show textured reconstructions on a 2-core CPU in about a minute and a half
# (600 steps). The clips' background repeats on the 16-px cube grid (videomae/data/synth_tiles.py); scale jitter
# or a resize would move that repetition off the grid, so the crop keeps the whole 64-px frame.
# Flags given explicitly still win.
DEMO = dict(
    model="pretrain_videomae_tiny_patch16_224", input_size=64, num_frames=8, sampling_rate=4, mask_ratio=0.75,
    crop_scales=[1.0], batch_size=16, epochs=60, warmup_epochs=2, lr=3e-2, min_lr=1e-4, save_ckpt_freq=20,
    num_workers=1,
)
DEMO_DATA = dict(num_train=160, num_val=40, num_frames=32, size=64, seed=0, style="tiles")


def add_arguments(p) -> None:
    c.add_common(p)
    c.add_model_data(p, "pretrain_videomae_base_patch16_224", ("kinetics", "segment"))
    c.add_training(p, batch=64, epochs=800, lr=1.5e-4, min_lr=1e-5, warmup=40, betas_default=(0.9, 0.95),
                   save_freq=50, drop_path=0.0)
    g = p.add_argument_group("masking")
    c.flag(g, "--mask_type", default="tube", choices=MASK_TYPES, help="encoder mask: tube (VideoMAE), random "
           "(MAE-ST), frame")
    c.flag(g, "--mask_ratio", type=float, default=0.9, help="fraction of cubes hidden (UCF101 0.75)")
    c.flag(g, "--decoder_depth", type=int, default=None, help="decoder blocks (default: the model's, 4 for the "
           "official sizes)")
    c.flag(g, "--decoder_mask_type", default="none", choices=("none", "run_cell", "random"),
           help="V2 dual masking (random: the official V2 choice, not implemented here)")
    c.flag(g, "--decoder_mask_ratio", type=float, default=0.5, help="V2 running-cell decoder mask ratio")
    official.boolean_flag(g, "normlize_target", True, "regress per-cube normalized pixels (official spelling; "
                          "`--normlize_target False` turns it off)")
    c.flag(g, "--num_sample", type=int, default=1, help="clips drawn per decoded video (V2 / MAE-ST repeated "
           "sampling)")
    c.flag(g, "--crop_scales", type=float, nargs="+", default=list(PRETRAIN_SCALES), metavar="S",
           help="side lengths of the multi-scale crop as fractions of the short side (official: "
           f"{' '.join(map(str, PRETRAIN_SCALES))}; 1 alone: no scale jitter)")
    c.switch(g, "--gpu_aug", None, "workers ship uint8 frames; crop/resize/normalize run in the training process "
             "on its device (default: on with a GPU)")
    c.switch(g, "--preview", True, "write a reconstruction preview PNG per epoch and a GIF at the end")
    w = p.add_argument_group("initial weights")
    c.flag(w, "--init", default=None, metavar="WEIGHTS", help="start from these weights (official V1/V2, MAE-ST, "
           "Hugging Face file or folder, or ours; official V2 name: --finetune); the load report is printed")
    c.flag(w, "--log_interval", type=int, default=10, help="optimizer steps between reads of the loss on the "
           "host (each read waits for the device)")
    official.add_official(p, NAME)


def check(args) -> None:
    c.check_model(args, "pretrain")
    c.check_geometry(args, c.model_patch_size(args.model))
    c.check_training(args)
    c.check_positive(args, "num_sample", "log_interval")
    if not all(0.0 < x <= 1.0 for x in args.crop_scales):
        c.fail(args, f"--crop_scales must each be in (0, 1], got {' '.join(map(str, args.crop_scales))}")
    if not 0.0 <= args.mask_ratio < 1.0:
        c.fail(args, f"--mask_ratio must be in [0, 1), got {args.mask_ratio}")
    if args.decoder_mask_type == "random":
        c.fail(args, "--decoder_mask_type random is not implemented here; use run_cell (the V2 recipe's choice)")
    if args.decoder_mask_type == "run_cell" and not 0.0 < args.decoder_mask_ratio < 1.0:
        c.fail(args, f"--decoder_mask_ratio must be in (0, 1), got {args.decoder_mask_ratio}")
    if not args.demo:
        c.check_data_path(args)
        from videomae.data.lists import load_records

        try:
            records = load_records(args.data_path, root=args.data_root, fmt=args.list_format)
        except (ValueError, FileNotFoundError) as err:
            c.fail(args, str(err).splitlines()[0])
        runs.steps_check(args, len(records))
    if args.init is not None:
        from videomae.train.pretrain import build_model

        runs.check_weights(args, "init")
        runs.check_fits(args, "init", lambda: build_model(args))
    runs.check_run_folder(args)


def run(args) -> int:
    if args.demo:
        from videomae.data.synth import ensure_synthetic_dataset

        p = DEMO_DATA
        root = cache_dir() / (f"synth-{p['style']}-n{p['num_train']}-{p['num_val']}-t{p['num_frames']}-s{p['size']}"
                              f"-seed{p['seed']}")
        if not (root / "meta.json").is_file() and _is_main_rank():
            print(f"generating the built-in synthetic dataset in {root} (first run only)", flush=True)
        args.data_path = str(_synth_once(root, ensure_synthetic_dataset, p)["train"])
    from videomae.train.pretrain import run as train

    train(args)
    return 0


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _synth_once(root: Path, ensure, params: dict) -> dict:
    """Under torchrun only rank 0 writes the dataset; the others wait for its meta.json."""
    if _is_main_rank():
        return ensure(root, **params)
    import time

    while not (root / "meta.json").is_file():
        time.sleep(0.5)
    return ensure(root, **params)
