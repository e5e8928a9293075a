"""Flags of the official `run_mae_pretraining.py` and `run_class_finetuning.py` (VideoMAE V1 and V2).

Every official flag is accepted with its official arity. Most are our own flags under the same name
(`SAME`); the rest are listed in `OFFICIAL` with what they do here. A flag given on the command line
that changes nothing here prints one note line saying what we do instead; a value we cannot honour
(`--opt sgd`, `--use_cls`) stops with one line before anything runs. docs/official_flags.md is this
table written out by `markdown()` (a test keeps the two equal).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from videomae.commands._common import boolean, fail, flag

PT, FT = "pretrain", "finetune"

# Official flags that are ours too, with the official meaning (our help text says the rest).
SAME = {
    PT: ("batch_size epochs save_ckpt_freq model decoder_depth mask_type mask_ratio input_size drop_path "
         "normlize_target opt_eps opt_betas clip_grad weight_decay weight_decay_end lr min_lr warmup_epochs "
         "warmup_steps use_checkpoint with_checkpoint tubelet_size decoder_mask_type decoder_mask_ratio data_path "
         "data_root num_frames sampling_rate num_sample output_dir log_dir device seed resume num_workers").split(),
    FT: ("batch_size epochs update_freq save_ckpt_freq model tubelet_size input_size fc_drop_rate drop_path opt_eps "
         "opt_betas clip_grad weight_decay weight_decay_end lr layer_decay min_lr warmup_epochs warmup_steps aa "
         "smoothing short_side_size test_num_segment test_num_crop reprob mixup cutmix mixup_prob "
         "mixup_switch_prob finetune init_scale use_checkpoint with_checkpoint data_path data_root nb_classes "
         "num_frames sampling_rate output_dir log_dir device seed resume num_workers").split(),
}


@dataclass(frozen=True)
class Official:
    name: str
    commands: tuple[str, ...]
    here: str  # what the flag does in videomae, one line
    kwargs: dict = field(default_factory=dict)  # argparse arity and type, as the official parser
    dest: str | None = None


def _store(type_=str) -> dict:
    return {"type": type_}


_TRUE = {"action": "store_true"}
_BOTH = (PT, FT)

OFFICIAL = (
    Official("opt", _BOTH, "adamw is the only optimizer here (the official default); another name stops the run",
             _store()),
    Official("momentum", _BOTH, "ignored: SGD momentum, and the optimizer here is AdamW", _store(float)),
    Official("warmup_lr", _BOTH, "ignored: the official scripts scale it but never pass it to their scheduler, "
             "so warmup starts at 0 there and here", _store(float)),
    Official("auto_resume", _BOTH, "= --resume auto (continue from the newest valid checkpoint in --output_dir). "
             "Official default is on; here it is off and a used --output_dir is refused instead", _TRUE),
    Official("no_auto_resume", _BOTH, "the default here: a new run (a used --output_dir is refused)",
             {"action": "store_false", "dest": "auto_resume"}),
    Official("start_epoch", _BOTH, "0 only: a run continues where its checkpoint says (--resume)", _store(int)),
    Official("color_jitter", _BOTH, "ignored: the official video pipelines never apply it either", _store(float)),
    Official("train_interpolation", _BOTH,
             "ignored: RandAugment resamples bicubic (the official default), crops resize bilinear", _store()),
    Official("imagenet_default_mean_and_std", _BOTH, "always: clips are normalized with the ImageNet mean/std",
             _TRUE),
    Official("pin_mem", _BOTH, "automatic: batches are pinned when training on a GPU", _TRUE),
    Official("no_pin_mem", _BOTH, "automatic: batches are pinned when training on a GPU",
             {"action": "store_false", "dest": "pin_mem"}),
    Official("world_size", _BOTH, "taken from torchrun (WORLD_SIZE); launch with `torchrun -m videomae ...`",
             _store(int)),
    Official("local_rank", _BOTH, "taken from torchrun (LOCAL_RANK)", _store(int)),
    Official("dist_on_itp", _BOTH, "not needed: torchrun's environment is read (OpenMPI/ITP launchers are not)",
             _TRUE),
    Official("dist_url", _BOTH, "env:// always (torchrun's rendezvous)", _store()),
    Official("fname_tmpl", _BOTH, "img_{:05}.jpg only (the official default) for rawframe folders", _store()),
    Official("finetune", (PT,), "= --init: start pretraining from these weights (V2 spelling)", _store(),
             dest="init"),
    # fine-tuning only
    Official("drop", (FT,), "dropout rate in the blocks, as official", _store(float), dest="drop_rate"),
    Official("attn_drop_rate", (FT,), "attention dropout rate, as official", _store(float)),
    Official("head_drop_rate", (FT,), "= --fc_drop_rate (V2 name): dropout before the head", _store(float),
             dest="fc_drop_rate"),
    Official("disable_eval_during_finetuning", (FT,), "no validation pass after each epoch, as official", _TRUE),
    Official("model_ema", (FT,), "ignored: no weight EMA here; the final weights are the last step's", _TRUE),
    Official("model_ema_decay", (FT,), "ignored (no weight EMA here)", _store(float)),
    Official("model_ema_force_cpu", (FT,), "ignored (no weight EMA here)", _TRUE),
    Official("num_sample", (FT,), "1 clip per video: repeated augmentation is not implemented for fine-tuning, "
             "so a step sees --batch_size clips (official: batch_size x num_sample)", _store(int),
             dest="ft_num_sample"),
    Official("crop_pct", (FT,), "ignored: the official scripts never use it", _store(float)),
    Official("remode", (FT,), "pixel only (the official default): erased boxes get per-pixel normal noise",
             _store()),
    Official("recount", (FT,), "1 only (the official default): one erased box per clip", _store(int)),
    Official("resplit", (FT,), "ignored: there is no clean augmentation split", _TRUE),
    Official("cutmix_minmax", (FT,), "not supported (the official scripts leave it unset): use --cutmix",
             {"type": float, "nargs": "+"}),
    Official("mixup_mode", (FT,), "batch only (the official default): one mixing draw per batch", _store()),
    Official("model_key", (FT,), "automatic: weights are found under model, module, state_dict or model_state",
             _store()),
    Official("model_prefix", (FT,), "automatic: encoder./backbone./module./_orig_mod. prefixes are stripped",
             _store()),
    Official("use_mean_pooling", (FT,), "always: classifiers mean-pool the tokens (the official default)", _TRUE),
    Official("use_cls", (FT,), "not representable: our classifiers have no class token; the run stops",
             {"action": "store_false", "dest": "use_mean_pooling"}),
    Official("eval_data_path", (FT,), "the list used for validation and the final test (default: DATA_PATH's "
             "val and test lists)", _store()),
    Official("num_segments", (FT,), "1 only (the official default)", _store(int)),
    Official("data_set", (FT,), "sets only what follows from it: SSV2 selects segment sampling unless --sampling "
             "is given; the list format and class count come from the files and --nb_classes", _store()),
    Official("sparse_sample", (FT,), "= --sampling segment (V2 sparse sampling)", _TRUE),
    Official("start_idx", (FT,), "1 only (the official default): rawframe numbering starts at img_00001.jpg",
             _store(int)),
    Official("save_ckpt", (FT,), "always: resumable checkpoints are written (--save_ckpt_freq, --keep_last)", _TRUE),
    Official("no_save_ckpt", (FT,), "not supported: checkpoints are always written; use --keep_last 1 to keep one",
             {"action": "store_false", "dest": "save_ckpt"}),
    Official("eval", (FT,), "evaluation only: the --resume (or --finetune) weights on the test list, as "
             "`videomae evaluate`", _TRUE, dest="eval_only"),
    Official("validation", (FT,), "validation only: the --resume (or --finetune) weights on the val list",
             _TRUE, dest="validation_only"),
    Official("dist_eval", (FT,), "always: evaluation is split across processes and gathered exactly (no "
             "duplicated samples)", _TRUE),
    Official("enable_deepspeed", (FT,), "no DeepSpeed: DDP under torchrun, --fsdp for sharded weights; "
             "fp16/bf16 via --precision", _TRUE),
    Official("deepspeed", (FT,), "no DeepSpeed (see --enable_deepspeed)", _TRUE),
    Official("deepspeed_config", (FT,), "no DeepSpeed (see --enable_deepspeed)", _store()),
)


def _dest(o: Official) -> str:
    return o.dest or o.kwargs.get("dest") or o.name


def add_official(p, command: str) -> None:
    """The official-only flags of `command`'s script; each stays off the namespace unless given."""
    g = p.add_argument_group("official flags (accepted for their command lines; see docs/official_flags.md)")
    for o in OFFICIAL:
        if command in o.commands:
            kwargs = {**o.kwargs, "dest": _dest(o), "default": argparse.SUPPRESS, "help": o.here}
            flag(g, f"--{o.name}", **kwargs)


def given(args, name: str) -> bool:
    return hasattr(args, name)


def apply_official(args) -> list[str]:
    """Official flags -> our settings; -> the note lines to print. Raises UsageError for values we cannot honour."""
    notes, done = [], set()
    for o in OFFICIAL:
        if args.command not in o.commands or not given(args, _dest(o)) or _dest(o) in done:
            continue
        done.add(_dest(o))
        if o.name in _APPLY:
            note = _APPLY[o.name](args, getattr(args, _dest(o)))
            if note:
                notes.append(f"note: --{o.name}: {note}")
        elif o.name not in _SILENT:
            notes.append(f"note: --{o.name}: {o.here}")
    return notes


def _opt(args, value):
    if value.lower() != "adamw":
        fail(args, f"--opt {value}: only adamw is available here (the official recipe's optimizer)")


def _auto_resume(args, value):
    if value and args.resume is None:
        args.resume = "auto"


def _only(name: str, allowed, why: str):
    def check(args, value):
        if value not in allowed:
            fail(args, f"--{name} {value}: {why}")

    return check


def _data_set(args, value):
    if value.upper() == "SSV2" and "sampling" not in args._explicit:
        args.sampling = "segment"
        return "SSV2: segment sampling (as the official SSv2 loader)"
    return None


def _sparse(args, value):
    args.sampling = "segment"


def _no_save(args, value):
    if value is False:
        fail(args, "--no_save_ckpt: checkpoints are always written here; use --keep_last 1 to keep only the newest")


def _mean_pooling(args, value):
    if value is False:
        fail(args, "--use_cls: our classifiers mean-pool tokens and have no class token (drop the flag)")


def _eval_only(args, value):
    if value and (args.resume or args.finetune) is None:
        fail(args, "--eval needs the weights to evaluate: --resume FILE or --finetune FILE")


def _cutmix_minmax(args, value):
    fail(args, "--cutmix_minmax is not supported; use --cutmix ALPHA (the official scripts leave it unset)")


_APPLY = {
    "opt": _opt,
    "auto_resume": _auto_resume,
    "no_auto_resume": lambda args, value: None,
    "start_epoch": _only("start_epoch", (0,), "a run continues where its checkpoint says: use --resume"),
    "fname_tmpl": _only("fname_tmpl", ("img_{:05}.jpg", "img_{:05d}.jpg"), "only img_{:05}.jpg rawframes are read"),
    "num_segments": _only("num_segments", (1,), "only 1 (the official default) is supported"),
    "start_idx": _only("start_idx", (1,), "rawframe numbering starts at 1 here (img_00001.jpg)"),
    "remode": _only("remode", ("pixel",), "only pixel random erasing (the official default)"),
    "recount": _only("recount", (1,), "only one erased box per clip (the official default)"),
    "mixup_mode": _only("mixup_mode", ("batch",), "only batch mixing (the official default)"),
    "data_set": _data_set,
    "sparse_sample": _sparse,
    "no_save_ckpt": _no_save,
    "save_ckpt": lambda args, value: _no_save(args, value),
    "use_cls": _mean_pooling,
    "use_mean_pooling": _mean_pooling,
    "cutmix_minmax": _cutmix_minmax,
    "eval": _eval_only,
}
# Real settings with no news to print: the flag is ours in all but name.
_SILENT = {"finetune", "drop", "attn_drop_rate", "head_drop_rate", "disable_eval_during_finetuning", "eval_data_path",
           "imagenet_default_mean_and_std", "use_mean_pooling", "validation", "eval"}


def boolean_flag(group, name: str, default: bool, help: str) -> None:
    """`--name` alone, `--name True|False` (official `type=bool` arity), and `--no_name`."""
    flag(group, f"--{name}", dest=name, nargs="?", const=True, type=boolean, help=help)
    flag(group, f"--no_{name}", dest=name, action="store_false", help=f"turn --{name} off")
    group.set_defaults(**{name: default})


def markdown() -> str:
    """docs/official_flags.md: every official flag and what it does here."""
    lines = ["# Official flags in `videomae pretrain` / `videomae finetune`", "",
             "Written by `videomae.commands.official.markdown()`; tests/test_cli_official.py keeps it current.",
             "Every flag of the official `run_mae_pretraining.py` and `run_class_finetuning.py` (VideoMAE V1 "
             "and V2) is accepted with its official arity. A flag that changes nothing here prints one note "
             "line; a value that cannot be honoured stops the run with one line before anything is written.", "",
             "## Same name, same meaning", ""]
    for command in (PT, FT):
        lines.append(f"- `{command}`: " + ", ".join(f"`--{n}`" for n in SAME[command]))
    lines += ["", "Differences of note: `--normlize_target False` means false here (the official `type=bool` "
              "made every word true); `--opt_betas` takes two tokens or one comma-separated token; "
              "`--use_checkpoint`/`--with_checkpoint` are `--grad_checkpointing`; `--update_freq` is "
              "`--accum_iter`.", "", "## Official flags with another meaning here", "",
              "| flag | script | here |", "|---|---|---|"]
    for o in OFFICIAL:
        script = "both" if len(o.commands) == 2 else o.commands[0]
        lines.append(f"| `--{o.name}` | {script} | {o.here} |")
    return "\n".join(lines) + "\n"
