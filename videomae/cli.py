"""The `videomae` command (also `python -m videomae`, so `torchrun -m videomae ...` works).

    videomae pretrain  [--data_path LIST|DIR] ...   masked pretraining (no data: built-in synthetic demo)
    videomae finetune  --data_path DIR --finetune CKPT ...
    videomae evaluate  --data_path LIST --checkpoint CKPT ...
    videomae visualize --model M --checkpoint CKPT --video FILE
    videomae info | bench NAME | data synth

Flags keep the official scripts' underscore names and accept dashes too (`--batch_size` or
`--batch-size`); `--config FILE.yaml` sets any of them (command-line flags win). Usage mistakes and
bad paths print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from videomae.masking import MASK_TYPES

EXIT_USAGE, EXIT_FAILED = 2, 1


class UsageError(Exception):
    """A mistake in the command line or a path it names: one line, exit 2."""


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs)

    def error(self, message: str):  # argparse would print the usage block and exit; we want one line
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def flag(group, *names: str, **kwargs):
    """`--some_flag` plus its `--some-flag` alias (for every name given)."""
    spelled = []
    for name in names:
        spelled += [name] + ([name.replace("_", "-")] if "_" in name else [])
    return group.add_argument(*spelled, **kwargs)


def switch(group, name: str, default: bool | None, help: str):
    """`--name` / `--no_name` boolean pair (the official scripts use both spellings)."""
    flag(group, name, dest=name.lstrip("-"), action="store_true", help=help)
    flag(group, "--no_" + name.lstrip("-"), dest=name.lstrip("-"), action="store_false", help=f"turn {name} off")
    group.set_defaults(**{name.lstrip("-"): default})


def betas(text: str) -> tuple[float, float]:
    return tuple(float(x) for x in text.replace(",", " ").split())


# ---------------------------------------------------------------- flags shared by subcommands


def add_common(p, training: bool = True):
    g = p.add_argument_group("run")
    flag(g, "--config", metavar="FILE.yaml", help="YAML file of flag values (underscore or dash keys); "
         "flags given on the command line override it")
    flag(g, "--output_dir", default="runs/pretrain", help="where checkpoints, logs and pictures go")
    if training:
        flag(g, "--log_dir", default=None, help="TensorBoard folder (default: OUTPUT_DIR/tensorboard)")
    flag(g, "--device", default="auto", help="auto (this rank's GPU if any, else CPU), cuda, cuda:N or cpu")
    flag(g, "--seed", type=int, default=0, help="seed of weights, data order, clips and masks")
    flag(g, "--num_workers", type=int, default=min(10, os.cpu_count() or 1), help="data loader processes per rank")
    flag(g, "--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
         help="auto: bf16 autocast on GPU, fp32 on CPU; fp16 uses a GradScaler")
    flag(g, "--compile", action="store_true", help="torch.compile the model")
    flag(g, "--video_backend", default="auto", choices=("auto", "decord", "pyav"),
         help="video decoder (auto: decord, PyAV as fallback)")


def add_model_data(p, model: str, sampling: tuple[str, ...]):
    g = p.add_argument_group("model and data")
    flag(g, "--model", default=model, help="registered model name (see `python -c 'import videomae; "
         "print(videomae.list_models())'`)")
    flag(g, "--data_path", default=None, help="list file (`path label` or V2 `path 0 -1` lines), a folder "
         "of videos, or a folder holding train/val/test list files (.txt or .csv)")
    flag(g, "--data_root", default=None, help="prefix for relative paths in list files (default: the list "
         "file's folder)")
    flag(g, "--list_format", default="auto", choices=("auto", "video", "v2", "rawframes"),
         help="list file format (auto detects `path label` vs V2 `path start total`)")
    flag(g, "--input_size", type=int, default=224, help="clip height and width in pixels")
    flag(g, "--num_frames", type=int, default=16, help="frames per clip")
    flag(g, "--sampling_rate", type=int, default=4, help="temporal stride between sampled frames (K400 4, SSv2 2)")
    flag(g, "--tubelet_size", type=int, default=2, help="frames per cube")
    flag(g, "--sampling", default=sampling[0], choices=sampling, help="temporal sampling (segment = SSv2/TSN)")


def add_training(p, *, batch: int, epochs: int, lr: float, min_lr: float, warmup: int, betas_default,
                 save_freq: int, drop_path: float):
    g = p.add_argument_group("optimization (official recipe defaults)")
    flag(g, "--batch_size", type=int, default=batch, help="videos per process per micro-batch")
    flag(g, "--epochs", type=int, default=epochs, help="training epochs")
    flag(g, "--lr", type=float, default=lr, help="base learning rate; the run uses lr x total_batch / 256")
    flag(g, "--min_lr", type=float, default=min_lr, help="final cosine learning rate (also scaled by total_batch/256)")
    flag(g, "--warmup_epochs", type=int, default=warmup, help="linear warmup from 0, in epochs")
    flag(g, "--warmup_steps", type=int, default=-1, help="warmup in optimizer steps (overrides --warmup_epochs if > 0)")
    flag(g, "--weight_decay", type=float, default=0.05, help="AdamW weight decay (not on biases, norms, "
         "mask token, positions)")
    flag(g, "--weight_decay_end", type=float, default=None,
         help="cosine weight decay to this value (default: constant)")
    flag(g, "--opt_betas", type=betas, default=betas_default, help="AdamW betas, e.g. '0.9 0.95'")
    flag(g, "--opt_eps", type=float, default=1e-8, help="AdamW epsilon")
    flag(g, "--clip_grad", type=float, default=None, help="clip the gradient norm to this value (default: no clipping)")
    flag(g, "--accum_iter", "--update_freq", type=int, default=1, dest="accum_iter",
         help="micro-batches accumulated per optimizer step (official fine-tuning name: --update_freq)")
    flag(g, "--max_steps", type=int, default=None, help="stop after this many optimizer steps (schedule unchanged)")
    flag(g, "--max_skipped_steps", type=int, default=20, help="stop when this many steps in a row had inf/NaN "
         "(0: never)")
    flag(g, "--drop_path", type=float, default=drop_path, help="stochastic depth rate")
    flag(g, "--use_checkpoint", action="store_true", help="activation checkpointing in the blocks (saves memory)")
    c = p.add_argument_group("checkpoints and distribution")
    flag(c, "--save_ckpt_freq", type=int, default=save_freq, help="save a checkpoint every N epochs (and at the end)")
    flag(c, "--save_ckpt_steps", type=int, default=0, help="also save every N optimizer steps inside an epoch (0: off)")
    flag(c, "--keep_last", type=int, default=3, help="keep the newest K checkpoints (0: all)")
    flag(c, "--resume", default=None, help="checkpoint to resume, or 'auto' for the newest in --output_dir "
         "(a fresh start if there is none)")
    flag(c, "--fsdp", action="store_true", help="under torchrun: FSDP2 (fully_shard per block) instead of DDP")
    flag(c, "--no_tensorboard", action="store_true", help="do not write TensorBoard logs")


def add_mixing(p):
    g = p.add_argument_group("fine-tuning regularization (official defaults)")
    flag(g, "--finetune", default=None, help="pretrained checkpoint to initialize from (official, MAE-ST, "
         "Hugging Face or videomae layouts)")
    flag(g, "--nb_classes", type=int, default=None, help="number of classes (default: from classes.txt or labels)")
    flag(g, "--layer_decay", type=float, default=0.75, help="lr x layer_decay^(L+1-layer id)")
    flag(g, "--mixup", type=float, default=0.8, help="mixup alpha (0: off)")
    flag(g, "--cutmix", type=float, default=1.0, help="cutmix alpha (0: off)")
    flag(g, "--mixup_prob", type=float, default=1.0, help="probability of mixing a batch")
    flag(g, "--mixup_switch_prob", type=float, default=0.5, help="probability of cutmix when both are on")
    flag(g, "--smoothing", type=float, default=0.1, help="label smoothing")
    flag(g, "--aa", default="rand-m7-n4-mstd0.5-inc1", help="RandAugment policy ('none': off)")
    flag(g, "--reprob", type=float, default=0.25, help="random erasing probability")
    switch(g, "--flip", True, "horizontal flip (turn off for SSv2-like, direction-sensitive data)")
    flag(g, "--init_scale", type=float, default=0.001, help="scale of the fresh head's initial weights")
    flag(g, "--fc_drop_rate", type=float, default=0.0, help="dropout before the head")


def add_eval_views(p, short_side: int = 224):
    g = p.add_argument_group("evaluation")
    flag(g, "--test_num_segment", type=int, default=5, help="temporal views per video (Kinetics 5, SSv2 2)")
    flag(g, "--test_num_crop", type=int, default=3, help="spatial crops per view")
    flag(g, "--short_side_size", type=int, default=short_side, help="short side before the evaluation crops")


# ---------------------------------------------------------------- subcommands


def build_parser() -> Parser:
    root = Parser(prog="videomae", description="VideoMAE pretraining, fine-tuning, evaluation and tools.")
    sub = root.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    p = sub.add_parser("pretrain", help="masked video pretraining (no --data_path: built-in synthetic demo)",
                       description="Masked video pretraining with the official recipe. Without --data_path a "
                       "small model pretrains on a built-in synthetic dataset (the demo).")
    add_common(p)
    add_model_data(p, "pretrain_videomae_base_patch16_224", ("kinetics", "segment"))
    add_training(p, batch=64, epochs=800, lr=1.5e-4, min_lr=1e-5, warmup=40, betas_default=(0.9, 0.95),
                 save_freq=50, drop_path=0.0)
    g = p.add_argument_group("masking")
    flag(g, "--mask_type", default="tube", choices=MASK_TYPES, help="encoder mask: tube (VideoMAE), random "
         "(MAE-ST), frame")
    flag(g, "--mask_ratio", type=float, default=0.9, help="fraction of cubes hidden (UCF101 0.75)")
    flag(g, "--decoder_depth", type=int, default=None, help="decoder blocks (default: the model's, 4 for the "
         "official sizes)")
    flag(g, "--decoder_mask_type", default="none", choices=("none", "run_cell"), help="V2 dual masking")
    flag(g, "--decoder_mask_ratio", type=float, default=0.5, help="V2 running-cell decoder mask ratio")
    switch(g, "--normlize_target", True, "regress per-cube normalized pixels (official spelling)")
    flag(g, "--num_sample", type=int, default=1, help="clips drawn per decoded video (V2 / MAE-ST repeated sampling)")
    switch(g, "--gpu_aug", None, "workers ship uint8 frames; crop/resize/normalize run in the training process on "
           "its device (default: on with a GPU)")
    switch(g, "--preview", True, "write a reconstruction preview PNG per epoch and a GIF at the end")

    p = sub.add_parser("finetune", help="fine-tune a classifier from a pretrained checkpoint",
                       description="Supervised fine-tuning with the official recipe (layer decay, mixup/cutmix, "
                       "label smoothing, RandAugment, random erasing), a validation pass per epoch and a final "
                       "multi-view test.")
    add_common(p)
    p.set_defaults(output_dir="runs/finetune")
    add_model_data(p, "vit_base_patch16_224", ("dense", "segment"))
    add_training(p, batch=64, epochs=30, lr=1e-3, min_lr=1e-6, warmup=5, betas_default=(0.9, 0.999),
                 save_freq=100, drop_path=0.1)
    add_mixing(p)
    add_eval_views(p)

    p = sub.add_parser("evaluate", help="multi-view evaluation: top-1/top-5, per-class accuracy, confusion matrix",
                       description="Evaluate a classifier: test_num_segment x test_num_crop views per video, "
                       "softmax averaged; writes eval.json and confusion_matrix.png.")
    add_common(p, training=False)
    p.set_defaults(output_dir="runs/evaluate")
    add_model_data(p, "vit_base_patch16_224", ("dense", "segment"))
    g = p.add_argument_group("checkpoint")
    flag(g, "--checkpoint", "--resume", dest="checkpoint", required=False, default=None,
         help="fine-tuned weights to evaluate")
    flag(g, "--nb_classes", type=int, default=None, help="number of classes (default: from the checkpoint's head)")
    flag(g, "--batch_size", type=int, default=8, help="clips per batch")
    add_eval_views(p)

    p = sub.add_parser("visualize", help="original | masked | reconstruction of one video as PNG and GIF",
                       description="Reconstruct one video with a pretraining checkpoint (official per-cube "
                       "un-normalization); writes NAME.png (frames in columns) and NAME.gif.")
    g = p.add_argument_group("visualize")
    flag(g, "--config", metavar="FILE.yaml", help="YAML file of flag values")
    flag(g, "--model", default="pretrain_videomae_base_patch16_224", help="pretraining model name")
    flag(g, "--checkpoint", default=None, help="pretraining checkpoint (any supported layout)")
    flag(g, "--video", required=False, default=None, help="video file to reconstruct")
    flag(g, "--output_dir", "--save_path", dest="output_dir", default="runs/visualize", help="output folder")
    flag(g, "--mask_type", default="tube", choices=MASK_TYPES, help="mask type")
    flag(g, "--mask_ratio", type=float, default=0.9, help="fraction of cubes hidden")
    flag(g, "--input_size", type=int, default=224, help="clip size in pixels")
    flag(g, "--num_frames", type=int, default=16, help="frames per clip")
    flag(g, "--sampling_rate", type=int, default=4, help="temporal stride")
    flag(g, "--tubelet_size", type=int, default=2, help="frames per cube")
    flag(g, "--decoder_depth", type=int, default=None, help="decoder blocks of the checkpoint (default: the "
         "model's, 4 for the official sizes)")
    switch(g, "--normlize_target", True, "the checkpoint regresses per-cube normalized pixels")
    flag(g, "--seed", type=int, default=0, help="mask seed")
    flag(g, "--fps", type=int, default=4, help="GIF frames per second")
    flag(g, "--device", default="auto", help="auto, cuda or cpu")

    p = sub.add_parser("info", help="versions, devices, and which backends can run here (and why not)",
                       description="Print versions, devices and every backend's availability with reasons.")
    flag(p, "--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("bench", help="run a benchmark script from bench/ (e.g. `videomae bench loader -- ARGS`)",
                       description="Runs bench/NAME.py with the remaining arguments; without NAME lists them.")
    p.add_argument("name", nargs="?", help="benchmark script name (bench/NAME.py)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")

    p = sub.add_parser("data", help="dataset tools (`videomae data synth`)", description="Dataset tools.")
    dsub = p.add_subparsers(dest="data_command", metavar="TOOL", parser_class=Parser)
    dsub.required = True
    s = dsub.add_parser("synth", help="write the built-in synthetic motion dataset (H.264 mp4 + list files)",
                        description="Write the synthetic temporal dataset: textured shapes whose class is their "
                        "motion; train.txt / val.txt / classes.txt in the official `path label` format.")
    flag(s, "--output_dir", "--root", dest="output_dir", default="data/synth", help="dataset folder")
    flag(s, "--num_train", type=int, default=160, help="training videos")
    flag(s, "--num_val", type=int, default=40, help="validation videos")
    flag(s, "--num_frames", type=int, default=32, help="frames per video")
    flag(s, "--size", type=int, default=64, help="frame height and width (even)")
    flag(s, "--fps", type=int, default=25, help="frames per second")
    flag(s, "--seed", type=int, default=0, help="seed (same seed, same pixels)")
    flag(s, "--style", choices=("texture", "smooth"), default="texture",
         help="texture: gratings and striped shapes; smooth: low-frequency backgrounds and two-tone shapes, "
         "whose masked cubes are predictable from their neighbours (what bench/study.py uses)")
    return root


# ---------------------------------------------------------------- config files and the demo preset

# `videomae pretrain` with no --data_path: a tiny model on the built-in synthetic clips, sized to show a
# clearly falling loss on a 2-core CPU in a few minutes. The target is raw pixels: measured on this data,
# the official per-cube normalized target stays at its ~1.0 baseline for the first few hundred steps of
# a tiny model (tube or random masking, ratio 0.5 or 0.75), so a demo of that length would show nothing.
# Flags given explicitly still win.
DEMO = dict(
    model="pretrain_videomae_tiny_patch16_224", input_size=64, num_frames=8, sampling_rate=4, mask_ratio=0.75,
    normlize_target=False, batch_size=16, epochs=20, warmup_epochs=2, lr=3e-2, min_lr=1e-4, save_ckpt_freq=10,
    num_workers=1,
)
DEMO_DATA = dict(num_train=160, num_val=40, num_frames=32, size=64, seed=0)


def cache_dir() -> Path:
    return Path(os.environ.get("VIDEOMAE_CACHE") or Path.home() / ".cache" / "videomae")


def _subparser(parser: Parser, argv: list[str]) -> Parser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[argv[0]] if argv and argv[0] in action.choices else parser


def explicit_dests(parser: Parser, argv: list[str]) -> set[str]:
    """Destinations of the flags written on the command line (prefix abbreviations are off)."""
    found = set()
    for token in argv:
        if token.startswith("--"):
            action = parser._option_string_actions.get(token.split("=", 1)[0])
            if action is not None:
                found.add(action.dest)
    return found


def load_config(path: str, parser: Parser) -> dict:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{parser.prog}: error: --config {path}: no such file")
    try:
        values = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0]
        raise UsageError(f"{parser.prog}: error: --config {path}: not valid YAML ({first})") from None
    if not isinstance(values, dict):
        raise UsageError(f"{parser.prog}: error: --config {path}: expected a mapping of flag names to values")
    actions = {a.dest: a for a in parser._actions}
    out = {}
    for key, value in values.items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest not in actions or dest in ("help", "config"):
            raise UsageError(f"{parser.prog}: error: --config {path}: unknown option {key!r}")
        action = actions[dest]
        if isinstance(value, str) and action.type is not None:
            value = action.type(value)
        if action.dest == "opt_betas" and isinstance(value, list):
            value = tuple(float(v) for v in value)
        if action.choices is not None and value not in action.choices:
            raise UsageError(f"{parser.prog}: error: --config {path}: {key}={value!r} is not one of "
                             f"{', '.join(map(str, action.choices))}")
        out[dest] = value
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    """Defaults < demo preset (pretrain without data) < --config file < command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = _subparser(parser, argv)
    given = explicit_dests(sub, argv)
    layered: dict = {}
    if args.command == "pretrain" and not args.data_path:
        layered.update(DEMO)
        args.demo = True
    if getattr(args, "config", None):
        layered.update(load_config(args.config, sub))
    for key, value in layered.items():
        if key not in given:
            setattr(args, key, value)
    if args.command == "pretrain" and args.data_path:
        args.demo = False
    return args


# ---------------------------------------------------------------- checks before any work starts


def _need_file(args, name: str, what: str) -> None:
    value = getattr(args, name, None)
    if value is None:
        raise UsageError(f"videomae {args.command}: error: --{name} is required ({what})")
    if not Path(value).is_file():
        raise UsageError(f"videomae {args.command}: error: --{name} {value}: no such file")


def _check_model(args, prefix: str) -> None:
    from videomae.registry import list_models

    if args.model not in list_models():
        import difflib

        names = list_models(f"{prefix}*")
        close = difflib.get_close_matches(args.model, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; choose from {', '.join(names)}"
        raise UsageError(f"videomae {args.command}: error: --model: unknown model {args.model!r}{hint}")
    if not args.model.startswith(prefix):
        raise UsageError(f"videomae {args.command}: error: --model {args.model} is not a "
                         f"{'pretraining' if prefix == 'pretrain' else 'classification'} model "
                         f"(names start with {prefix!r})")


def _check_positive(args, *names: str) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UsageError(f"videomae {args.command}: error: --{name} must be >= 1, got {value}")


def _check_data_path(args) -> None:
    if args.data_path is None:
        raise UsageError(f"videomae {args.command}: error: --data_path is required (a list file or a dataset folder)")
    if not Path(args.data_path).exists():
        raise UsageError(f"videomae {args.command}: error: --data_path {args.data_path}: no such file or folder")


def _check_training(args) -> None:
    _check_positive(args, "batch_size", "epochs", "accum_iter", "save_ckpt_freq", "num_frames", "input_size",
                    "sampling_rate", "max_steps")
    if args.resume and args.resume != "auto" and not Path(args.resume).is_file():
        raise UsageError(f"videomae {args.command}: error: --resume {args.resume}: no such file (or use 'auto')")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"videomae {args.command}: error: --output_dir {out} exists and is not a folder")
    if args.opt_betas is not None and len(args.opt_betas) != 2:
        raise UsageError(f"videomae {args.command}: error: --opt_betas needs two numbers, got {args.opt_betas}")


def _check_device(args) -> None:
    device = getattr(args, "device", "auto")
    if device == "auto":
        return
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        hint = "not a device (auto, cpu, cuda, cuda:N)"
        raise UsageError(f"videomae {args.command}: error: --device {device}: {hint}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"videomae {args.command}: error: --device {device}: torch sees no CUDA device "
                         "(use --device cpu or auto)")


def check(args) -> None:
    _check_device(args)
    if args.command == "pretrain":
        _check_model(args, "pretrain")
        _check_training(args)
        _check_positive(args, "num_sample")
        if not 0.0 <= args.mask_ratio < 1.0:
            raise UsageError(f"videomae pretrain: error: --mask_ratio must be in [0, 1), got {args.mask_ratio}")
        if not args.demo:
            _check_data_path(args)
    elif args.command == "finetune":
        _check_model(args, "vit")
        _check_training(args)
        _check_data_path(args)
        if args.finetune is not None:
            _need_file(args, "finetune", "pretrained weights")
    elif args.command == "evaluate":
        _check_model(args, "vit")
        _check_data_path(args)
        _need_file(args, "checkpoint", "fine-tuned weights to evaluate")
    elif args.command == "visualize":
        _check_model(args, "pretrain")
        _need_file(args, "video", "the video to reconstruct")
        if args.checkpoint is not None:
            _need_file(args, "checkpoint", "pretraining weights")


# ---------------------------------------------------------------- commands


def run_pretrain(args) -> int:
    if args.demo:
        from videomae.data.synth import ensure_synthetic_dataset

        p = DEMO_DATA
        root = cache_dir() / f"synth-n{p['num_train']}-{p['num_val']}-t{p['num_frames']}-s{p['size']}-seed{p['seed']}"
        if not (root / "meta.json").is_file() and _is_main_rank():
            print(f"generating the built-in synthetic dataset in {root} (first run only)", flush=True)
        args.data_path = str(_synth_once(root, ensure_synthetic_dataset, p)["train"])
    from videomae.train.pretrain import run

    run(args)
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


def run_finetune(args) -> int:
    from videomae.train.finetune import run

    run(args)
    return 0


def run_evaluate(args) -> int:
    from videomae.train.finetune import run_evaluation

    run_evaluation(args)
    return 0


def run_visualize(args) -> int:
    from videomae.visualize import main

    main(args)
    return 0


def run_info(args) -> int:
    from videomae.info import main

    return main(as_json=args.json)


def bench_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "bench"


def run_bench(args) -> int:
    import runpy

    folder = bench_dir()
    scripts = sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_")) if folder.is_dir() else []
    if not args.name:
        if not scripts:
            raise UsageError(f"videomae bench: error: no benchmark scripts in {folder} (bench/ ships with the "
                             "source tree, not the wheel)")
        print("benchmarks (videomae bench NAME [-- ARGS]):\n" + "\n".join(f"  {s}" for s in scripts))
        return 0
    if args.name not in scripts:
        raise UsageError(f"videomae bench: error: no benchmark {args.name!r} in {folder}"
                         + (f"; available: {', '.join(scripts)}" if scripts else ""))
    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    sys.argv = [str(folder / f"{args.name}.py"), *rest]
    runpy.run_path(sys.argv[0], run_name="__main__")
    return 0


def run_data(args) -> int:
    from videomae.data.synth import write_synthetic_dataset

    if args.size % 2:
        raise UsageError(f"videomae data synth: error: --size must be even (H.264 yuv420p), got {args.size}")
    paths = write_synthetic_dataset(args.output_dir, num_train=args.num_train, num_val=args.num_val,
                                    num_frames=args.num_frames, size=args.size, fps=args.fps, seed=args.seed,
                                    style=args.style)
    print("wrote " + ", ".join(f"{k}: {v}" for k, v in paths.items()))
    return 0


COMMANDS = {"pretrain": run_pretrain, "finetune": run_finetune, "evaluate": run_evaluate,
            "visualize": run_visualize, "info": run_info, "bench": run_bench, "data": run_data}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse(argv)
        check(args)
        return COMMANDS[args.command](args)
    except UsageError as err:
        print(str(err), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("videomae: interrupted (resume with --resume auto)", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - known failure kinds become one line; bugs keep their traceback
        text = _one_line(err)
        if text is None or os.environ.get("VIDEOMAE_DEBUG"):
            raise
        lines = text.strip().splitlines() or [type(err).__name__]
        more = f" (+{len(lines) - 1} more lines: rerun with VIDEOMAE_DEBUG=1)" if len(lines) > 1 else ""
        print(f"videomae {argv[0] if argv else ''}: error: {lines[0]}{more}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, ValueError | FileNotFoundError) else EXIT_FAILED


def _one_line(err: Exception) -> str | None:
    """Errors that describe the user's input or data rather than a bug in videomae."""
    from videomae.train.engine import TrainingDiverged

    if isinstance(err, FileNotFoundError | TrainingDiverged):
        return str(err)
    if isinstance(err, ValueError) and not isinstance(err, UnicodeError):
        return str(err)
    if isinstance(err, RuntimeError) and "unreadable" in str(err):
        # From a loader worker the message is wrapped in the worker's traceback: keep the error line.
        lines = [x for x in str(err).splitlines() if "unreadable" in x]
        return lines[-1].removeprefix("RuntimeError: ")
    return None
