"""What every benchmark shares: one timer, one git sha, the provenance of a row, one result writer.

    from bench.common import ResultWriter, timer, tf32
    writer = ResultWriter("ops")                       # -> bench/results/ops.json, mirrored into $OUT
    with tf32(False):
        t = timer(fn, "cuda")                          # median after warm-up (do_bench / perf_counter)
    writer.add({"op": "cube_embed", **t.row()}, backend="triton", tf32=False)

Rows land in `<results>/<name>.json` as `{"rows": [...]}`, rewritten atomically after every row, so a run cut
short keeps every row it finished. `<results>` is bench/results, or `$BENCH_RESULTS` (the rehearsal and the
tests write elsewhere, never over the committed figures). When `$OUT` names a folder (the GPU machine's
device tool brings back what is there), the file is copied there too, without ever making it hold more than
`OUT_MAX_FILES` files. Rows of earlier runs stay in the file: each row carries its run id (`$BENCH_RUN`, set once
by bench/gpu.sh for all of its steps), its git sha and date, so a reader picks the run it wants.

Run as a module for the status rows of bench/gpu.sh (cheap: no torch import):
    python -m bench.common step --name gpu_steps --step build --rc 0 --seconds 61.2 --limit 120
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT_MAX_FILES = 8  # the device tool brings back at most 8 files from $OUT


def results_dir() -> Path:
    return Path(os.environ.get("BENCH_RESULTS") or REPO / "bench" / "results")


def run_id() -> str:
    """One id for every row of one run: `$BENCH_RUN` when a driver script set it, else this process's start."""
    return os.environ.get("BENCH_RUN") or _PROCESS_RUN


_PROCESS_RUN = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}"


# ---------------------------------------------------------------------------------------------- provenance


@functools.cache
def git_sha(root: Path = REPO) -> str:
    """Short sha of HEAD, `-dirty` when tracked files changed; `$GIT_SHA` where there is no .git (the GPU
    machine gets a copy of the working tree without it); 'unknown' when neither says."""
    if (root / ".git").exists():
        try:
            run = functools.partial(subprocess.run, cwd=root, capture_output=True, text=True, check=True, timeout=30)
            sha = run(["git", "rev-parse", "--short=12", "HEAD"]).stdout.strip()
            dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
            return sha + ("-dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return os.environ.get("GIT_SHA", "").strip() or "unknown"


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _nvidia_smi() -> dict:
    """GPU name and driver from nvidia-smi ({} without one): the driver is not visible through torch."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    first = out.strip().splitlines()[0] if out.strip() else ""
    name, _, driver = first.partition(",")
    return {"name": name.strip(), "driver": driver.strip()} if first else {}


def device_name(device: str | None = None) -> str:
    """'NVIDIA H200' for a CUDA device, 'cpu (x86_64, 2 cores)' otherwise. Torch is asked only if imported."""
    cpu = f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    if device is not None and not str(device).startswith("cuda"):
        return cpu
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.cuda.get_device_name(torch.device(device or "cuda")) if torch.cuda.is_available() else cpu
    return _nvidia_smi().get("name") or cpu


def provenance(backend: str | None, device: str | None = None) -> dict:
    """Where a row comes from: the backend that actually ran, the device, driver, versions, sha, run, date.

    Versions come from the installed distributions (and `torch.__version__`, with its local tag such as
    +cu130, when torch is already imported), so status rows cost no torch import.
    """
    torch = sys.modules.get("torch")
    return {
        "backend": backend,
        "device": device_name(device),
        "driver": _nvidia_smi().get("driver") or "none",
        "cuda": getattr(getattr(torch, "version", None), "cuda", None) if torch is not None else None,
        "torch": torch.__version__ if torch is not None else _dist_version("torch"),
        "triton": _dist_version("triton"),
        "transformers": _dist_version("transformers"),
        "python": platform.python_version(),
        "git_sha": git_sha(),
        "run": run_id(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# ---------------------------------------------------------------------------------------------- TF32


def tf32_state() -> bool:
    """Whether fp32 matmuls may use TF32 (what a row measured under)."""
    import torch

    return bool(torch.backends.cuda.matmul.allow_tf32)


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for fp32 matmuls and convolutions on or off inside the block, the previous setting restored after,
    so a row's setting never leaks into the next. Uses the same (legacy) switches as the rest of the code:
    torch refuses to read a setting made through a mix of its legacy and new TF32 APIs."""
    import torch

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    prev = (matmul.allow_tf32, cudnn.allow_tf32, torch.get_float32_matmul_precision())
    matmul.allow_tf32 = cudnn.allow_tf32 = enabled
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(prev[2])
        matmul.allow_tf32, cudnn.allow_tf32 = prev[0], prev[1]


# ---------------------------------------------------------------------------------------------- timer


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call: median and 20th / 80th percentiles; `calls` timed (None: do_bench's own count)."""

    median_ms: float
    p20_ms: float
    p80_ms: float
    method: str
    calls: int | None

    def row(self) -> dict:
        return asdict(self)


def _quantiles(times: list[float]) -> tuple[float, float, float]:
    if len(times) == 1:
        return times[0], times[0], times[0]
    q = statistics.quantiles(times, n=10, method="inclusive")
    return statistics.median(times), q[1], q[7]


def timer(fn: Callable[[], object], device: str = "cuda", *, warmup_ms: float = 25, rep_ms: float = 100,
          min_calls: int = 3, max_calls: int = 10_000) -> Timing:
    """Time `fn()`: median after warm-up.

    CUDA: `triton.testing.do_bench` (CUDA events around each call, the L2 flushed between calls); CUDA events
    by hand where Triton is missing. CPU: `time.perf_counter` around each call, warm-up calls first, then
    calls until `rep_ms` has passed (at least `min_calls`).
    """
    if str(device).startswith("cuda"):
        try:
            import triton.testing
        except ImportError:
            return _cuda_events(fn, warmup_ms, rep_ms, min_calls, max_calls)
        med, p20, p80 = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return Timing(med, p20, p80, "do_bench", None)
    start = time.perf_counter()
    fn()  # at least one warm-up call: first-call compilation and allocation stay out of the figures
    while (time.perf_counter() - start) * 1e3 < warmup_ms:
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_calls and (len(times) < min_calls or (time.perf_counter() - start) * 1e3 < rep_ms):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return Timing(*_quantiles(times), "perf_counter", len(times))


def _cuda_events(fn, warmup_ms, rep_ms, min_calls, max_calls) -> Timing:
    import torch

    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    while (time.perf_counter() - start) * 1e3 < warmup_ms:
        fn()
        torch.cuda.synchronize()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_calls and (len(times) < min_calls or (time.perf_counter() - start) * 1e3 < rep_ms):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end))
    return Timing(*_quantiles(times), "cuda_events", len(times))


def copy_bandwidth(device: str, mib: int = 1024) -> tuple[Timing, float]:
    """Device-to-device copy of `mib` MiB of fp32: (timing, GB/s counting bytes read plus bytes written), the
    memory-bound ceiling an op's bytes are measured against."""
    import torch

    src = torch.randn(mib * 2**18, device=device)
    dst = torch.empty_like(src)
    t = timer(lambda: dst.copy_(src), device, rep_ms=200)
    return t, 2 * src.numel() * src.element_size() / t.median_ms / 1e6


def matmul_rate(device: str, n: int = 8192) -> tuple[Timing, float]:
    """An n x n x n bf16 matrix product on random data: (timing, TFLOP/s), the compute-bound ceiling."""
    import torch

    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    t = timer(lambda: a @ b, device, rep_ms=200)
    return t, 2 * n**3 / t.median_ms / 1e9


# ---------------------------------------------------------------------------------------------- writer


def _files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def mirror_to_out(path: Path, out: str | os.PathLike | None = None) -> bool:
    """Copy `path` into `$OUT` (or `out`) when that names a folder, unless that would make it hold more than
    OUT_MAX_FILES files. -> whether it was copied."""
    out = out if out is not None else os.environ.get("OUT")
    if not out:
        return False
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    present = _files_under(folder)
    if path.name not in present and len(present) >= OUT_MAX_FILES:
        print(f"bench.common: $OUT already holds {len(present)} files (at most {OUT_MAX_FILES} come back): "
              f"{path.name} stays in {path.parent}", file=sys.stderr)
        return False
    tmp = folder / f".{path.name}.tmp"
    shutil.copyfile(path, tmp)
    os.replace(tmp, folder / path.name)
    return True


class ResultWriter:
    """Rows of one benchmark in `<results>/<name>.json`, written after every row, mirrored into `$OUT`."""

    def __init__(self, name: str, results: Path | None = None):
        if not name or any(c not in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-" for c in name):
            raise ValueError(f"name must be letters, digits, '.', '_' or '-' (a file name $OUT accepts), got {name!r}")
        self.path = (results or results_dir()) / f"{name}.json"
        self.rows: list[dict] = []  # this process's rows

    def _earlier(self) -> list[dict]:
        try:
            return json.loads(self.path.read_text())["rows"]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{self.path} is not a results file ({{'rows': [...]}}): {e}") from e

    def add(self, row: dict, *, backend: str | None, device: str | None = None, **fields) -> dict:
        """Append `row` with its provenance (the backend that actually ran, the device...) and `fields`
        (e.g. `tf32=False`); rewrite the file and mirror it. -> the row as written."""
        full = {**row, **fields, **provenance(backend, device)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = self._earlier() + [full]  # re-read: the other steps of a run append to the same file
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"rows": rows}, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)
        self.rows.append(full)
        mirror_to_out(self.path)
        return full


def run_rows(name: str, run: str | None = None) -> list[dict]:
    """The rows of `<results>/<name>.json` written by one run (default: this one)."""
    path = results_dir() / f"{name}.json"
    if not path.exists():
        return []
    run = run or run_id()
    return [r for r in json.loads(path.read_text())["rows"] if r.get("run") == run]


# ---------------------------------------------------------------------------------------------- CLI


def _step(args: argparse.Namespace) -> int:
    if args.skipped:
        status = "skipped"
    elif args.rc == 0:
        status = "ok"
    else:  # 124: timeout's own code; 137: killed after the grace period (also what an out-of-memory kill gives)
        status = "timeout" if args.rc in (124, 137) else "failed"
    row = {"step": args.step, "status": status, "rc": args.rc, "seconds": round(args.seconds, 1),
           "limit_s": args.limit, "note": args.note}
    ResultWriter(args.name).add(row, backend=None)
    return 0


def _summary(args: argparse.Namespace) -> int:
    rows = run_rows(args.name)
    print(f"{'step':12s} {'status':8s} {'rc':>4s} {'seconds':>8s} {'limit':>6s}  note")
    for r in rows:
        print(f"{r['step']:12s} {r['status']:8s} {r['rc']:>4} {r['seconds']:>8} {r['limit_s']:>6}  {r['note']}")
    if rows:
        r = rows[-1]
        print(f"run {r['run']}, git {r['git_sha']}, {r['device']}, driver {r['driver']}, torch {r['torch']}, "
              f"triton {r['triton']}, transformers {r['transformers']}")
    bad = [r["step"] for r in rows if r["status"] in ("failed", "timeout")]
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.common", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("step", help="record the status row of one step of bench/gpu.sh")
    s.add_argument("--name", default="gpu_steps")
    s.add_argument("--step", required=True)
    s.add_argument("--rc", type=int, default=0)
    s.add_argument("--seconds", type=float, default=0.0)
    s.add_argument("--limit", type=int, default=0, help="the step's time limit in seconds")
    s.add_argument("--skipped", action="store_true")
    s.add_argument("--note", default="")
    m = sub.add_parser("summary", help="the status rows of this run ($BENCH_RUN) as a table; rc 1 if any failed")
    m.add_argument("--name", default="gpu_steps")
    args = ap.parse_args(argv)
    return _step(args) if args.cmd == "step" else _summary(args)


if __name__ == "__main__":
    raise SystemExit(main())
