"""Trace what the GPU will compile, on a machine without one (bench/nodriver.py: fake CUDA tensors, an H200's
properties, no driver).

`trace_step` traces `videomae pretrain`'s (or `finetune`'s) compiled objective exactly as the CLI's Trainer builds
it (`StepConfig` defaults resolved for CUDA, `train.step.build_objective` of the command's loss), with the graphs, the
dispatch decisions and inductor's Triton kernels recorded (`Trace`; with `traffic`, each kernel's bytes as inductor
estimates them and its launches). Used by tests/test_fake_cuda_trace.py, bench/triton_sm90a.py and
bench/cost_model.py --check.

    python -m bench.trace --ops-backend triton --depth 12 --json out.json    # re-executes itself with the preload
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import torch

from bench.nodriver import H200, DeviceSpec, fake_cuda, preloaded, run_isolated

# --------------------------------------------------------------------------------------------- recording


class NotRun(Exception):  # noqa: N818 (a signal, not an error)
    """Raised where compiled code would start running on the device: everything before it was traced."""


@dataclasses.dataclass
class Kernel:
    """One Triton kernel inductor generated and compiled for the traced device (one entry per config)."""

    name: str
    source: str
    ptx: str | None
    shared: int | None
    num_warps: int | None
    num_stages: int | None
    graph: str  # forward / backward / inference
    num_gb: float | None = None  # inductor's own estimate of the bytes one launch reads and writes (traffic=True)


@dataclasses.dataclass
class Trace:
    """What `torch.compile` made of one objective: the dynamo graph (fullgraph), AOTAutograd's forward and
    backward graphs, and inductor's kernels; `ops` names every `videomae::` / attention op in the dynamo graph."""

    dynamo_graphs: list = dataclasses.field(default_factory=list)  # fx.GraphModule
    aot_graphs: dict = dataclasses.field(default_factory=dict)  # "forward"/"backward" -> fx.GraphModule
    kernels: list[Kernel] = dataclasses.field(default_factory=list)
    wrappers: list[str] = dataclasses.field(default_factory=list)  # inductor's generated Python (traffic=True)
    ops: list[str] = dataclasses.field(default_factory=list)
    ran: bool = False  # True: compiled code was reached (and stopped) after everything compiled

    def summary(self) -> dict:
        return {"dynamo_graphs": len(self.dynamo_graphs), "aot_graphs": sorted(self.aot_graphs),
                "aot_nodes": {k: len(g.graph.nodes) for k, g in self.aot_graphs.items()},
                "kernels": len(self.kernels), "ops": self.ops, "reached_run": self.ran}

    def traffic(self, top_n: int = 12) -> dict:
        """GB one step of inductor's own kernels reads and writes: each kernel's `num_gb` (inductor's estimate,
        its `benchmark_kernel` figure) times its launches in the generated wrappers (12 encoder blocks launch the
        same kernel 12 times), per graph and per kind (`per`sistent / `red`uction / `poi`ntwise), and the `top_n`
        kernels by bytes per step."""
        launches: dict[str, int] = {}
        for code in self.wrappers:
            # `.run(*args, ...)` is the benchmark harness benchmark_kernel adds to each kernel's module, not a launch
            for name in re.findall(r"\b(triton_\w+)\.run\((?!\*args)", code):
                launches[name] = launches.get(name, 0) + 1
        seen: dict[str, Kernel] = {}
        for k in self.kernels:  # one entry per config; every config moves the same bytes
            if k.num_gb is not None:
                seen.setdefault(k.name, k)
        per_step = {name: k.num_gb * launches.get(name, 0) for name, k in seen.items()}
        gb: dict[str, float] = {}
        for name, k in seen.items():
            for key in (k.graph, name.split("_")[1]):
                gb[key] = gb.get(key, 0.0) + per_step[name]
        top = sorted(seen, key=lambda name: -per_step[name])[:top_n]
        return {"launches": sum(launches.values()), "kernels": len(seen),
                "gb": {k: round(v, 3) for k, v in sorted(gb.items())},
                "total_gb": round(sum(v for k, v in gb.items() if k in ("forward", "backward", "inference")), 3),
                "top": [{"kernel": name, "graph": seen[name].graph, "gb_per_launch": round(seen[name].num_gb, 4),
                         "launches": launches.get(name, 0), "gb": round(per_step[name], 3)} for name in top]}


def _graph_ops(gm) -> list[str]:
    names = set()
    for node in gm.graph.nodes:
        if node.op == "call_function":
            name = str(getattr(node.target, "__name__", node.target))
            qual = str(node.target)
            if "videomae" in qual or "attention" in qual or "sdpa" in qual:
                names.add(qual if "videomae" in qual else name)
    return sorted(names)


@contextlib.contextmanager
def recording(trace: Trace, traffic: bool = False) -> Iterator[Trace]:
    """Record into `trace` what the next `torch.compile(..., backend="inductor")` calls compile; stop with
    `NotRun` where the compiled code would run. `traffic`: also each kernel's bytes (inductor's estimate) and the
    generated wrappers that launch them (caches off: a cache hit would skip the code generation recorded)."""
    import torch._inductor.compile_fx as cfx
    import torch._inductor.config as inductor_config
    from torch._inductor.output_code import CompiledFxGraph
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    real_compile_fx, real_inner = cfx.compile_fx, cfx.compile_fx_inner

    def inner(gm, example_inputs, **kwargs):
        kind = "backward" if kwargs.get("is_backward") else "forward" if kwargs.get("is_inference") is False \
            else "inference"
        trace.aot_graphs[kind] = gm
        trace.current = kind
        return real_inner(gm, example_inputs, **kwargs)

    def compile_fx(gm, example_inputs, *args, **kwargs):
        trace.dynamo_graphs.append(gm)
        trace.ops = sorted(set(trace.ops) | set(_graph_ops(gm)))
        kwargs.setdefault("inner_compile", inner)
        return real_compile_fx(gm, example_inputs, *args, **kwargs)

    def make_launchers(self):  # compiled for the target; loading needs the device: record instead
        for result in self.compile_results:
            k = result.kernel
            asm = getattr(k, "asm", None) or {}
            meta = getattr(k, "metadata", None)
            trace.kernels.append(Kernel(
                name=self.fn.__name__, source=self.fn.src if hasattr(self.fn, "src") else "",
                ptx=asm.get("ptx"), shared=getattr(meta, "shared", None),
                num_warps=getattr(result.config, "num_warps", None), num_stages=getattr(result.config, "num_stages",
                                                                                      None),
                graph=getattr(trace, "current", "?"), num_gb=self.inductor_meta.get("kernel_num_gb")))

    def run(self, inputs):
        trace.ran = True
        raise NotRun("compiled code reached: it would run on the device here")

    real_init = CompiledFxGraph.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        trace.wrappers.append(self.source_code)

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(cfx, "compile_fx", compile_fx))
        stack.enter_context(mock.patch.object(CachingAutotuner, "_make_launchers", make_launchers))
        stack.enter_context(mock.patch.object(CompiledFxGraph, "__call__", run))
        if traffic:
            stack.enter_context(inductor_config.patch(benchmark_kernel=True, force_disable_caches=True))
            stack.enter_context(mock.patch.object(CompiledFxGraph, "__init__", init))
        yield trace


# --------------------------------------------------------------------------------------------- the CLI's step


def cli_args(command: str, argv: list[str]):
    """`videomae <command>`'s parsed flags (its own parser: the CLI's defaults, nothing re-typed here)."""
    import importlib

    mod = importlib.import_module(f"videomae.commands.{command}")
    parser = argparse.ArgumentParser(prog=f"videomae {command}")
    mod.add_arguments(parser)
    return parser.parse_args(argv)


@dataclasses.dataclass(frozen=True)
class Step:
    """The step to trace: the CLI's command and flags; `depth` overrides the encoder depth (see the test)."""

    command: str = "pretrain"  # or finetune
    batch: int = 32
    frames: int = 16
    size: int = 224
    ratio: float = 0.9
    ops_backend: str = "auto"
    attention: str = "auto"
    v2: bool = False  # dual masking: the decoder's running-cell mask, the loss over `scored`
    clip_dtype: str = "uint8"  # what `prepare` feeds (DeviceFeed): uint8 clips, normalized inside the ops
    depth: int | None = None
    decoder_depth: int | None = None
    recompute: str = "auto"  # the CLI's --recompute: `none` compiles with torch's partitioner defaults

    def argv(self) -> list[str]:
        argv = ["--batch_size", str(self.batch), "--num_frames", str(self.frames), "--input_size", str(self.size),
                "--ops_backend", self.ops_backend, "--attention", self.attention, "--recompute", self.recompute]
        if self.command == "pretrain":
            argv += ["--mask_ratio", str(self.ratio)]
            if self.v2:
                argv += ["--decoder_mask_type", "run_cell"]
            if self.decoder_depth is not None:
                argv += ["--decoder_depth", str(self.decoder_depth)]
        else:
            argv += ["--compile"]  # fine-tuning compiles only when asked
        return argv


NUM_CLASSES = 400  # fine-tuning's head (Kinetics-400)


def _inputs(step: Step, model, mode, args) -> tuple:
    """The fake CUDA batch the CLI's `prepare` hands its objective: pretraining (clips, TokenIds), the masks made
    on the CPU as the collate makes them; fine-tuning (float clips, target): soft targets [B, classes] under
    mixup/cutmix (the CLI's defaults), else labels [B]."""
    from videomae.masking import running_cell_mask, token_ids, tube_mask

    dtype = {"uint8": torch.uint8, "float32": torch.float32}[step.clip_dtype]
    shape = (step.batch, 3, step.frames, step.size, step.size)
    if step.command != "pretrain":
        mixing = args.mixup > 0 or args.cutmix > 0
        with mode:
            clips = torch.empty(shape, dtype=torch.float32, device="cuda")
            target = (torch.empty(step.batch, NUM_CLASSES, device="cuda") if mixing
                      else torch.empty(step.batch, dtype=torch.int64, device="cuda"))
        return clips, target
    grid = model.encoder.patch_embed.grid(shape)
    mask = tube_mask(step.batch, grid, step.ratio)
    decode = running_cell_mask(step.batch, grid, 0.5) if step.v2 else None
    ids = token_ids(mask, decode)
    with mode:
        videos = torch.empty(shape, dtype=dtype, device="cuda")
        fake = type(ids)(*(torch.empty(t.shape, dtype=t.dtype, device="cuda") if isinstance(t, torch.Tensor) else t
                           for t in ids))  # None and validated_for kept
    return videos, fake


def cli_step(step: Step, mode, compile: bool = True):
    """Inside `fake_cuda()`: the CLI's objective for `step` on fake CUDA tensors -> (config, precision, call), where
    `call()` runs the objective once (forward and loss -> the scalar loss), as the CLI's `Trainer` builds it
    (`train.step.build_objective` of the command's loss). `compile=False` keeps the CLI's every other switch and
    runs eagerly (bench/triton_sm90a.py records the kernels launched that way)."""
    from videomae.train import step as train

    args = cli_args(step.command, step.argv())
    device = torch.device("cuda", 0)
    config = train.StepConfig.from_args(args).resolve(device, pretraining=step.command == "pretrain")
    if not compile:
        config = config.replace(compile=False)
    model = build_model(step, args)
    with mode:
        model = model.to_empty(device=device)
    train.apply_config(model, config)
    precision = train.Precision(config.precision, device)
    batch = _inputs(step, model, mode, args)
    if step.command == "pretrain":
        from videomae.train.pretrain import pretrain_loss as loss
    else:
        from videomae.train.finetune import classification_loss

        loss = classification_loss(args.smoothing, args.mixup > 0 or args.cutmix > 0)
    objective = train.build_objective(model, config, loss)
    return config, precision, lambda: objective(batch)


def trace_step(step: Step, spec: DeviceSpec = H200, traffic: bool = False) -> Trace:
    """Trace the objective the CLI compiles for `step` on a `spec` GPU; returns what was compiled (`traffic`:
    with inductor's byte estimates, `Trace.traffic()`)."""
    from videomae.train.step import ops_context

    trace = Trace()
    with fake_cuda(spec) as mode:
        config, precision, call = cli_step(step, mode)
        trace.config = config.as_dict()
        with recording(trace, traffic), precision.autocast(), ops_context(config):
            try:
                call()
            except NotRun:
                pass
    return trace


def build_model(step: Step, args) -> torch.nn.Module:
    """The model exactly as the CLI builds it from `args` (on the CPU), the encoder depth replaced if asked."""
    import importlib

    module = importlib.import_module("videomae.train.pretrain" if step.command == "pretrain"
                                     else "videomae.train.classifier")
    build = module.build_model if step.command == "pretrain" else lambda a: module.build_classifier(a, NUM_CLASSES)
    if step.depth is None:
        return build(args)
    from videomae import registry

    real = registry.create_model

    def create_model(name, **kwargs):
        return real(name, **kwargs, **{"encoder_depth" if step.command == "pretrain" else "depth": step.depth})

    # The CLI reaches registry.create_model through its builders (looked up when called); a module that bound the
    # name at import is patched too.
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(registry, "create_model", create_model))
        if hasattr(module, "create_model"):
            stack.enter_context(mock.patch.object(module, "create_model", create_model))
        return build(args)


# --------------------------------------------------------------------------------------------- command line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Trace the CLI's compiled step for an H200 without a GPU.")
    ap.add_argument("--command", default="pretrain", choices=("pretrain", "finetune"))
    ap.add_argument("--ops-backend", default="auto", choices=("auto", "cuda", "triton", "torch"))
    ap.add_argument("--attention", default="auto")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--depth", type=int, default=None, help="encoder depth (default: the model's, 12 for ViT-B)")
    ap.add_argument("--v2", action="store_true", help="dual masking (running-cell decoder mask)")
    ap.add_argument("--recompute", default="auto", choices=("auto", "cheap", "none", "full"))
    ap.add_argument("--clip-dtype", default="uint8", choices=("uint8", "float32"))
    ap.add_argument("--json", default=None, help="write the summary (and the kernels, with --kernels) here")
    ap.add_argument("--kernels", action="store_true", help="include inductor's kernels (source, PTX) in --json")
    ap.add_argument("--traffic", action="store_true", help="inductor's estimate of its kernels' bytes per step")
    args = ap.parse_args(argv)
    if not preloaded():  # re-run with the preload: it must be in place before torch loads
        res = run_isolated(["-m", "bench.trace", *(sys.argv[1:] if argv is None else argv)])
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        return res.returncode
    step = Step(command=args.command, batch=args.batch, ops_backend=args.ops_backend, attention=args.attention,
                v2=args.v2, clip_dtype=args.clip_dtype, depth=args.depth, recompute=args.recompute)
    t0 = time.monotonic()
    trace = trace_step(step, traffic=args.traffic)
    out = {"step": dataclasses.asdict(step), "config": trace.config, **trace.summary(),
           **({"traffic": trace.traffic()} if args.traffic else {}),
           "seconds": round(time.monotonic() - t0, 1), "torch": torch.__version__}
    print(json.dumps(out))
    if args.json:
        if args.kernels:
            out["kernel_list"] = [dataclasses.asdict(k) for k in trace.kernels]
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
