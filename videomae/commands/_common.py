"""What the subcommands share: the one-line-error parser, flag helpers, the flag groups of the official
scripts, and the checks that run before anything on disk changes."""

from __future__ import annotations

import argparse
import os
import re
import textwrap
from pathlib import Path

EXIT_USAGE, EXIT_FAILED = 2, 1


class UsageError(Exception):
    """A mistake in the command line or a path it names: one line, exit 2."""


class HelpFormatter(argparse.HelpFormatter):
    """Each flag's default printed once: appended unless the help text already says what the default is (or it is
    None, or an on/off switch's). Descriptions are wrapped paragraph by paragraph; an indented block (an example
    command) and `- ` list items keep their own lines, set apart from the prose."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        if ("%(default)" in text or "default" in text.lower() or not action.option_strings
                or action.default in (None, argparse.SUPPRESS) or action.nargs == 0):
            return text
        return text + " (default: %(default)s)"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        blocks = []
        for para in re.split(r"\n\s*\n", textwrap.dedent(text).strip("\n")):
            lines = para.splitlines()
            if all(line.startswith((" ", "\t")) for line in lines):  # an example: as written
                blocks.append("\n".join(indent + line.rstrip() for line in lines))
                continue
            items, current = [], []
            for line in lines:
                if line.lstrip().startswith("- ") and current:
                    items.append(current)
                    current = []
                current.append(line.strip())
            items.append(current)
            blocks.append("\n".join(
                textwrap.fill(" ".join(item), width, initial_indent=indent,
                              subsequent_indent=indent + ("  " if item[0].startswith("- ") else ""))
                for item in items))
        return "\n\n".join(blocks)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, formatter_class=HelpFormatter, **kwargs)

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


def boolean(text: str) -> bool:
    """`True`/`False` words, as the official `--normlize_target True` (where argparse's `type=bool` made
    every word true; here `False` means false)."""
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


class Betas(argparse.Action):
    """`--opt_betas 0.9 0.95` (official: two tokens) or `--opt_betas 0.9,0.95` (one token)."""

    def __call__(self, parser, namespace, values, option_string=None):
        text = " ".join(values if isinstance(values, list) else [values])
        try:
            betas = tuple(float(x) for x in text.replace(",", " ").split())
        except ValueError:
            parser.error(f"argument {option_string}: expected two numbers, got {text!r}")
        if len(betas) != 2:
            parser.error(f"argument {option_string}: expected two numbers (beta1 beta2), got {text!r}")
        setattr(namespace, self.dest, betas)


def say(text: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(text, flush=True)


# ---------------------------------------------------------------- flag groups


def add_common(p, training: bool = True, output_dir: str = "runs/pretrain"):
    g = p.add_argument_group("run")
    flag(g, "--config", metavar="FILE.yaml", help="YAML file of flag values (underscore or dash keys); "
         "flags given on the command line override it")
    flag(g, "--output_dir", default=output_dir, help="where checkpoints, logs and pictures go")
    if training:
        flag(g, "--log_dir", default=None, help="TensorBoard folder (default: OUTPUT_DIR/tensorboard)")
        flag(g, "--overwrite", action="store_true", help="start a new run in a folder that holds an earlier run "
             "(deletes its checkpoints and logs); without it such a folder is refused unless --resume is given")
    flag(g, "--device", default="auto", help="auto (this rank's GPU if any, else CPU), cuda, cuda:N or cpu")
    flag(g, "--seed", type=int, default=0, help="seed of weights, data order, clips and masks")
    flag(g, "--num_workers", type=int, default=min(10, os.cpu_count() or 1), help="data loader processes per rank")
    flag(g, "--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
         help="auto: bf16 autocast on GPU, fp32 on CPU; fp16 uses a GradScaler")
    switch(g, "--compile", None, "torch.compile(fullgraph) of forward + loss (default: on for CUDA pretraining)")
    if training:  # the training step's switches (videomae.train.step.StepConfig; shown in args.json "step")
        flag(g, "--cuda_graphs", action="store_true", help="capture the whole step in one CUDA graph (fixed "
             "shapes; bf16/fp32, no --weight_decay_end)")
        flag(g, "--attention", default="auto", help="attention backend (auto picks per shape; see videomae info)")
        flag(g, "--ops_backend", default="auto", choices=("auto", "cuda", "triton", "torch"),
             help="backend of the fused ops (auto: cuda > triton > torch)")
    flag(g, "--video_backend", default="auto", choices=("auto", "decord", "pyav"),
         help="video decoder (auto: decord, PyAV as fallback)")


def add_model_data(p, model: str | None, sampling: tuple[str, ...]):
    g = p.add_argument_group("model and data")
    flag(g, "--model", default=model, help="registered model name (see `python -c 'import videomae; "
         "print(videomae.list_models())'`)" + ("; default: the one stored with the checkpoint" if model is None
                                                else ""))
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
    flag(g, "--opt_betas", nargs="+", action=Betas, default=betas_default, metavar="BETA",
         help="AdamW betas: two numbers, '0.9 0.95' (official) or '0.9,0.95'")
    flag(g, "--opt_eps", type=float, default=1e-8, help="AdamW epsilon")
    flag(g, "--clip_grad", type=float, default=None, help="clip the gradient norm to this value (default: no clipping)")
    flag(g, "--accum_iter", "--update_freq", type=int, default=1, dest="accum_iter",
         help="micro-batches accumulated per optimizer step (official fine-tuning name: --update_freq)")
    flag(g, "--max_steps", type=int, default=None, help="stop after this many optimizer steps (schedule unchanged)")
    flag(g, "--max_skipped_steps", type=int, default=20, help="stop when this many steps in a row had inf/NaN "
         "(0: never)")
    flag(g, "--drop_path", type=float, default=drop_path, help="stochastic depth rate")
    flag(g, "--grad_checkpointing", "--use_checkpoint", "--with_checkpoint", dest="use_checkpoint",
         action="store_true", help="recompute block activations in the backward pass (saves memory; official "
         "names --use_checkpoint / --with_checkpoint)")
    flag(g, "--recompute", choices=["auto", "cheap", "none", "full"], default=None,
         help="what backward recomputes instead of keeping: auto (default, env VIDEOMAE_RECOMPUTE: cheap on CUDA), "
         "cheap (LayerNorm, GELU, casts: about 0.6x the activations, a predicted 2%% of step time), none (keep "
         "everything: fastest when memory is not short), full (= --grad_checkpointing)")
    c = p.add_argument_group("checkpoints and distribution")
    flag(c, "--save_ckpt_freq", type=int, default=save_freq, help="save a checkpoint every N epochs (and at the end)")
    flag(c, "--save_ckpt_steps", type=int, default=0, help="also save every N optimizer steps inside an epoch (0: off)")
    flag(c, "--keep_last", type=int, default=3, help="keep the newest K checkpoints (0: all)")
    flag(c, "--resume", default=None, help="checkpoint to resume, or 'auto' for the newest valid one in "
         "--output_dir (a fresh start if the folder holds no run yet)")
    flag(c, "--fsdp", action="store_true", help="under torchrun: FSDP2 (fully_shard per block) instead of DDP")
    flag(c, "--no_tensorboard", action="store_true", help="do not write TensorBoard logs")


def add_eval_views(p, short_side: int = 224):
    g = p.add_argument_group("evaluation")
    flag(g, "--test_num_segment", type=int, default=5, help="temporal views per video (Kinetics 5, SSv2 2)")
    flag(g, "--test_num_crop", type=int, default=3, help="spatial crops per view")
    flag(g, "--short_side_size", type=int, default=short_side, help="short side before the evaluation crops")


# ---------------------------------------------------------------- checks


def fail(args, message: str):
    raise UsageError(f"videomae {args.command}: error: {message}")


def need_file(args, name: str, what: str, weights: bool = False) -> None:
    """A required file flag; `weights` also accepts a Hugging Face model folder or Hub id (fetched here)."""
    value = getattr(args, name, None)
    if value is None:
        fail(args, f"--{name} is required ({what})")
    if weights:
        _fetch(args, name)
        value = getattr(args, name)
    path = Path(value)
    if weights and path.is_dir():
        if not (path / "config.json").is_file():
            fail(args, f"--{name} {value}: a folder, but not a Hugging Face model folder (no config.json)")
        return
    if not path.is_file():
        fail(args, f"--{name} {value}: no such file")


def _fetch(args, name: str) -> None:
    """A Hub id in a weights flag -> its local folder or file (huggingface_hub's cache), in place."""
    from videomae.interop import hub

    value = getattr(args, name)
    if not hub.is_hub_id(value):
        return
    try:
        setattr(args, name, str(hub.download(value)))
    except ValueError as err:
        fail(args, f"--{name} {value}: no such file or folder; as a Hugging Face Hub id, "
             f"{str(err).removeprefix(value + ': ')}")
    args._weights_ids = {**getattr(args, "_weights_ids", {}), name: value}


def apply_weights(args, name: str, kind: str | None) -> None:
    """Weights that are a Hugging Face folder or Hub id: their config.json, checked against the weights, sets
    --model and the clip geometry not given on the command line; a given flag that disagrees is one line naming
    both. (`videomae.interop.pretrained.build_for_weights` then builds the config's architecture.)"""
    if getattr(args, name, None) is None:
        return
    _fetch(args, name)
    path = Path(getattr(args, name))
    if not (path.is_dir() and (path / "config.json").is_file()):
        return
    from videomae.interop.pretrained import arch_conflicts, hf_flags, read_hf_config

    shown = getattr(args, "_weights_ids", {}).get(name, path)
    try:
        config = read_hf_config(path)
        flags = hf_flags(config, kind)
    except ValueError as err:
        fail(args, f"--{name} {str(err).splitlines()[0]}")
    given = set(getattr(args, "_explicit", ()))
    bad = arch_conflicts(config, getattr(args, "model", None), vars(args), given)
    if bad:
        fail(args, f"--{name} {shown}: its config.json disagrees with {'; '.join(bad)} (drop the flag to use the "
             "config's architecture)")
    for key, value in flags.items():
        if key not in given and hasattr(args, key) and value is not None:
            setattr(args, key, value)


def check_model(args, prefix: str) -> None:
    from videomae.registry import list_models

    if args.model not in list_models():
        import difflib

        names = list_models(f"{prefix}*")
        close = difflib.get_close_matches(args.model, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; choose from {', '.join(names)}"
        fail(args, f"--model: unknown model {args.model!r}{hint}")
    if not args.model.startswith(prefix):
        kind = "pretraining" if prefix == "pretrain" else "classification"
        fail(args, f"--model {args.model} is not a {kind} model (names start with {prefix!r})")


def check_positive(args, *names: str) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            fail(args, f"--{name} must be >= 1, got {value}")


def check_geometry(args, patch_size: int) -> None:
    """Sizes the cube grid needs, named by flag, before any model or data is built."""
    check_positive(args, "input_size", "num_frames", "tubelet_size")
    if args.input_size % patch_size:
        fail(args, f"--input_size {args.input_size} is not a multiple of {args.model}'s patch size {patch_size} "
             f"(try {max(patch_size, args.input_size // patch_size * patch_size)})")
    if args.num_frames % args.tubelet_size:
        fail(args, f"--num_frames {args.num_frames} is not a multiple of --tubelet_size {args.tubelet_size}")


def model_patch_size(name: str) -> int:
    """The patch size of a registered model, built on the meta device (no memory, no init cost)."""
    import torch

    from videomae.registry import create_model

    with torch.device("meta"):
        model = create_model(name)
    embed = model.encoder.patch_embed if hasattr(model, "encoder") else model.patch_embed
    return int(embed.patch_size)


def check_data_path(args) -> None:
    if args.data_path is None:
        fail(args, "--data_path is required (a list file or a dataset folder)")
    if not Path(args.data_path).exists():
        fail(args, f"--data_path {args.data_path}: no such file or folder")


def check_training(args) -> None:
    check_positive(args, "batch_size", "epochs", "accum_iter", "save_ckpt_freq", "num_frames", "input_size",
                   "sampling_rate", "max_steps")
    if args.resume and args.resume != "auto":
        need_file(args, "resume", "a resumable checkpoint, or 'auto'")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        fail(args, f"--output_dir {out} exists and is not a folder")
    if args.overwrite and args.resume:
        fail(args, "--overwrite starts over and --resume continues: give one of them")


def check_device(args) -> None:
    device = getattr(args, "device", "auto")
    if device == "auto":
        return
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        fail(args, f"--device {device}: not a device (auto, cpu, cuda, cuda:N)")
    if kind == "cuda" and not torch.cuda.is_available():
        fail(args, f"--device {device}: torch sees no CUDA device (use --device cpu or auto)")


def check_list(args, path) -> None:
    """Parse a list file now, so a syntax error stops the run before its folder changes."""
    from videomae.data.lists import load_records

    try:
        load_records(path, root=args.data_root, fmt=args.list_format)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(f"videomae {args.command}: error: {str(err).splitlines()[0]}") from None
