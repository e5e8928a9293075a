"""Every Triton kernel of the step compiled offline for sm_90a (Hopper), with no GPU: registers, shared memory,
spills -> bench/results/triton-sm90a.json. One command, rerun after any kernel change:

    python -m bench.triton_sm90a                    # ours at the headline shapes + inductor's kernels of the step
    python -m bench.triton_sm90a --no-inductor      # ours only (about a minute)
    python -m bench.triton_sm90a --check            # exit 1 on a compile error or a spill (what CI asks)

Ours: `videomae pretrain`'s step (ViT-B, B=32, 16x224x224, tube 0.9, bf16 autocast, ops backend `triton`) runs
eagerly, forward and backward, on fake CUDA tensors with an H200's properties (bench/nodriver.py), with uint8 and fp32
clips, V1 and V2 dual masking (the loss over `scored`). Every launch of a `@triton.jit` kernel is recorded instead of
run; each distinct specialization (Triton's own binder: argument types, 16-byte alignment, constexprs, num_warps)
is compiled by `triton.compile` for `GPUTarget("cuda", 90, 32)`, i.e. sm_90a, through Triton's bundled ptxas.
Inductor's: the kernels inductor generates when it compiles that step (bench.trace.trace_step, the CLI's compiled
objective, V1 and V2, uint8 clips), and `videomae finetune --compile`'s forward. Each kernel's PTX then goes through
`ptxas -v --gpu-name sm_90a` (the options Triton itself passes) for registers, spill bytes, stack frame and static
shared memory; Triton's dynamic shared memory comes from its metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import common, nodriver, trace

OUT = common.REPO / "bench" / "results" / "triton-sm90a.json"
ARCH = "sm_90a"
# The headline step of issue 20, as the CLI builds it (bench.trace.Step: ViT-B, B=32, 16x224x224, tube 0.9).
OURS = [trace.Step(ops_backend="triton", clip_dtype=c, v2=v2) for v2 in (False, True) for c in ("uint8", "float32")]
INDUCTOR = [trace.Step(ops_backend="triton"), trace.Step(ops_backend="triton", v2=True),
            trace.Step(command="finetune")]


def case_name(step: trace.Step) -> str:
    if step.command != "pretrain":
        return f"{step.command} B={step.batch}"
    return f"pretrain B={step.batch} {'V2' if step.v2 else 'V1'} {step.clip_dtype}"


# --------------------------------------------------------------------------------------------- our kernels


@dataclasses.dataclass
class Launch:
    """One `kernel[grid](*args, **kwargs)` call; tensors kept as `_Pointer`s (dtype and address alignment)."""

    kernel: object  # triton.JITFunction
    args: tuple
    kwargs: dict
    grid: tuple
    case: str


class _Pointer:
    """What Triton's binder reads off a tensor argument: its dtype and address (for the 16-byte alignment it
    specializes on). Device memory comes from the caching allocator in 512-byte blocks, so a view's alignment is
    its storage offset's."""

    def __init__(self, t: torch.Tensor):
        self.dtype = t.dtype
        self._address = 512 + t.storage_offset() * t.element_size()

    def data_ptr(self) -> int:
        return self._address


def _as_launch_arg(x):
    return _Pointer(x) if isinstance(x, torch.Tensor) else x


# Gradients the headline step does not ask for (a float clip's, the fixed sin-cos position table's), whose kernels
# must compile too: each backward op also runs once more with them on, at the same shapes (its launches marked so).
# A uint8 clip has no gradient.
_EVERY_GRAD = {"cube_embed_backward": lambda a: {"needs": [a["videos"].is_floating_point(), True, True, True]},
               "decoder_input_backward": lambda a: {"need_pos": True}}
EVERY_GRAD = " + every gradient"


class _RunTritonBodies(torch.utils._python_dispatch.TorchDispatchMode):
    """Under fake tensors the `videomae::*_triton` ops run their fake kernels (shapes only): run their Python
    bodies instead, launching straight into `JITFunction.run` (no HOP), in whichever thread autograd runs them."""

    def __init__(self, marks: list[str]):
        super().__init__()
        self.marks = marks  # the case suffix of the launches being recorded

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch._library.custom_ops import OPDEFS
        from torch._library.triton import set_wrap_triton_enabled

        name = func.overloadpacket.__name__
        if not (func.namespace == "videomae" and "_triton" in name):
            return func(*args, **(kwargs or {}))
        body = OPDEFS[func._schema.name]._init_fn  # the op's Python implementation, wherever it is defined
        op = name.replace("_triton", "")
        named = {a.name: v for a, v in zip(func._schema.arguments, args)} | (kwargs or {})
        with set_wrap_triton_enabled(False):
            out = body(**named)
            if op in _EVERY_GRAD:
                self.marks.append(EVERY_GRAD)
                try:
                    body(**(named | _EVERY_GRAD[op](named)))
                finally:
                    self.marks.pop()
        return out


def record_launches(step: trace.Step) -> list[Launch]:
    """Every Triton launch of one eager forward + backward of `step`'s objective (in a fake_cuda process)."""
    from unittest import mock

    from triton.runtime.jit import JITFunction

    from videomae.train.step import ops_context

    launches: list[Launch] = []
    marks: list[str] = []

    def run(self, *args, grid, warmup, **kwargs):  # JITFunction.run: record, launch nothing
        launches.append(Launch(self, tuple(map(_as_launch_arg, args)), kwargs, tuple(grid),
                               case_name(step) + "".join(marks)))

    with nodriver.fake_cuda() as mode:
        config, precision, call = trace.cli_step(step, mode, compile=False)
        # The fake mode below ours: tensors the bodies make (outputs, constants) are fake CUDA tensors too.
        with precision.autocast(), ops_context(config), mode, _RunTritonBodies(marks), \
                mock.patch.object(JITFunction, "run", run):
            call().backward()
    return launches


_TARGET = ("cuda", 90, 32)  # GPUTarget: Triton emits PTX for sm_90a at capability 90


def _specialize(launch: Launch):
    """Triton's own binder for sm_90a -> (backend, kwargs, bound args, specialization, options), as
    `JITFunction.run` computes them before it compiles."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.kernel
    backend = make_backend(GPUTarget(*_TARGET))
    kwargs = dict(launch.kwargs, debug=launch.kwargs.get("debug", fn.debug) or False)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    return (backend, kwargs, *binder(*launch.args, **kwargs))


def compile_launch(launch: Launch):
    """`triton.compile` of the launch's specialization for `GPUTarget("cuda", 90, 32)` -> CompiledKernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    ptxas()  # the assembler (and so the PTX version) the compiled step uses
    fn = launch.kernel
    backend, kwargs, bound, specialization, options = _specialize(launch)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget(*_TARGET),
                          options=options.__dict__)


def _describe(launch: Launch) -> dict:
    fn = launch.kernel
    names = [p.name for p in fn.params]
    values = dict(zip(names, launch.args)) | {k: v for k, v in launch.kwargs.items() if k in names}
    return {"source": "videomae.kernels", "kernel": fn.fn.__qualname__, "module": fn.fn.__module__,
            "grid": list(launch.grid),
            "constexprs": {p.name: values[p.name] for p in fn.params if p.is_constexpr and p.name in values},
            "launch_options": {k: v for k, v in launch.kwargs.items() if k not in names}}


def defined_kernels() -> set[tuple[str, str]]:
    """(module, kernel name) of every `@triton.jit` kernel in kernels/*.py (by the files' convention, the functions
    named `*_kernel`; the other jit functions are helpers they call)."""
    import importlib
    import pkgutil

    from triton.runtime.jit import JITFunction

    import videomae.kernels

    found = set()
    for info in pkgutil.iter_modules(videomae.kernels.__path__):
        module = importlib.import_module(f"videomae.kernels.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, JITFunction) and name.endswith("_kernel") and obj.fn.__module__ == module.__name__:
                found.add((module.__name__, name))
    return found


def our_rows(steps: list[trace.Step]) -> list[dict]:
    """One row per distinct specialization of our kernels that `steps` launch (in a fake_cuda process), and a
    failed row for each kernel of kernels/*.py that none of them launched (so a new kernel cannot go unchecked)."""
    distinct: dict[tuple, tuple[Launch, list[str]]] = {}
    for step in steps:
        for launch in record_launches(step):
            _, _, _, specialization, _ = _specialize(launch)
            key = (launch.kernel.fn.__module__, launch.kernel.fn.__qualname__, repr(specialization),
                   repr(sorted(launch.kwargs.items())))
            _, cases = distinct.setdefault(key, (launch, []))
            if launch.case not in cases:
                cases.append(launch.case)
    rows = []
    for launch, cases in distinct.values():
        row = dict(_describe(launch), cases=cases)
        try:
            compiled = compile_launch(launch)
        except Exception as e:  # noqa: BLE001  (recorded; --check fails on it)
            rows.append(dict(row, status=f"compile error: {type(e).__name__}: {str(e)[:2000]}"))
            continue
        meta = compiled.metadata
        row.update(num_warps=meta.num_warps, num_stages=meta.num_stages, triton_shared_bytes=meta.shared)
        rows.append(dict(row, **ptxas_usage(compiled.asm["ptx"])))
    launched = {(r["module"], r["kernel"]) for r in rows}
    rows += [{"source": "videomae.kernels", "kernel": name, "module": module, "cases": [],
              "status": "not launched by the headline step: add the case that launches it to bench/triton_sm90a.py"}
             for module, name in sorted(defined_kernels() - launched)]
    return rows


# --------------------------------------------------------------------------------------------- ptxas


_INFO = re.compile(r"Used (\d+) registers")
_FIELDS = {"stack_frame_bytes": r"(\d+) bytes stack frame", "spill_store_bytes": r"(\d+) bytes spill stores",
           "spill_load_bytes": r"(\d+) bytes spill loads", "static_smem_bytes": r"(\d+) bytes smem",
           "cmem0_bytes": r"(\d+) bytes cmem\[0\]"}


def ptxas() -> str:
    """The assembler the step's kernels go through: torch's own ptxas where its wheel ships one (inductor points
    Triton at it, $TRITON_PTXAS_PATH, in every process that compiles; torch 2.11+cu130: CUDA 13.0), else Triton's
    bundled one. Set here as inductor sets it, so that our kernels, compiled before inductor runs, use it too."""
    try:
        from torch._inductor.runtime.compile_tasks import _set_triton_ptxas_path
    except ImportError:  # pragma: no cover  (torch moved it: Triton's own then)
        pass
    else:
        _set_triton_ptxas_path()
    from triton import knobs

    return knobs.nvidia.ptxas.path


def parse_ptxas(log: str) -> dict:
    """`ptxas -v`'s report of one kernel -> registers, spill bytes, stack frame, static shared memory."""
    text = " ".join(log.split())
    used = _INFO.search(text)
    if used is None:
        raise ValueError(f"no register count in ptxas's report: {text[:500]}")
    out = {"registers": int(used.group(1))}
    for key, pattern in _FIELDS.items():
        m = re.search(pattern, text)
        out[key] = int(m.group(1)) if m else 0
    return out


def ptxas_usage(ptx: str, options: tuple[str, ...] = ()) -> dict:
    """Assemble `ptx` for sm_90a with `ptxas -v` (Triton's own flags: -lineinfo) -> parse_ptxas + status."""
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        res = subprocess.run([ptxas(), "-lineinfo", "-v", *options, f"--gpu-name={ARCH}", str(src),
                              "-o", str(Path(d) / "k.cubin")], capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        return {"status": f"ptxas error: {res.stderr.strip()[-2000:]}"}
    usage = parse_ptxas(res.stderr + res.stdout)
    spilled = usage["spill_store_bytes"] or usage["spill_load_bytes"]
    return dict(usage, status="spill" if spilled else "ok")


# --------------------------------------------------------------------------------------------- inductor's kernels


def inductor_rows(steps: list[trace.Step], depth: int | None) -> list[dict]:
    """One row per distinct kernel inductor compiled for `steps` (traced as the CLI compiles them)."""
    distinct: dict[tuple, dict] = {}
    for step in steps:
        step = dataclasses.replace(step, depth=depth)
        t = trace.trace_step(step)
        if not t.ran:
            raise RuntimeError(f"bench.trace did not reach the compiled step for {step}")
        for k in t.kernels:
            key = (k.source, k.num_warps, k.num_stages)
            row = distinct.get(key)
            if row is None:
                row = distinct[key] = {"source": "inductor", "kernel": k.name, "graph": k.graph, "cases": [],
                                       "num_warps": k.num_warps, "num_stages": k.num_stages,
                                       "triton_shared_bytes": k.shared,
                                       **(ptxas_usage(k.ptx) if k.ptx else {"status": "no PTX recorded"})}
            if case_name(step) not in row["cases"]:
                row["cases"].append(case_name(step))
    return list(distinct.values())


# --------------------------------------------------------------------------------------------- report


def failures(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") != "ok"]


def summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if "registers" in r]
    worst = max(ok, key=lambda r: r["registers"], default=None)
    return {"kernels": len(rows), "ours": sum(r["source"] != "inductor" for r in rows),
            "inductor": sum(r["source"] == "inductor" for r in rows),
            "max_registers": worst["registers"] if worst else None,
            "max_registers_kernel": (worst["kernel"] if worst["source"] == "inductor" else
                                     f"{worst['module']}.{worst['kernel']}") if worst else None,
            "max_triton_shared_bytes": max((r.get("triton_shared_bytes") or 0 for r in rows), default=0),
            "spills": sum(r.get("status") == "spill" for r in rows),
            "errors": sum(r.get("status") not in ("ok", "spill") for r in rows)}


def table(rows: list[dict]) -> str:
    lines = [f"{'kernel':44}{'warps':>6}{'regs':>6}{'smem':>8}{'spill':>7}  status / constexprs"]
    for r in rows:
        spill = (r.get("spill_store_bytes") or 0) + (r.get("spill_load_bytes") or 0)
        extra = ", ".join(f"{k}={v}" for k, v in r.get("constexprs", {}).items() if k.isupper())
        name = r["kernel"] if r["source"] == "inductor" else f"{r['module'].rsplit('.', 1)[-1]}.{r['kernel']}"
        lines.append(f"{name[:43]:44}{r.get('num_warps') or '-':>6}{r.get('registers', '-'):>6}"
                     f"{r.get('triton_shared_bytes') or 0:>8}{spill:>7}  {r['status'][:60]}"
                     + (f"  {extra[:70]}" if extra and r["status"] == "ok" else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-inductor", action="store_true", help="our kernels only (skip tracing the compiled step)")
    ap.add_argument("--depth", type=int, default=None, help="encoder depth of the inductor traces (default ViT-B's "
                    "12; every block compiles to the same kernels, so 2 finds the same set faster)")
    ap.add_argument("--json", type=Path, default=OUT, help=f"where to write (default {OUT.relative_to(common.REPO)})")
    ap.add_argument("--check", action="store_true", help="exit 1 on a compile error or a spill")
    args = ap.parse_args(argv)
    if not nodriver.preloaded():  # the fake-CUDA process needs libnodriver before torch loads
        res = nodriver.run_isolated(["-m", "bench.triton_sm90a", *(sys.argv[1:] if argv is None else argv)])
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        return res.returncode
    import triton

    t0 = time.monotonic()
    assembler = ptxas()  # before any compile: ours and inductor's go through the same one
    rows = our_rows(OURS)
    if not args.no_inductor:
        rows += inductor_rows(INDUCTOR, args.depth)
    ptxas_version = subprocess.run([assembler, "--version"], capture_output=True, text=True).stdout.strip()
    report = {
        "what": "every Triton kernel of the headline step compiled offline for sm_90a (bench/triton_sm90a.py)",
        "target": {"backend": "cuda", "arch": 90, "warp_size": 32, "ptx_target": ARCH},
        "steps": {"ours": [case_name(s) for s in OURS],
                  "inductor": [] if args.no_inductor else [case_name(s) for s in INDUCTOR],
                  "inductor_depth": args.depth or 12},
        "versions": {"torch": torch.__version__, "triton": triton.__version__,
                     "ptxas": ptxas_version.splitlines()[-1] if ptxas_version else None,
                     "ptxas_path": str(Path(assembler).relative_to(Path(sys.prefix)))
                     if Path(assembler).is_relative_to(sys.prefix) else assembler,
                     "python": ".".join(map(str, sys.version_info[:3]))},
        "git_sha": common.git_sha(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - t0, 1),
        "summary": summary(rows),
        "kernels": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(table(rows))
    print(json.dumps(report["summary"]))
    bad = failures(rows)
    for r in bad:
        print(f"FAILED {r['kernel']} ({', '.join(r['cases'])}): {r['status'][:500]}", file=sys.stderr)
    return 1 if bad and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
