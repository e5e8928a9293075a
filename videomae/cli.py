"""The `videomae` command (also `python -m videomae`, so `torchrun -m videomae ...` works).

    videomae pretrain  [--data_path LIST|DIR] ...   masked pretraining (no data: built-in synthetic demo)
    videomae finetune  --data_path DIR --finetune WEIGHTS ...
    videomae evaluate  --data_path LIST --checkpoint WEIGHTS
    videomae visualize --checkpoint WEIGHTS --video FILE
    videomae extract | predict | export | info | bench NAME | data synth|prep

Each subcommand lives in `videomae/commands/<name>.py` with its flags next to its runner. Flags keep the
official scripts' underscore names and accept dashes too (`--batch_size` or `--batch-size`); the official
scripts' other flags are accepted as well (docs/official_flags.md). `--config FILE.yaml` sets any flag
(command-line flags win). Every flag, size, path, list and checkpoint is checked before anything on disk
changes; mistakes print one line on stderr and exit with status 2 (a mistyped flag gets a "did you mean").

Launchers: torchrun, `python -m torch.distributed.launch` (its `--local-rank=N`, before or after the subcommand,
is read as LOCAL_RANK) and Slurm's `srun` (SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, as the official V2
scripts read them; `videomae.train.distributed.adopt_launcher_env`). A weights flag (`--init`, `--finetune`,
`--checkpoint`) takes a file, a Hugging Face folder or a Hub id; a folder or id with a config.json sets the model
and clip geometry not given on the command line (`apply_weights`).
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path

from videomae.commands import SUBCOMMANDS
from videomae.commands._common import EXIT_FAILED, EXIT_USAGE, Parser, UsageError, say
from videomae.commands.bench import bench_dir  # noqa: F401 - public: tests and docs refer to cli.bench_dir
from videomae.commands.official import apply_official
from videomae.commands.pretrain import DEMO, cache_dir  # noqa: F401 - public: the demo preset and its cache

COMMANDS = {m.NAME: m for m in SUBCOMMANDS}


def build_parser() -> Parser:
    root = Parser(prog="videomae", description="VideoMAE pretraining, fine-tuning, evaluation and tools.")
    sub = root.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module in SUBCOMMANDS:
        p = sub.add_parser(module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           usage=getattr(module, "USAGE", "%(prog)s [flags]"))
        module.add_arguments(p)
    return root


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
            close = difflib.get_close_matches(dest, [a for a in actions if a not in ("help", "config")], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"{parser.prog}: error: --config {path}: unknown option {key!r}{hint}")
        action = actions[dest]
        if isinstance(value, str) and action.type is not None:
            value = action.type(value)
        if action.dest == "opt_betas":
            items = value if isinstance(value, list) else str(value).replace(",", " ").split()
            value = tuple(float(v) for v in items)
        if action.choices is not None and value not in action.choices:
            raise UsageError(f"{parser.prog}: error: --config {path}: {key}={value!r} is not one of "
                             f"{', '.join(map(str, action.choices))}")
        out[dest] = value
    return out


def _unknown(parser: Parser, argv: list[str], extras: list[str]) -> UsageError:
    """One line for arguments no parser took: the (sub)command that refused them, and the closest flag."""
    sub = _subparser(parser, argv)
    if sub is not parser and sub._subparsers is not None:
        sub = _subparser(sub, argv[1:])  # `data prep`: the tool's own parser
    flags = [e.split("=", 1)[0] for e in extras if e.startswith("-")]
    if not flags:
        return UsageError(f"{sub.prog}: unexpected argument {extras[0]!r} (see {sub.prog} --help)")
    known = [o for o in sub._option_string_actions if o.startswith("--")]
    close = difflib.get_close_matches(flags[0], known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f" (see {sub.prog} --help)"
    return UsageError(f"{sub.prog}: unknown flag {flags[0]}{hint}")


def parse(argv: list[str]) -> argparse.Namespace:
    """Defaults < demo preset (pretrain without data) < --config file < command line."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        raise _unknown(parser, argv, extras)
    sub = _subparser(parser, argv)
    given = explicit_dests(sub, argv)
    config = load_config(args.config, sub) if getattr(args, "config", None) else {}
    args.demo = args.command == "pretrain" and not (args.data_path or config.get("data_path"))
    layered = {**(DEMO if args.demo else {}), **config}
    for key, value in layered.items():
        if key not in given:
            setattr(args, key, value)
    args._explicit = given | set(layered)
    return args


# The flag naming the weights each command starts from, and the kind of model they go into.
WEIGHTS = {"pretrain": ("init", "pretrain"), "finetune": ("finetune", "vit"), "evaluate": ("checkpoint", "vit"),
           "visualize": ("checkpoint", "pretrain"), "export": ("checkpoint", None), "extract": ("checkpoint", "vit"),
           "predict": ("checkpoint", "vit")}


def check(args) -> None:
    """Every check that can run before anything on disk changes (official flags first: they set ours)."""
    from videomae.commands._common import apply_weights, check_device

    for note in apply_official(args) if args.command in ("pretrain", "finetune") else []:
        say(note)
    check_device(args)
    if args.command in WEIGHTS:
        apply_weights(args, *WEIGHTS[args.command])
    COMMANDS[args.command].check(args)


def launcher_argv(argv: list[str]) -> list[str]:
    """`python -m torch.distributed.launch` passes `--local-rank=N` (older torch: `--local_rank N`), before or after
    the subcommand: it becomes LOCAL_RANK (which the launcher sets too) and leaves the command line."""
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        if token == "--":  # what follows belongs to another program (`videomae bench NAME -- ARGS`)
            return out + argv[i:]
        name, eq, value = token.partition("=")
        if name in ("--local-rank", "--local_rank"):
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else ""
            if not value.isdigit():
                raise UsageError(f"videomae: error: {name} expects a process index, got {value!r}")
            os.environ.setdefault("LOCAL_RANK", value)
        else:
            out.append(token)
        i += 1
    return out


def _output_folders(args) -> list[Path]:
    """The folders a command writes that did not exist before it ran."""
    found = []
    for name in ("output_dir", "output"):
        value = getattr(args, name, None)
        if isinstance(value, str) and not Path(value).exists():
            found.append(Path(value))
    return found


def _remove_if_empty(folders: list[Path]) -> None:
    """A command that failed before writing anything leaves no folder behind (files are never touched)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty, or never created
            pass


def main(argv: list[str] | None = None) -> int:
    from videomae.train.distributed import adopt_launcher_env

    argv = list(sys.argv[1:] if argv is None else argv)
    created: list[Path] = []
    try:
        argv = launcher_argv(argv)
        adopt_launcher_env()
        args = parse(argv)
        check(args)
        created = _output_folders(args)
        code = COMMANDS[args.command].run(args)
        if code:
            _remove_if_empty(created)
        return code
    except UsageError as err:
        _remove_if_empty(created)
        print(str(err), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("videomae: interrupted before a step boundary could be saved (a second Ctrl-C, or during setup); "
              "--resume auto continues from the newest saved checkpoint, if any", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - known failure kinds become one line; bugs keep their traceback
        from videomae.train.run import Interrupted

        _remove_if_empty(created)
        if isinstance(err, Interrupted):
            print(f"videomae {argv[0]}: {err}", file=sys.stderr)
            return err.exit_code
        text = _one_line(err)
        if text is None or os.environ.get("VIDEOMAE_DEBUG"):
            raise
        lines = text.strip().splitlines() or [type(err).__name__]
        more = f" (+{len(lines) - 1} more lines: rerun with VIDEOMAE_DEBUG=1)" if len(lines) > 1 else ""
        print(f"videomae {argv[0] if argv else ''}: error: {lines[0]}{more}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, ValueError | FileNotFoundError) else EXIT_FAILED


def _one_line(err: Exception) -> str | None:
    """Errors that describe the user's input, data or storage rather than a bug in videomae."""
    from videomae.integrity import STORAGE_ERRNOS, storage_error
    from videomae.train.step import TrainingDiverged

    if isinstance(err, FileNotFoundError | TrainingDiverged):
        return str(err)
    storage = storage_error(err)
    if storage is not None and storage.errno in STORAGE_ERRNOS:  # disk full, read-only, permission
        where = storage.filename or "the output folder"
        return str(storage) if type(storage).__str__ is not OSError.__str__ else f"{where}: {storage.strerror}"
    if isinstance(err, OSError) and err.filename is not None:  # any other failed read or write: the path and why
        return str(err)
    if isinstance(err, ValueError) and not isinstance(err, UnicodeError):
        return str(err)
    if isinstance(err, RuntimeError) and "unreadable" in str(err):
        # From a loader worker the message is wrapped in the worker's traceback: keep the error line.
        lines = [x for x in str(err).splitlines() if "unreadable" in x]
        return lines[-1].removeprefix("RuntimeError: ")
    return None
