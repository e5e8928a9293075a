"""`videomae bench NAME`: run bench/NAME.py of a source checkout (benchmarks ship with the source, not the wheel)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from videomae.commands import _common as c

NAME = "bench"
HELP = "run a benchmark script from a source checkout's bench/ (e.g. `videomae bench loader -- ARGS`)"
DESCRIPTION = "Runs `python bench/NAME.py ARGS` of the source tree; without NAME lists the scripts."


def add_arguments(p) -> None:
    p.add_argument("name", nargs="?", help="benchmark script name (bench/NAME.py)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")


def bench_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "bench"


def scripts() -> list[str]:
    """The runnable scripts of bench/ (those with a `__main__` block; the helper modules are not listed)."""
    folder = bench_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.py")
                  if not p.name.startswith("_") and '__name__ == "__main__"' in p.read_text(errors="replace"))


def matches(name: str, found: list[str]) -> list[str]:
    """`[name]` when it is a script, else every script it begins (`cost` -> `cost_model`)."""
    return [name] if name in found else [s for s in found if s.startswith(name)]


def resolve(name: str, found: list[str]) -> str | None:
    """The one script `name` means; None when none or several match."""
    hits = matches(name, found)
    return hits[0] if len(hits) == 1 else None


def check(args) -> None:
    found = scripts()
    if not found:
        c.fail(args, f"no benchmark scripts in {bench_dir()} (bench/ ships with the source tree, not the wheel)")
    if args.name:
        hits = matches(args.name, found)
        if not hits:
            c.fail(args, f"no benchmark {args.name!r} in {bench_dir()}; available: {', '.join(found)}")
        if len(hits) > 1:
            c.fail(args, f"benchmark {args.name!r} is ambiguous: {', '.join(hits)}")
        args.name = hits[0]


def run(args) -> int:
    if not args.name:
        print("benchmarks (videomae bench NAME [-- ARGS]):\n" + "\n".join(f"  {s}" for s in scripts()))
        return 0
    import subprocess

    # A child process, as `python bench/NAME.py`: the script runs exactly as documented in its own header.
    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    return subprocess.call([sys.executable, str(bench_dir() / f"{args.name}.py"), *rest], cwd=bench_dir().parent)
