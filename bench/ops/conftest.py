"""pytest-benchmark setup of the op microbenchmarks: `pytest bench/ops --benchmark-only`.

Collects bench/ops/bench_*.py (the tests' own pattern is test_*.py), parametrizes every benchmark over the
shapes of this device (a GPU: the ViT sizes of --bench-models at B=32, 16x224x224, tube 0.9; the CPU: one tiny
shape, for CI under TRITON_INTERPRET=1, whose timings say nothing about speed), keeps the impls of
--bench-impls, and records the device, versions and git sha in the JSON's machine_info (`videomae` key).
The per-round times stay out of the --benchmark-json file unless --benchmark-save-data is given (thousands of
numbers per benchmark; the statistics are always there).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bench.common import provenance
from bench.ops.opbench import TINY_CASE, Session, peak_of
from videomae.ops import testing as T

HERE = Path(__file__).resolve().parent
_SESSION = pytest.StashKey[Session]()
CPU_NOTE = ("CPU timing of a tiny shape (Triton under TRITON_INTERPRET=1): it proves the code paths and the "
            "results format, and says nothing about speed")


def pytest_addoption(parser):
    g = parser.getgroup("videomae op benchmarks")
    g.addoption("--bench-models", default="B", help="ViT sizes timed on a GPU, comma list of S, B, L "
                "(B=32, 16x224x224, tube 0.9; default B)")
    g.addoption("--bench-impls", default=None, help="comma list of impls: backends (cuda, triton, torch; for "
                "attention its own), eager, compile (default: every backend and eager)")
    g.addoption("--bench-cpu", action="store_true", help="time the tiny CPU shape even where a GPU is present")


def pytest_collect_file(file_path, parent):
    # A file named on the command line is collected by pytest itself.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def session_of(config) -> Session:
    """The one Session of this run, made on first use from the options."""
    if _SESSION not in config.stash:
        from videomae.kernels._common import INTERPRET

        device = "cuda" if torch.cuda.is_available() and not config.getoption("bench_cpu") else "cpu"
        if device == "cuda" and INTERPRET:
            raise pytest.UsageError("TRITON_INTERPRET=1 would time the Triton interpreter on the GPU: unset it "
                                    "for GPU figures, or pass --bench-cpu")
        models = config.getoption("bench_models").split(",")
        if not set(models) <= set(T.VIT):
            raise pytest.UsageError(f"--bench-models takes sizes of {sorted(T.VIT)}, got "
                                    f"{config.getoption('bench_models')}")
        cases = [(f"ViT-{m}", T.VIT[m]) for m in models] if device == "cuda" else [("tiny", TINY_CASE)]
        config.stash[_SESSION] = Session(
            device, cases, min_rounds=config.getoption("benchmark_min_rounds"),
            max_time=float(config.getoption("benchmark_max_time")), peak=peak_of(device))
    return config.stash[_SESSION]


@pytest.fixture(scope="session")
def bench_session(request) -> Session:
    return session_of(request.config)


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = session_of(metafunc.config).cases
        metafunc.parametrize("case", cases, ids=[label for label, _ in cases])


def pytest_collection_modifyitems(config, items):
    given = config.getoption("bench_impls")
    wanted = set(given.split(",")) if given else None
    keep, drop = [], []
    for item in items:
        impl = getattr(item, "callspec", None) and item.callspec.params.get("impl")
        ours = HERE in Path(item.path).resolve().parents
        if impl is None or not ours or (impl in wanted if wanted else impl != "compile"):
            keep.append(item)
        else:
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_benchmark_update_machine_info(config, machine_info):
    s = session_of(config)
    info = provenance(None, s.device)
    info.pop("backend")
    info.update(timing="perf_counter around each call + torch.cuda.synchronize(), L2 flushed before each round"
                if s.cuda else "perf_counter around each call (CPU)",
                shapes={label: str(case) for label, case in s.cases}, dtype="bfloat16-autocast, TF32 off",
                peak=vars(s.peak), triton_interpret=os.environ.get("TRITON_INTERPRET", ""))
    if not s.cuda:
        info["note"] = CPU_NOTE
    machine_info["videomae"] = info


def pytest_benchmark_update_json(config, benchmarks, output_json):
    if not config.getoption("benchmark_save_data"):
        for bench in output_json["benchmarks"]:
            bench["stats"].pop("data", None)


def pytest_terminal_summary(terminalreporter, config):
    s = config.stash.get(_SESSION, None)
    if s is None or not s.rows:
        return
    tr = terminalreporter
    tr.section("op benchmarks: GB/s the op must move, fraction of the stated peak, speedup over eager")
    tr.write_line(f"{'op':18s} {'impl':14s} {'mode':8s} {'shape':6s} {'median ms':>10s} {'GB/s':>9s} "
                  f"{'of peak':>8s} {'vs eager':>8s}")
    for r in s.rows:
        frac = r["frac_of_peak_spec"]
        speedup = r["speedup_vs_eager"]
        tr.write_line(f"{r['op']:18s} {r['impl']:14s} {r['mode']:8s} {r['model']:6s} {r['median_ms']:10.3f} "
                      f"{r['gbps']:9.1f} {'-' if frac is None else f'{100 * frac:.1f}%':>8s} "
                      f"{'-' if speedup is None else f'{speedup:.2f}x':>8s}")
    if not s.cuda:
        tr.write_line(CPU_NOTE)
