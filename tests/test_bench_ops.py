"""The op microbenchmarks (bench/ops, pytest-benchmark) cannot rot: every file runs, and a timed run writes
pytest-benchmark JSON whose extra_info holds what the op must move and the GB/s it reached, with provenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1", "BENCH_RESULTS": str(tmp_path / "results"),
           "OUT": str(tmp_path / "out")}
    env.pop("BENCH_RUN", None)
    return env


def test_every_op_benchmark_runs_once(tmp_path):
    """`pytest bench/ops --benchmark-disable`: each op x impl x mode once, untimed; those that cannot run here
    (the CUDA kernels without a GPU, GPU-only attention) are skipped with their reasons, nothing fails."""
    res = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "bench/ops",
                          "--benchmark-disable", "-rs"], cwd=ROOT, env=_env(tmp_path), capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    status = dict(line.split(" ")[:2] for line in res.stdout.splitlines() if line.startswith("bench/ops/bench_"))
    passed = {node.split("::")[1] for node, s in status.items() if s == "PASSED"}
    modes = ("forward", "backward", "both")
    for op in ("cube_embed", "decoder_input", "norm_pix_mse"):
        assert {f"test_{op}[tiny-{impl}-{m}]" for impl in ("eager", "torch", "triton") for m in modes} <= passed
    assert {f"test_attention[tiny-{where}-eager-{m}]" for where in ("encoder", "decoder") for m in modes} <= passed
    assert "FAILED" not in status.values() and "ERROR" not in status.values()
    assert not any("compile" in node for node in status)  # opt-in only (--bench-impls compile)
    if not torch.cuda.is_available():
        assert status["bench/ops/bench_cube_embed.py::test_cube_embed[tiny-cuda-forward]"] == "SKIPPED"
        assert "cube_embed on cuda" in res.stdout and "no CUDA device" in res.stdout  # the skip says why


def _tiny_case_norm_pix_mse_forward_bytes() -> int:
    """By hand for the CPU shape B2-4x32x48, cubes 2x16x16, tube 0.75: a 2x2x3 grid, int(0.75 * 6) = 4 masked
    per frame -> 8 decoded cubes per clip. bf16 pred [2, 8, 1536], int64 ids [2, 8], fp32 cubes 2 * 8 * 1536."""
    return 2 * 8 * 1536 * 2 + 2 * 8 * 8 + 2 * 8 * 1536 * 4


def test_timed_run_writes_gbps_and_provenance_through_the_gpu_script_entry(tmp_path):
    """`python -m bench.ops --rehearse --impls torch,eager` (what bench/gpu.sh runs, on the CPU) times two ops
    under pytest-benchmark and writes <results>/ops-torch-eager.json, mirrored into $OUT."""
    cmd = [sys.executable, "-m", "bench.ops", "--rehearse", "--impls", "torch,eager", "-q", "-k",
           "norm_pix_mse or decoder_input", "--benchmark-max-time=0", "--benchmark-min-rounds=2"]
    res = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    written = json.loads((tmp_path / "results" / "ops-torch-eager.json").read_text())
    assert json.loads((tmp_path / "out" / "ops-torch-eager.json").read_text()) == written
    info = written["machine_info"]["videomae"]
    assert info["device"].startswith("cpu") and info["torch"] == torch.__version__ and info["git_sha"]
    assert "says nothing about speed" in info["note"] and info["shapes"] == {"tiny": "B2-4x32x48-t2p16-D64-tube0.75"}
    benches = written["benchmarks"]
    got = sorted((b["extra_info"]["op"], b["extra_info"]["impl"], b["extra_info"]["mode"]) for b in benches)
    assert got == sorted((op, impl, mode) for op in ("decoder_input", "norm_pix_mse") for impl in ("torch", "eager")
                         for mode in ("forward", "backward", "both"))
    for b in benches:
        x, stats = b["extra_info"], b["stats"]
        assert stats["rounds"] >= 2 and "data" not in stats
        assert abs(x["gbps"] * 1e9 * stats["median"] / x["bytes"] - 1) < 1e-9  # GB/s = bytes / median time
        assert x["frac_of_peak_spec"] is None and x["peak_gbps_spec"] is None  # no stated peak for a CPU
        assert x["speedup_vs_eager"] > 0 and b["group"] == f"{x['op']} {x['mode']} tiny"
    fwd = next(b for b in benches if b["name"] == "test_norm_pix_mse[tiny-eager-forward]")
    assert fwd["extra_info"]["bytes"] == _tiny_case_norm_pix_mse_forward_bytes()
    assert "op benchmarks: GB/s" in res.stdout  # the summary table


def test_stated_peaks_and_the_fraction_of_peak():
    from bench.ops.opbench import NO_PEAK, PEAKS, Session

    assert PEAKS["H200"].gbps_spec == 4800.0 and PEAKS["H200"].gbps_copy == 4300.0  # GUIDE section 3
    s = Session("cuda", [], min_rounds=5, max_time=1.0, peak=PEAKS["H200"])
    assert s.rounds(1e-3) == 1000 and s.rounds(10.0) == 5 and s.rounds(1e-9) == 2000
    assert NO_PEAK.gbps_spec is None
