"""pytest plugin of bench/gpu.sh's tests step: the GPU tests that fit its time limit, broadest first.

    pytest -p bench.gpu_tests --gpu-budget 35 -m gpu FILES

About 370 tests carry the `gpu` mark, most of them parametrizations of a few dozen functions, against a limit of
under a minute. With `--gpu-budget`, the tests run round-robin over their test functions (every function's first
parametrization, then every function's second, ...), so each kind of check runs once before any runs twice; a test
not started by the time the budget is spent is skipped, saying so, and the summary line counts what ran.
"""

from __future__ import annotations

import time

import pytest

_START = pytest.StashKey[float]()
_RAN = pytest.StashKey[list]()
_SELECTED = pytest.StashKey[int]()


def pytest_addoption(parser):
    parser.addoption("--gpu-budget", type=float, default=None, metavar="SECONDS",
                     help="start no test after SECONDS (from the session's start); run round-robin over functions")


def broadest_first(items: list) -> list:
    """Round-robin over test functions (file order kept): rank r holds every function's r-th parametrization."""
    by_function: dict[tuple, list] = {}
    for item in items:
        by_function.setdefault((str(item.path), item.originalname), []).append(item)
    ordered = []
    for rank in range(max((len(v) for v in by_function.values()), default=0)):
        ordered += [group[rank] for group in by_function.values() if rank < len(group)]
    return ordered


def pytest_sessionstart(session):
    session.config.stash[_START] = time.monotonic()
    session.config.stash[_RAN] = []


@pytest.hookimpl(trylast=True)  # after -m and -k deselect
def pytest_collection_modifyitems(config, items):
    if config.getoption("gpu_budget") is not None:
        items[:] = broadest_first(items)
        config.stash[_SELECTED] = len(items)


def pytest_runtest_setup(item):
    budget = item.config.getoption("gpu_budget")
    if budget is None:
        return
    spent = time.monotonic() - item.config.stash[_START]
    if spent > budget:
        pytest.skip(f"gpu budget spent ({spent:.0f} s of {budget:.0f} s)")
    item.config.stash[_RAN].append(item.nodeid)


def pytest_terminal_summary(terminalreporter, config):
    budget = config.getoption("gpu_budget")
    if budget is None:
        return
    ran = config.stash.get(_RAN, [])
    total = config.stash.get(_SELECTED, 0)
    functions = {n.split("[")[0] for n in ran}
    terminalreporter.write_line(f"gpu budget {budget:.0f} s: {len(ran)} of {total} tests started "
                                f"({len(functions)} test functions)")
