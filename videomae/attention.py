"""Attention backends behind one function, `scaled_dot_product_attention(q, k, v, scale, dropout_p)`.

Every block calls that function with q, k, v: [B, H, N, d]. Which kernel runs is a global switch
(timm style, no monkey-patching): `set_attention_backend(name)`, `with use_attention_backend(name):`
or the `VIDEOMAE_ATTN` environment variable (read at import). Names:

| name             | kernel                                                             | devices   |
|------------------|--------------------------------------------------------------------|-----------|
| `auto` (default) | first backend that can run the call, in the measured order below    |           |
| `flash-attn`     | `flash_attn` package: FA3 (`flash_attn_interface`) on Hopper, else FA2 | cuda   |
| `sdpa-cudnn`     | `F.scaled_dot_product_attention` pinned to cuDNN (`sdpa_kernel`)   | cuda      |
| `sdpa-flash`     | SDPA pinned to FlashAttention-2 (CUDA) / the CPU flash kernel      | cuda, cpu |
| `sdpa-efficient` | SDPA pinned to the memory-efficient (cutlass) kernel               | cuda      |
| `xformers`       | `xformers.ops.memory_efficient_attention`                          | cuda      |
| `sdpa-math`      | SDPA pinned to the math kernel                                     | any       |
| `sdpa-default`   | SDPA with PyTorch's own choice (for comparison; never picked by auto)| any     |
| `sdpa`           | alias of `auto` restricted to the SDPA kernels                     |           |
| `eager`          | the official `softmax(q*scale @ k^T) @ v`; the reference            | any       |

Each backend declares devices, dtypes, head dims, min compute capability and dropout support and
answers `not_supported_reasons(q, k, v, dropout_p)` (xformers style). `auto` walks `priority(...)`,
a committed table keyed by (device class, dtype, sequence bucket) filled from `bench/train_step.py
--tune-attention` measurements, or, with `VIDEOMAE_ATTN_TUNE=1`, a fwd+bwd timing of every candidate
at first use of each shape (eager mode only; compiled code uses the table). A forced backend that
cannot run a call raises `AttentionNotSupported` listing its reasons. `backend_report()` feeds
`videomae info`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

ENV, TUNE_ENV = "VIDEOMAE_ATTN", "VIDEOMAE_ATTN_TUNE"
_LOW = (torch.float16, torch.bfloat16)
_ALL_FLOAT = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


class AttentionNotSupported(RuntimeError):
    """A forced attention backend cannot run a call; the message lists every reason."""


def eager_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dropout_p: float = 0.0
) -> torch.Tensor:
    """q, k, v: [B, H, N, d] -> [B, H, N, d], exactly the official order of operations."""
    attn = (q * scale) @ k.transpose(-2, -1)
    attn = attn.softmax(dim=-1)
    if dropout_p > 0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


# --------------------------------------------------------------------------
# backends


_CAPABILITY: dict[int, tuple[int, int]] = {}  # filled on first eager use, so compiled code reads a constant


def _capability(t: torch.Tensor | torch.device) -> tuple[int, int]:
    device = t.device if isinstance(t, torch.Tensor) else torch.device(t)
    if device.type != "cuda":
        return (0, 0)
    idx = torch.cuda.current_device() if device.index is None else device.index
    if idx not in _CAPABILITY:
        _CAPABILITY[idx] = torch.cuda.get_device_capability(idx)
    return _CAPABILITY[idx]


class AttentionBackend:
    """What a kernel can run. Subclasses set the declarations and `_run`; `device_rules` maps a device
    type to (dtypes, min compute capability), so one backend can differ per device (SDPA flash)."""

    name: str = ""
    device_rules: dict[str, tuple[tuple[torch.dtype, ...], tuple[int, int]]] = {}
    max_head_dim: int = 1 << 30
    head_dim_multiple: int = 1
    supports_dropout: bool = True
    needs_unit_stride: bool = False  # kernels that read rows with vector loads need stride(-1) == 1

    def unavailable_reasons(self) -> list[str]:
        """Why nothing can run here (missing package); [] if something might."""
        return []

    def not_supported_reasons(self, q, k, v, dropout_p: float = 0.0) -> list[str]:
        reasons = list(self.unavailable_reasons())
        dev = q.device.type
        if dev not in self.device_rules:
            return reasons + [f"device {dev} not in {sorted(self.device_rules)}"]
        dtypes, min_cc = self.device_rules[dev]
        if q.dtype not in dtypes:
            reasons.append(f"dtype {q.dtype} not in {[str(d).removeprefix('torch.') for d in dtypes]} on {dev}")
        if not (q.dtype == k.dtype == v.dtype):
            reasons.append("q, k, v dtypes differ")
        if q.dim() != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
            reasons.append(f"shapes q {tuple(q.shape)} k {tuple(k.shape)} v {tuple(v.shape)} not [B, H, N, d]")
        d = q.shape[-1]
        if d > self.max_head_dim or d % self.head_dim_multiple:
            reasons.append(f"head dim {d} not <= {self.max_head_dim} and a multiple of {self.head_dim_multiple}")
        if dropout_p > 0 and not self.supports_dropout:
            reasons.append("dropout not supported")
        if self.needs_unit_stride and any(t.stride(-1) != 1 for t in (q, k, v)):
            reasons.append("last dim of q, k or v not contiguous")
        cc = _capability(q)
        if dev == "cuda" and cc < min_cc:
            reasons.append(f"compute capability {cc} < {min_cc}")
        return reasons

    def __call__(self, q, k, v, scale: float, dropout_p: float) -> torch.Tensor:
        return self._run(q, k, v, scale, dropout_p)

    def _run(self, q, k, v, scale, dropout_p):  # pragma: no cover - every backend overrides
        raise NotImplementedError


class Eager(AttentionBackend):
    name = "eager"
    device_rules = {"cpu": (_ALL_FLOAT, (0, 0)), "cuda": (_ALL_FLOAT, (0, 0)), "mps": (_ALL_FLOAT[1:], (0, 0))}

    def _run(self, q, k, v, scale, dropout_p):
        return eager_attention(q, k, v, scale, dropout_p)


class Sdpa(AttentionBackend):
    """`F.scaled_dot_product_attention` pinned to one kernel; the rules mirror torch's `sdp_utils`
    checks so that `auto` never reaches torch's "No available kernel" error."""

    kernel: SDPBackend | None = None  # None: PyTorch's own choice

    def _run(self, q, k, v, scale, dropout_p):
        if self.kernel is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
        with sdpa_kernel([self.kernel]):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)


class SdpaDefault(Sdpa):
    name = "sdpa-default"
    device_rules = Eager.device_rules


class SdpaMath(Sdpa):
    name, kernel = "sdpa-math", SDPBackend.MATH
    device_rules = Eager.device_rules


class SdpaFlash(Sdpa):
    # CPU: torch's flash kernel has no dropout path (measured: "No available kernel" with p > 0).
    name, kernel = "sdpa-flash", SDPBackend.FLASH_ATTENTION
    device_rules = {"cpu": (_ALL_FLOAT, (0, 0)), "cuda": (_LOW, (8, 0))}
    max_head_dim, head_dim_multiple, needs_unit_stride = 256, 8, True

    def not_supported_reasons(self, q, k, v, dropout_p=0.0):
        reasons = super().not_supported_reasons(q, k, v, dropout_p)
        if q.device.type == "cpu" and dropout_p > 0:
            reasons.append("dropout not supported by the CPU flash kernel")
        return reasons


class SdpaEfficient(Sdpa):
    name, kernel = "sdpa-efficient", SDPBackend.EFFICIENT_ATTENTION
    device_rules = {"cuda": ((torch.float32, *_LOW), (5, 0))}
    head_dim_multiple, needs_unit_stride = 8, True


class SdpaCudnn(Sdpa):
    # Dropout: cuDNN's SDPA dropout path is newer and less tested than the others; let auto pass it over.
    name, kernel = "sdpa-cudnn", SDPBackend.CUDNN_ATTENTION
    device_rules = {"cuda": (_LOW, (8, 0))}
    max_head_dim, head_dim_multiple, supports_dropout, needs_unit_stride = 128, 8, False, True


class FlashAttn(AttentionBackend):
    """Tri Dao's `flash_attn`: FA3 (`flash_attn_interface`, Hopper build) on sm90 without dropout,
    FA2 (`flash_attn.flash_attn_func`) otherwise. Layout [B, N, H, d]: a transposed view of our
    [B, H, N, d] q/k/v, which are views of the fused qkv output, so no copy is made."""

    name = "flash-attn"
    device_rules = {"cuda": (_LOW, (8, 0))}
    max_head_dim, head_dim_multiple, needs_unit_stride = 256, 8, True

    def __init__(self):
        # Imported once here, not at the first call, so that compiled code never traces an import.
        self._fa2, self._fa2_error = _import_attr("flash_attn", "flash_attn_func")
        self._fa3, self._fa3_error = _import_attr("flash_attn_interface", "flash_attn_func")

    def unavailable_reasons(self):
        if self._fa2 is None and self._fa3 is None:
            return [f"flash_attn: {self._fa2_error}; flash_attn_interface (FA3): {self._fa3_error}"]
        return []

    def not_supported_reasons(self, q, k, v, dropout_p=0.0):
        reasons = super().not_supported_reasons(q, k, v, dropout_p)
        if not reasons and self._pick(q, dropout_p) is None:
            reasons.append("only FA3 is installed and it has no dropout")
        return reasons

    def _pick(self, q, dropout_p) -> Callable | None:
        if self._fa3 is not None and _capability(q) >= (9, 0) and dropout_p == 0:
            return self._fa3
        return self._fa2

    def _run(self, q, k, v, scale, dropout_p):
        fn = self._pick(q, dropout_p)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if fn is self._fa3:
            out = fn(q, k, v, softmax_scale=scale, causal=False)
        else:
            out = fn(q, k, v, dropout_p=dropout_p, softmax_scale=scale, causal=False)
        out = out[0] if isinstance(out, tuple) else out  # some FA3 versions also return the LSE
        return out.transpose(1, 2)


class Xformers(AttentionBackend):
    name = "xformers"
    device_rules = {"cuda": ((torch.float32, *_LOW), (5, 0))}
    head_dim_multiple, needs_unit_stride = 8, True

    def __init__(self):
        self._fn, self._error = _import_attr("xformers.ops", "memory_efficient_attention")

    def unavailable_reasons(self):
        return [] if self._fn is not None else [f"xformers: {self._error}"]

    def _run(self, q, k, v, scale, dropout_p):
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        return self._fn(q, k, v, p=dropout_p, scale=scale).transpose(1, 2)


def _import_attr(module: str, attr: str) -> tuple[Callable | None, str]:
    """(the attribute, "") or (None, why): any import failure is a reason, not a crash."""
    try:
        if importlib.util.find_spec(module.split(".")[0]) is None:
            return None, "not installed"
        return getattr(importlib.import_module(module), attr), ""
    except Exception as e:  # noqa: BLE001
        return None, f"import failed: {type(e).__name__}: {e}"


BACKENDS: dict[str, AttentionBackend] = {
    b.name: b
    for b in (FlashAttn(), SdpaCudnn(), SdpaFlash(), SdpaEfficient(), Xformers(), SdpaMath(), SdpaDefault(), Eager())
}
ATTENTION_BACKENDS = ("auto", "sdpa", *BACKENDS)

# --------------------------------------------------------------------------
# the priority table: which kernel `auto` tries first, per (device class, dtype, sequence bucket)

SEQ_BUCKETS = (256, 1024, 4096)  # encoder ~160-400 tokens, decoder 1568 at 16x224, 3000+ at 32 frames / 320 px

# Priors until measured: bench/train_step.py tunes on the GPU and its JSON carries the measured table
# (`attention_tuning.priority`) to paste here. Keys: (device class, dtype name, bucket upper bound);
# bucket 0 is "any length" for these priors and "longer than 4096" for tuned entries.
# Hopper: FA3 / cuDNN lead published H100 numbers for d=64 non-causal; Ampere: FA2 leads.
_FAST_CUDA = ["flash-attn", "sdpa-cudnn", "sdpa-flash", "xformers", "sdpa-efficient", "sdpa-math", "eager"]
PRIORITY: dict[tuple[str, str, int], list[str]] = {
    ("cuda-sm90", "bfloat16", 0): _FAST_CUDA,
    ("cuda-sm80", "bfloat16", 0): ["flash-attn", "sdpa-flash", "xformers", "sdpa-efficient", "sdpa-cudnn",
                                   "sdpa-math", "eager"],
    ("cuda", "float32", 0): ["sdpa-efficient", "xformers", "sdpa-math", "eager"],
    # CPU: the flash kernel tiles and never materializes [N, N]; math falls back when it cannot run.
    ("cpu", "*", 0): ["sdpa-flash", "sdpa-math", "eager"],
}
_DEFAULT_ORDER = ["flash-attn", "sdpa-cudnn", "sdpa-flash", "xformers", "sdpa-efficient", "sdpa-math", "eager"]


def device_class(t: torch.Tensor) -> str:
    if t.device.type != "cuda":
        return t.device.type
    major, _ = _capability(t)
    return "cuda-sm90" if major >= 9 else "cuda-sm80" if major == 8 else "cuda"


def _bucket(n: int) -> int:
    return next((b for b in SEQ_BUCKETS if n <= b), 0)


def _table_key(q: torch.Tensor) -> tuple[str, str, int]:
    return device_class(q), str(q.dtype).removeprefix("torch."), _bucket(q.shape[-2])


def priority(q: torch.Tensor) -> list[str]:
    """Backend names in the order `auto` tries them for q's device, dtype and length (tuned entries win)."""
    dev, dt, b = _table_key(q)
    fp16_as_bf16 = "bfloat16" if dt == "float16" else dt  # same kernels, same ranking
    for key in ((dev, dt, b), (dev, dt, 0), (dev, fp16_as_bf16, 0), (dev, "*", 0), (dev.split("-")[0], dt, 0)):
        if key in PRIORITY:
            return PRIORITY[key]
    return _DEFAULT_ORDER


# --------------------------------------------------------------------------
# the switch and the one function


def _check_name(name: str) -> str:
    name = name.strip().lower().replace("_", "-")
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {name!r}")
    return name


_backend = _check_name(os.environ.get(ENV, "auto") or "auto")
_tune = os.environ.get(TUNE_ENV, "0") not in ("", "0", "false")


def set_attention_backend(name: str) -> None:
    """Force one backend for every block (`auto` to dispatch per call); see the module docstring."""
    global _backend
    _backend = _check_name(name)


def get_attention_backend() -> str:
    return _backend


@contextlib.contextmanager
def use_attention_backend(name: str) -> Iterator[None]:
    """Force a backend inside the block, restoring the previous switch afterwards."""
    prev = _backend
    set_attention_backend(name)
    try:
        yield
    finally:
        set_attention_backend(prev)


def select_backend(q, k, v, dropout_p: float = 0.0, name: str | None = None) -> AttentionBackend:
    """The backend that runs this call under switch `name` (default: the global one)."""
    name = _check_name(name or _backend)
    if name not in ("auto", "sdpa"):
        reasons = BACKENDS[name].not_supported_reasons(q, k, v, dropout_p)
        if reasons:
            raise AttentionNotSupported(f"attention backend {name!r} cannot run this call: " + "; ".join(reasons))
        return BACKENDS[name]
    order = priority(q)
    if _tune and not torch.compiler.is_compiling():
        order = _tuned_order(q, k, v, dropout_p)
    if name == "sdpa":
        order = [n for n in order if n.startswith("sdpa")] + ["sdpa-default"]
    tried = []
    for n in order:
        reasons = BACKENDS[n].not_supported_reasons(q, k, v, dropout_p)
        if not reasons:
            return BACKENDS[n]
        tried.append(f"{n}: {'; '.join(reasons)}")
    raise AttentionNotSupported(f"no attention backend can run this call ({name}): " + " | ".join(tried))


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dropout_p: float = 0.0
) -> torch.Tensor:
    """q, k, v: [B, H, N, d] -> [B, H, N, d]: `softmax(q k^T * scale) v` (dropout on the weights)."""
    return select_backend(q, k, v, dropout_p)(q, k, v, scale, dropout_p)


# --------------------------------------------------------------------------
# measuring: first-use tuning and the report


_TUNED: dict[tuple, list[str]] = {}


def time_backend(name: str, q, k, v, scale: float, reps: int = 10) -> float:
    """Median ms of one forward+backward of backend `name` on these inputs (CUDA events; host clock on CPU)."""
    import statistics
    import time

    fn = BACKENDS[name]
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
    ms = {}
    for n in priority(q) + [n for n in BACKENDS if n not in priority(q)]:
        if n == "sdpa-default" or BACKENDS[n].not_supported_reasons(q, k, v, 0.0):
            continue
        try:
            ms[n] = time_backend(n, q, k, v, scale, reps)
        except RuntimeError as e:  # a declared-ok kernel that still refuses: record, never pick it
            ms[n] = float("inf")
            print(f"[videomae.attention] {n} failed on {tuple(q.shape)} {q.dtype}: {e}")
    PRIORITY[_table_key(q)] = sorted(ms, key=ms.get) + [n for n in priority(q) if n not in ms]
    return ms


def _tuned_order(q, k, v, dropout_p):
    key = (*_table_key(q), q.shape[0], q.shape[1], q.shape[-1], dropout_p > 0)
    if key not in _TUNED:
        tune(q, k, v)
        _TUNED[key] = PRIORITY[_table_key(q)]
    return _TUNED[key]


def reference_errors(name: str, q, k, v, scale: float) -> dict[str, float]:
    """||x - ref|| / ||ref|| of backend `name`'s output and q/k/v gradients against eager attention in
    float64 on the same inputs (a random output gradient). Shared by the GPU test and the benchmark."""
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = BACKENDS[name](q, k, v, scale, 0.0)
    grad = torch.randn_like(out)
    out.backward(grad)
    r = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = eager_attention(*r, scale)
    ref.backward(grad.double())

    def rel(x, y):
        return ((x.double() - y).norm() / y.norm().clamp_min(1e-30)).item()

    return {"out": rel(out, ref), "dq": rel(q.grad, r[0].grad), "dk": rel(k.grad, r[1].grad),
            "dv": rel(v.grad, r[2].grad)}


def backend_report(device: str | torch.device | None = None, dtype: torch.dtype = torch.bfloat16) -> dict:
    """For `videomae info`: the switch, and per backend whether it can run typical encoder (160
    tokens) and decoder (1568 tokens) calls of ViT-B on `device` in `dtype`, with reasons, and
    which backend `auto` picks for each."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shapes = {"encoder": (1, 12, 160, 64), "decoder": (1, 6, 1568, 64)}
    report = {"switch": _backend, "env": ENV, "tune_at_first_use": _tune, "device": str(device),
              "dtype": str(dtype).removeprefix("torch."), "backends": {}, "auto": {}}
    for part, shape in shapes.items():
        q = torch.randn(shape, dtype=dtype, device=device)
        for n, b in BACKENDS.items():
            reasons = b.not_supported_reasons(q, q, q, 0.0)
            report["backends"].setdefault(n, {})[part] = {"available": not reasons, "reasons": reasons}
        try:
            report["auto"][part] = select_backend(q, q, q, 0.0, name="auto").name
        except AttentionNotSupported as e:
            report["auto"][part] = f"none: {e}"
    return report
