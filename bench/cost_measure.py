"""The cost model's prediction measured on a GPU: the CLI step under torch.profiler, device time per kernel class
next to bench/cost_model.py's prediction, and the correction of its efficiencies (`cost_model.correct`).

    python bench/cost_model.py --measure             # on a GPU -> bench/results/cost_model-cuda.json
    python bench/cost_model.py --measure --rehearse  # the same code on the CPU at tiny shapes
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from bench.cost_model import RESULTS, Efficiency, correct, predict, step_kernels, summarize

CLASS_PATTERNS = (  # profiler event names (CUDA kernels; CPU ops in the rehearsal) -> our classes, first match wins
    ("copy to device", ("memcpy htod",)),
    ("attention", ("cudnn", "flash", "fmha", "attention", "sdpa", "softmax")),
    ("matmul", ("gemm", "nvjet", "xmma", "wgmma", "cutlass", "ampere", "hopper", "aten::mm", "addmm", "bmm",
                "matmul", "linear")),
    ("optimizer", ("adam", "foreach", "multi_tensor", "norm_kernel")),
    ("fused-op", ("cube_embed", "decoder_input", "norm_pix_mse", "add_layer_norm", "token_sum")),
    ("reduction", ("per_fused", "red_fused", "reduce")),
    ("pointwise", ("poi_fused", "elementwise", "copy", "memcpy", "memset", "cat")),
)


def classify_kernel(name: str) -> str:
    """The class of a profiler event (`measure` here, `profile_row` in bench/train_step.py): one classifier."""
    low = name.lower()
    for cls, pats in CLASS_PATTERNS:
        if any(p in low for p in pats):
            return cls
    return "other"


def measure(size: str = "B", batch: int = 32, steps: int = 10, out: str | None = None,
            rehearse: bool = False) -> dict:
    """On a GPU: the CLI step (`bench/train_step.py`'s fast row: the Trainer with the CLI's StepConfig and its
    DeviceFeed prepare, fed pinned uint8 crops) under torch.profiler; the device time per kernel class next to this
    model's prediction, and the correction factor per class (measured / predicted) that `correct()` defines.
    Written to `out` (default bench/results) as cost_model-cuda.json. `rehearse`: the same code on the CPU at
    train_step's tiny shapes (host time per op, cost_model-rehearsal.json): the path bench/gpu.sh runs, not a
    figure."""
    from torch.profiler import ProfilerActivity, profile

    from bench import train_step
    from bench.common import provenance

    device = torch.device("cpu" if rehearse else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--measure needs a CUDA device (--rehearse runs the same code on the CPU)")
    tiny = train_step.REHEARSAL
    spec = dict(model=tiny["model"] if rehearse else size, frames=tiny["frames"] if rehearse else 16,
                size=tiny["size"] if rehearse else 224, ratio=tiny["ratio"] if rehearse else 0.9,
                batch=tiny["batch_sizes"][0] if rehearse else batch,
                source=tiny["source"] if rehearse else train_step.SOURCE_HW, peer="fast", compile=None,
                cuda_graphs=False, compile_backend="inductor")
    steps = 2 if rehearse else steps
    inputs = train_step.loader_batches(spec, device)
    step, losses, backend, extra, _ = train_step.build_ours(spec, device, inputs)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for i in range(2 if rehearse else 5):  # compile and warm up outside the profile
        step(inputs[i % len(inputs)])
    losses()
    sync()
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for i in range(steps):
            step(inputs[i % len(inputs)])
        losses()  # the step is sync-free: its losses come back here, after the timed steps
        sync()
        step_ms = (time.perf_counter() - t0) * 1e3 / steps
    measured: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", 0) if cuda else e.self_cpu_time_total
        if t:
            measured[classify_kernel(e.key)] += t / 1e3 / steps  # us -> ms per step
    ks, _ = step_kernels(size, batch)
    pred = summarize(predict(ks), batch)
    pred_class: dict[str, float] = defaultdict(float)
    for k, v in pred["by_class_ms"].items():
        pred_class[k.split(" (")[0]] += v
    result = dict(step_ms_measured=step_ms, step_ms_predicted=pred["step_ms"],
                  clips_per_s_measured=spec["batch"] / step_ms * 1e3, clips_per_s_predicted=pred["clips_per_s"],
                  by_class_ms_measured=dict(measured), by_class_ms_predicted=dict(pred_class),
                  correction=correct(Efficiency(), pred_class, measured),
                  attention=extra["attention"], spec={k: v for k, v in spec.items() if k != "source"},
                  **provenance(backend, device.type))
    path = Path(out or RESULTS) / f"cost_model-{'rehearsal' if rehearse else 'cuda'}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result
