"""bench/gpu.sh and bench/common.py on the CPU: every row carries its provenance, a failed or hung step is recorded
and the next one runs, the budget and $OUT's file cap hold, TF32 never leaks out of a row."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import common
from bench.common import ResultWriter, git_sha, tf32, timer

ROOT = Path(__file__).resolve().parents[1]
PROVENANCE = {"backend", "device", "driver", "cuda", "torch", "triton", "transformers", "python", "git_sha", "run",
              "date_utc"}


@pytest.fixture
def results(tmp_path, monkeypatch):
    """Results and $OUT in tmp_path, one run id: never the committed bench/results."""
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    monkeypatch.setenv("BENCH_RUN", "test-run")
    return tmp_path


def rows(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"]


# ---------------------------------------------------------------------------------------------- bench.common


def test_git_sha_from_env_only_without_git(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_SHA", "abc1234")
    assert git_sha(tmp_path) == "abc1234"
    monkeypatch.delenv("GIT_SHA")
    assert git_sha(tmp_path / "elsewhere") == "unknown"
    if (ROOT / ".git").exists():  # a checkout: the sha of HEAD, not the variable
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        assert git_sha(ROOT).removesuffix("-dirty") == head


def test_rows_carry_provenance_and_append_across_writers(results):
    first = ResultWriter("unit").add({"op": "x", "ms": 1.5}, backend="triton", device="cpu", tf32=False)
    ResultWriter("unit").add({"op": "y"}, backend="torch", device="cpu")
    written = rows(results / "results" / "unit.json")
    assert [r["op"] for r in written] == ["x", "y"]
    assert PROVENANCE <= set(first) and first == written[0]
    assert (first["backend"], first["tf32"], first["run"]) == ("triton", False, "test-run")
    assert first["torch"] == torch.__version__ and first["device"].startswith("cpu")
    assert first["python"] == ".".join(map(str, sys.version_info[:3]))
    assert (results / "out" / "unit.json").read_text() == (results / "results" / "unit.json").read_text()


def test_out_never_holds_more_than_eight_files(results):
    out = results / "out"
    out.mkdir()
    for i in range(common.OUT_MAX_FILES - 1):
        (out / f"f{i}.log").write_text("x")
    ResultWriter("eighth").add({"v": 1}, backend=None)
    ResultWriter("ninth").add({"v": 2}, backend=None)
    assert (out / "eighth.json").exists() and not (out / "ninth.json").exists()
    assert rows(results / "results" / "ninth.json")[0]["v"] == 2  # still written to the results folder
    ResultWriter("eighth").add({"v": 3}, backend=None)  # a file already there is updated
    assert [r["v"] for r in rows(out / "eighth.json")] == [1, 3]
    assert len(list(out.iterdir())) == common.OUT_MAX_FILES


def test_writer_names_must_suit_out():
    with pytest.raises(ValueError, match="name must be"):
        ResultWriter("a/b")


def test_tf32_set_per_row_and_restored():
    matmul = torch.backends.cuda.matmul
    before = (matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    with tf32(True):
        assert matmul.allow_tf32 and torch.backends.cudnn.allow_tf32 and common.tf32_state()
        assert torch.get_float32_matmul_precision() == "high"
    assert (matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()) == before
    with pytest.raises(RuntimeError), tf32(not before[0]):
        raise RuntimeError("a row that fails")
    assert (matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()) == before


def test_cpu_timer_takes_the_median_after_warmup():
    calls = []

    def fn():
        time.sleep(0.02 if not calls else 0.002)  # the first call is slow, as a first call compiles
        calls.append(1)

    t = timer(fn, "cpu", warmup_ms=0, rep_ms=30)
    assert t.method == "perf_counter" and t.calls >= 3 and len(calls) == t.calls + 1
    assert 2 <= t.median_ms < 15 and t.p20_ms <= t.median_ms <= t.p80_ms


def test_step_rows_and_summary(results, capsys):
    for step, rc, extra in [("a", 0, []), ("b", 3, []), ("c", 124, []), ("d", 0, ["--skipped"])]:
        assert common.main(["step", "--step", step, "--rc", str(rc), "--seconds", "1.25", "--limit", "9", *extra]) == 0
    written = rows(results / "results" / "gpu_steps.json")
    assert [(r["step"], r["status"]) for r in written] == [("a", "ok"), ("b", "failed"), ("c", "timeout"),
                                                          ("d", "skipped")]
    assert all(PROVENANCE <= set(r) for r in written)
    assert common.main(["summary"]) == 1
    assert "timeout" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- bench/gpu.sh


def gpu_sh(args: list[str], tmp_path: Path, python: str = sys.executable, timeout: float = 600):
    env = {**os.environ, "PYTHON": python, "BENCH_RESULTS": str(tmp_path / "results"), "OUT": str(tmp_path / "out")}
    env.pop("BENCH_RUN", None)
    return subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


def planted_python(tmp_path: Path) -> str:
    """A python that fails the smoke step, hangs in the op benchmarks and passes the loader step; everything
    else (the status rows) is the real interpreter."""
    script = tmp_path / "python"
    script.write_text(f"""#!/usr/bin/env bash
case " $* " in
  *" -m bench.ops.smoke "*) echo "planted failure"; exit 3 ;;
  *" -m bench.ops "*) exec sleep 120 ;;
  *" bench/loader.py --help "*) echo "usage: loader.py [--rehearse] [--gpu]" ;;
  *" bench/loader.py "*) echo "loader step ran" ;;
  *) exec {sys.executable} "$@" ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_failed_and_hung_steps_are_recorded_and_the_next_step_runs(tmp_path):
    t0 = time.monotonic()
    res = gpu_sh(["--rehearse", "--steps", "smoke,ops,loader", "--limit", "ops=3"], tmp_path,
                 python=planted_python(tmp_path))
    assert res.returncode == 1, res.stdout + res.stderr
    assert time.monotonic() - t0 < 120  # the hung step was cut at its limit, not left to finish
    steps = rows(tmp_path / "results" / "gpu_steps.json")
    assert [(r["step"], r["status"], r["rc"]) for r in steps] == [
        ("smoke", "failed", 3), ("ops", "timeout", 124), ("loader", "ok", 0)]
    assert steps[1]["limit_s"] == 3 and 2.5 < steps[1]["seconds"] < 30
    assert all(PROVENANCE <= set(r) for r in steps) and len({r["run"] for r in steps}) == 1
    log = (tmp_path / "out" / "gpu.log").read_text()
    assert "planted failure" in log and "loader step ran" in log and "FAILED steps: smoke ops" in log
    assert json.loads((tmp_path / "out" / "gpu_steps.json").read_text())["rows"] == steps
    assert res.stdout.rstrip().endswith("gpu.sh: FAILED steps: smoke ops")


def test_spent_budget_skips_steps_and_fails_a_rehearsal(tmp_path):
    res = gpu_sh(["--rehearse", "--steps", "smoke,loader", "--budget", "5"], tmp_path)
    assert res.returncode == 1
    steps = rows(tmp_path / "results" / "gpu_steps.json")
    assert [(r["step"], r["status"]) for r in steps] == [("smoke", "skipped"), ("loader", "skipped")]
    assert "budget spent" in steps[0]["note"]


@pytest.mark.parametrize("args, message", [
    (["--steps", "build,nope"], "no step 'nope'"),
    (["--limit", "ops"], "--limit takes STEP=SECONDS"),
    (["--budget", "9m"], "--budget takes whole seconds"),
    (["--frobnicate"], "unknown argument"),
])
def test_bad_arguments_are_named(tmp_path, args, message):
    res = gpu_sh(args, tmp_path)
    assert res.returncode == 2 and message in res.stderr
    assert not (tmp_path / "results" / "gpu_steps.json").exists()


def test_smoke_fails_a_backend_that_is_off_by_a_tenth_of_a_percent(monkeypatch):
    """The smoke's bound (tests/tolerances.py's rule against the fp64 oracle) passes the torch backend and fails
    the same backend with its loss scaled by 1.001."""
    from dataclasses import replace

    import bench.ops.bench_norm_pix_mse as loss_bench
    from bench.ops import smoke

    def status(rows):
        return {(r["check"], r.get("tensor")): r["status"] for r in rows if r["check"].startswith("norm_pix_mse")}

    good = status(smoke.op_checks("cpu", smoke.REHEARSAL_CASE, ["torch"]))
    assert set(good.values()) == {"ok"} and len(good) == 4  # V1 and V2: the loss and d pred
    right = loss_bench.BENCH.fn
    monkeypatch.setattr(loss_bench, "BENCH", replace(loss_bench.BENCH, fn=lambda **kw: right(**kw) * 1.001))
    bad = status(smoke.op_checks("cpu", smoke.REHEARSAL_CASE, ["torch"]))
    assert bad[("norm_pix_mse", "out")] == bad[("norm_pix_mse-v2", "out")] == "failed"


# ---------------------------------------------------------------------------------------------- the lease (issue 20)

BUDGET_S = 540  # what a lease leaves for the steps: 15 minutes of device time, less the machine's start and transfers


def plan_lines(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, int], dict[str, str]]:
    res = gpu_sh(["--plan", *args], tmp_path)
    limits, fields = {}, {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            limits[parts[0]] = int(parts[1])
        elif ":" in line:
            key, _, value = line.partition(":")
            fields.setdefault(key, value.strip())
    return res, limits, fields


def test_the_plan_fits_the_lease_by_construction(tmp_path):
    res, limits, fields = plan_lines(tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    total = limits.pop("total")
    steps = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--list"], capture_output=True, text=True,
                           check=True).stdout.split()
    assert list(limits) == steps  # every step, in the order they run, each with its limit
    assert steps[:2] == ["build", "train"] and steps[-3:] == ["tests", "sanitize", "loader"]
    assert sum(limits.values()) == total <= BUDGET_S
    assert all(limit >= 20 for limit in limits.values())  # gpu.sh starts no step with less than 20 s left
    image = fields["image"].split()
    assert {"torch", "triton", "transformers", "timm", "einops", "pillow", "pytest-benchmark"} <= set(image)
    assert not {"av", "decord", "flash-attn", "xformers"} & set(image)
    assert "third_party/VideoMAE" in fields["carry"]
    assert not (tmp_path / "results" / "gpu_steps.json").exists()  # --plan runs nothing


def test_a_plan_over_the_budget_fails(tmp_path):
    res, limits, _ = plan_lines(tmp_path, "--limit", "train=400")
    assert res.returncode == 1 and limits["total"] > BUDGET_S
    assert "over the 540 s budget" in res.stderr


def image_dir(tmp_path) -> tuple[Path, dict]:
    """bench.imports' rehearsal image for gpu.sh's IMAGE, as gpu.sh sets it up."""
    _, _, fields = plan_lines(tmp_path)
    out = tmp_path / "image"
    subprocess.run([sys.executable, "-m", "bench.imports", "setup", "--dir", str(out), "--image", fields["image"]],
                   cwd=ROOT, check=True, capture_output=True)
    return out, json.loads((out / "refused.json").read_text())


def test_the_rehearsal_hides_what_the_gpu_image_lacks(tmp_path):
    import importlib.util

    out, refused = image_dir(tmp_path)
    assert {"torch", "triton", "transformers", "numpy", "pytest", "pytest-benchmark"} <= set(refused["allowed"])
    hidden = [m for m in refused["modules"] if importlib.util.find_spec(m) is not None]
    if not hidden:
        pytest.skip("every installed distribution is in the GPU image: nothing to hide here")
    log = tmp_path / "refused.log"
    probe = (f"import importlib.util, importlib.metadata as md, numpy, torch\n"
             f"assert importlib.util.find_spec({hidden[0]!r}) is None\n"
             f"try:\n    import {hidden[0]}\nexcept ModuleNotFoundError:\n    print('refused')\n")
    env = {**os.environ, "PYTHONPATH": f"{out}{os.pathsep}{ROOT}", "VIDEOMAE_REFUSED_IMPORTS": str(log)}
    res = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "refused", res.stdout + res.stderr
    assert hidden[0] in log.read_text().split()


def test_a_step_that_needs_a_package_outside_the_image_fails_the_rehearsal(tmp_path):
    import importlib.util

    (tmp_path / "probe").mkdir()
    _, refused = image_dir(tmp_path / "probe")
    hidden = [m for m in refused["modules"] if importlib.util.find_spec(m) is not None]
    if not hidden:
        pytest.skip("every installed distribution is in the GPU image: nothing to plant")
    script = tmp_path / "python"
    script.write_text(f"""#!/usr/bin/env bash
case " $* " in
  *" bench/loader.py --help "*) echo "usage: loader.py [--rehearse] [--gpu]" ;;
  *" bench/loader.py "*) exec {sys.executable} -c "import {hidden[0]}" ;;
  *) exec {sys.executable} "$@" ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    res = gpu_sh(["--rehearse", "--steps", "loader"], tmp_path, python=str(script))
    assert res.returncode == 1, res.stdout + res.stderr
    step = rows(tmp_path / "results" / "gpu_steps.json")[0]
    assert step["status"] == "failed" and f"refused imports (not in the GPU image, not carried): {hidden[0]}" \
        in step["note"]
    assert "No module named" in (tmp_path / "out" / "gpu.log").read_text()


def test_the_gpu_tests_that_fit_run_every_function_once_before_any_twice(tmp_path):
    (tmp_path / "test_planted.py").write_text("""import time
import pytest

@pytest.mark.gpu
@pytest.mark.parametrize("i", range(3))
def test_a(i):
    time.sleep(1.0)

@pytest.mark.gpu
@pytest.mark.parametrize("i", range(2))
def test_b(i):
    time.sleep(1.0)

def test_not_gpu():
    pass
""")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "bench.gpu_tests", "--gpu-budget", "2.5", "-m", "gpu",
                          "-v", "-p", "no:cacheprovider", "-W", "ignore", "test_planted.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    order = [line.split()[0].split("::")[1] + " " + line.split()[1] for line in res.stdout.splitlines()
             if line.startswith("test_planted.py::")]
    # Every function's first case, then every function's second, ...; nothing starts once 2.5 s are spent.
    assert order == ["test_a[0] PASSED", "test_b[0] PASSED", "test_a[1] PASSED", "test_b[1] SKIPPED",
                     "test_a[2] SKIPPED"], res.stdout
    assert "3 of 5 tests started (2 test functions)" in res.stdout


def _rehearsal_of_this_tree() -> Path | None:
    """The results folder of the rehearsal `make test` ran just before this suite on this interpreter
    ($VIDEOMAE_REHEARSAL, set by the Makefile), when its rows are this commit's; else None (run it here)."""
    folder = os.environ.get("VIDEOMAE_REHEARSAL")
    if not folder or not (Path(folder) / "gpu_steps.json").is_file():
        return None
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    sha = rows(Path(folder) / "gpu_steps.json")[-1].get("git_sha", "")
    return Path(folder) if head.returncode == 0 and sha.removesuffix("-dirty") == head.stdout.strip() else None


@pytest.mark.slow
def test_the_rehearsal_runs_every_step_on_the_gpu_images_packages(tmp_path):
    """`bash bench/gpu.sh --rehearse` on this stack (CI: both, about 2 minutes each on 2 cores): every step passes
    with only the GPU image's packages importable, and the headline row is the CLI's step with its prepare. Under
    `make test` the rehearsal has just run (Makefile: rehearse, test-pinned): its results are checked, not redone."""
    steps = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--list"], capture_output=True, text=True,
                           check=True).stdout.split()
    results = _rehearsal_of_this_tree()
    if results is None:
        res = gpu_sh(["--rehearse"], tmp_path, timeout=3000)
        assert res.returncode == 0, res.stdout[-8000:] + res.stderr[-2000:]
        results, log = tmp_path / "results", tmp_path / "out" / "gpu.log"
    else:
        log = results / "gpu.log"
    status = rows(results / "gpu_steps.json")
    last_run = [r for r in status if r["run"] == status[-1]["run"]]  # the folder's files append across runs
    assert [(r["step"], r["status"]) for r in last_run] == [(s, "ok") for s in steps]
    assert "rehearsal image:" in log.read_text()
    table = [r for r in rows(results / "train_step.json") if r["run"] == status[-1]["run"]]
    headline = next(r for r in table if r["peer"] == "fast")
    assert headline["status"] == "ok" and headline["clip_dtype"] == "uint8" and "DeviceFeed" in headline["input"]
    assert {r["peer"] for r in table} >= {"fast", "eager", "hf"}
