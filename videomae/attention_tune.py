"""Timing and accuracy of the attention backends: for the benchmark, the GPU tests and `VIDEOMAE_ATTN_TUNE=1`.

Kept apart from `videomae.attention` so that a forward never imports it. It reaches the attention backends
through the dispatcher they register with, never by importing `videomae.attention` (that would be an import cycle:
attention imports this module when `VIDEOMAE_ATTN_TUNE=1`).
"""

from __future__ import annotations

import statistics
import time

import torch

from videomae import dispatch


def _backends() -> dict:
    """The attention backends by name (`videomae.attention.BACKENDS`, as registered)."""
    return dispatch.registered("attention")


def time_backend(name: str, q, k, v, scale: float, reps: int = 10) -> float:
    """Median ms of one forward+backward of backend `name` on these inputs (CUDA events; host clock on CPU)."""
    fn = _backends()[name]
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    grad = torch.randn_like(q)
    cuda = q.device.type == "cuda"
    times = []
    for i in range(reps + 3):  # 3 warm-up calls: handle creation, kernel selection, autotuning
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        fn(q, k, v, scale, 0.0).backward(grad)
        if cuda:
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
        else:
            ms = (time.perf_counter() - t0) * 1e3
        if i >= 3:
            times.append(ms)
    return statistics.median(times)


def tune(q, k, v, scale: float | None = None, reps: int = 10) -> dict[str, float]:
    """Time every backend that can run [B, H, N, d] inputs like these (fwd+bwd, no dropout) and install
    the measured order as the priority of their (device class, dtype, bucket). Returns {name: ms}."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    prior = dispatch.priority("attention", {"q": q})
    backends = _backends()
    ms = {}
    for n in prior + [n for n in backends if n not in prior]:
        if n == "sdpa-default" or backends[n].reasons(q, k, v, 0.0):
            continue
        try:
            ms[n] = time_backend(n, q, k, v, scale, reps)
        except RuntimeError as e:  # a declared-ok kernel that still refuses: record, never pick it
            ms[n] = float("inf")
            print(f"[videomae.attention] {n} failed on {tuple(q.shape)} {q.dtype}: {e}")
    key = dispatch.priority_key("attention", {"q": q})
    dispatch.set_priority(key, sorted(ms, key=ms.get) + [n for n in prior if n not in ms])
    return ms


def reference_errors(name: str, q, k, v, scale: float) -> dict[str, float]:
    """||x - ref|| / ||ref|| of backend `name`'s output and q/k/v gradients against eager attention in
    float64 on the same inputs (a random output gradient). Shared by the GPU test and the benchmark."""
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    backends = _backends()
    out = backends[name](q, k, v, scale, 0.0)
    grad = torch.randn_like(out)
    out.backward(grad)
    r = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = backends["eager"](*r, scale, 0.0)  # the official order of operations, in fp64
    ref.backward(grad.double())

    def rel(x, y):
        return ((x.double() - y).norm() / y.norm().clamp_min(1e-30)).item()

    return {"out": rel(out, ref), "dq": rel(q.grad, r[0].grad), "dk": rel(k.grad, r[1].grad),
            "dv": rel(v.grad, r[2].grad)}
