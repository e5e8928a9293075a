"""`python -m bench.ops`: the op microbenchmarks through pytest-benchmark, results in <results>/<name>.json.

    python -m bench.ops [--rehearse] [--models S,B,L] [--impls triton,eager] [--name ops] [pytest options]

is `pytest bench/ops --benchmark-only --benchmark-json <results>/<name>.json` with the same selections
(--rehearse: --bench-cpu, the tiny CPU shape), kept so that bench/gpu.sh reads the same on both sides. <results>
is bench/results or $BENCH_RESULTS; the file is copied into $OUT when that names a folder. The default name is
`ops`, or `ops-<impls>` when --impls is given (the compiled rows do not overwrite the others). Each benchmark
runs for at most 0.25 s here (--benchmark-max-time overrides it): about 80 of them fit bench/gpu.sh's limit;
with --rehearse one round each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from bench.common import mirror_to_out, results_dir

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ops", description=__doc__.splitlines()[0])
    ap.add_argument("--rehearse", action="store_true", help="the tiny CPU shape (with TRITON_INTERPRET=1)")
    ap.add_argument("--models", default="B", help="ViT sizes timed on a GPU (comma list of S, B, L)")
    ap.add_argument("--impls", default=None, help="comma list of backends, eager, compile")
    ap.add_argument("--name", default=None, help="results file <results>/<name>.json")
    args, rest = ap.parse_known_args(argv)
    name = args.name or ("ops-" + args.impls.replace(",", "-") if args.impls else "ops")
    path = results_dir() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    pytest_args = [str(HERE), "--benchmark-only", f"--benchmark-json={path}", "-p", "no:cacheprovider",
                   f"--bench-models={args.models}", *(["--bench-cpu"] if args.rehearse else []),
                   *([f"--bench-impls={args.impls}"] if args.impls else []), *rest]
    # A rehearsal proves the code paths: one timed round per benchmark.
    defaults = {"--benchmark-max-time": "0" if args.rehearse else "0.25", "--benchmark-min-rounds": "1" if
                args.rehearse else None}
    pytest_args += [f"{k}={v}" for k, v in defaults.items() if v and not any(a.startswith(k) for a in rest)]
    rc = int(pytest.main(pytest_args))
    if path.exists():
        mirror_to_out(path)
        print(f"wrote {path}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
