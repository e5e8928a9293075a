"""Attention backends behind one function, `scaled_dot_product_attention(q, k, v, scale, dropout_p)`.

Every block calls that function with q, k, v: [B, H, N, d]. Which kernel runs is the `attention` switch of
`videomae.dispatch` (the dispatcher the fused ops use too; no monkey-patching): `with use_backend(attention=name):`
or the `VIDEOMAE_ATTN` environment variable (see that module's docstring).

| name             | kernel                                                             | devices   |
|------------------|--------------------------------------------------------------------|-----------|
| `auto` (default) | first backend that can run the call, in `videomae.dispatch.PRIORITY` order |    |
| `flash-attn`     | `flash_attn` package: FA3 (`flash_attn_interface`) on Hopper, else FA2 | cuda   |
| `sdpa-cudnn`     | `F.scaled_dot_product_attention` pinned to cuDNN (`sdpa_kernel`)   | cuda      |
| `sdpa-flash`     | SDPA pinned to FlashAttention-2 (CUDA) / the CPU flash kernel      | cuda, cpu |
| `sdpa-efficient` | SDPA pinned to the memory-efficient (cutlass) kernel               | cuda      |
| `xformers`       | `xformers.ops.memory_efficient_attention`                          | cuda      |
| `sdpa-math`      | SDPA pinned to the math kernel                                     | any       |
| `sdpa-default`   | SDPA with PyTorch's own choice (for comparison; never picked by auto)| any     |
| `sdpa`           | `auto` restricted to the SDPA kernels                              |           |
| `eager`          | the official `softmax(q*scale @ k^T) @ v`; the reference           | any       |

Each backend is a `videomae.dispatch.Backend` declaring devices, dtypes, head dims, min compute capability
and dropout support; `reasons(q, k, v, dropout_p)` says why it cannot run a call. `auto`'s choice is cached
per (shapes, dtypes, device, dropout > 0), so a forward walks the priority table once per shape. With
`VIDEOMAE_ATTN_TUNE=1`, the first eager call of each shape times every candidate (`videomae.attention_tune`)
and installs the measured order. A forced backend that cannot run a call raises `AttentionNotSupported`
(= `videomae.dispatch.NotSupportedError`) listing its reasons. `backend_report()` feeds `videomae info`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from videomae import dispatch
from videomae.dispatch import NotSupportedError, capability

ENV, TUNE_ENV = dispatch.FAMILIES["attention"].env, "VIDEOMAE_ATTN_TUNE"
AttentionNotSupported = NotSupportedError  # the name user code catches
PRIORITY = dispatch.PRIORITY  # the one table; attention rows are keyed ("attention", device class, dtype, bucket)
_LOW = (torch.float16, torch.bfloat16)
_ALL_FLOAT = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def eager_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dropout_p: float = 0.0
) -> torch.Tensor:
    """q: [B, H, Nq, d], k, v: [B, H, N, d] -> [B, H, Nq, d], exactly the official order of operations."""
    attn = (q * scale) @ k.transpose(-2, -1)
    attn = attn.softmax(dim=-1)
    if dropout_p > 0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


def attention_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> dict:
    """A call's inputs as the dispatcher sees them: dropout matters only as on/off."""
    return {"q": q, "k": k, "v": v, "dropout": dropout_p > 0}


# --------------------------------------------------------------------------
# backends


class AttentionBackend(dispatch.Backend):
    """What a kernel can run. Subclasses set the declarations and `_run`."""

    family = "attention"
    max_head_dim: int = 1 << 30
    head_dim_multiple: int = 1
    supports_dropout: bool = True
    needs_unit_stride: bool = False  # kernels that read rows with vector loads need stride(-1) == 1

    def not_supported_reasons(self, op: str, inputs: dict[str, object]) -> list[str]:
        reasons = super().not_supported_reasons(op, inputs)
        q, k, v = inputs["q"], inputs["k"], inputs["v"]
        if not (q.dtype == k.dtype == v.dtype):
            reasons.append("q, k, v dtypes differ")
        if q.dim() != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
            reasons.append(f"shapes q {tuple(q.shape)} k {tuple(k.shape)} v {tuple(v.shape)} not [B, H, N, d]")
        d = q.shape[-1]
        if d > self.max_head_dim or d % self.head_dim_multiple:
            reasons.append(f"head dim {d} not <= {self.max_head_dim} and a multiple of {self.head_dim_multiple}")
        if inputs.get("dropout") and not self.supports_dropout:
            reasons.append("dropout not supported")
        if self.needs_unit_stride and any(t.stride(-1) != 1 for t in (q, k, v)):
            reasons.append("last dim of q, k or v not contiguous")
        return reasons

    def reasons(self, q, k, v, dropout_p: float = 0.0) -> list[str]:
        """Why this backend cannot run attention on these q, k, v; [] if it can."""
        return self.not_supported_reasons("attention", attention_inputs(q, k, v, dropout_p))

    def __call__(self, q, k, v, scale: float, dropout_p: float) -> torch.Tensor:
        return self._run(q, k, v, scale, dropout_p)

    def _run(self, q, k, v, scale, dropout_p):  # pragma: no cover - every backend overrides
        raise NotImplementedError


class Eager(AttentionBackend):
    name = "eager"
    devices, dtypes, device_dtypes = ("cpu", "cuda", "mps"), _ALL_FLOAT, {"mps": _ALL_FLOAT[1:]}

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
    devices, dtypes, device_dtypes = Eager.devices, Eager.dtypes, Eager.device_dtypes


class SdpaMath(Sdpa):
    name, kernel = "sdpa-math", SDPBackend.MATH
    devices, dtypes, device_dtypes = Eager.devices, Eager.dtypes, Eager.device_dtypes


class SdpaFlash(Sdpa):
    # CPU: torch's flash kernel has no dropout path (measured: "No available kernel" with p > 0).
    name, kernel = "sdpa-flash", SDPBackend.FLASH_ATTENTION
    devices, dtypes, device_dtypes, min_compute_capability = ("cpu", "cuda"), _ALL_FLOAT, {"cuda": _LOW}, (8, 0)
    max_head_dim, head_dim_multiple, needs_unit_stride = 256, 8, True

    def not_supported_reasons(self, op, inputs):
        reasons = super().not_supported_reasons(op, inputs)
        if inputs["q"].device.type == "cpu" and inputs.get("dropout"):
            reasons.append("dropout not supported by the CPU flash kernel")
        return reasons


class SdpaEfficient(Sdpa):
    name, kernel = "sdpa-efficient", SDPBackend.EFFICIENT_ATTENTION
    devices, dtypes, min_compute_capability = ("cuda",), (torch.float32, *_LOW), (5, 0)
    head_dim_multiple, needs_unit_stride = 8, True


class SdpaCudnn(Sdpa):
    # Dropout: cuDNN's SDPA dropout path is newer and less tested than the others; let auto pass it over.
    name, kernel = "sdpa-cudnn", SDPBackend.CUDNN_ATTENTION
    devices, dtypes, min_compute_capability = ("cuda",), _LOW, (8, 0)
    max_head_dim, head_dim_multiple, supports_dropout, needs_unit_stride = 128, 8, False, True


class FlashAttn(AttentionBackend):
    """Tri Dao's `flash_attn`: FA3 (`flash_attn_interface`, Hopper build) on sm90 without dropout,
    FA2 (`flash_attn.flash_attn_func`) otherwise. Layout [B, N, H, d]: a transposed view of our
    [B, H, N, d] q/k/v, which are views of the fused qkv output, so no copy is made."""

    name = "flash-attn"
    devices, dtypes, min_compute_capability = ("cuda",), _LOW, (8, 0)
    max_head_dim, head_dim_multiple, needs_unit_stride = 256, 8, True

    def __init__(self):
        # Imported once here, not at the first call, so that compiled code never traces an import.
        self._fa2, self._fa2_error = _import_attr("flash_attn", "flash_attn_func")
        self._fa3, self._fa3_error = _import_attr("flash_attn_interface", "flash_attn_func")

    def unavailable_reasons(self):
        if self._fa2 is None and self._fa3 is None:
            return [f"flash_attn: {self._fa2_error}; flash_attn_interface (FA3): {self._fa3_error}"]
        return []

    def not_supported_reasons(self, op, inputs):
        reasons = super().not_supported_reasons(op, inputs)
        if not reasons and self._pick(inputs["q"], bool(inputs.get("dropout"))) is None:
            reasons.append("only FA3 is installed and it has no dropout")
        return reasons

    def _pick(self, q, dropout: bool) -> Callable | None:
        if self._fa3 is not None and capability(q) >= (9, 0) and not dropout:
            return self._fa3
        return self._fa2

    def _run(self, q, k, v, scale, dropout_p):
        fn = self._pick(q, dropout_p > 0)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if fn is self._fa3:
            out = fn(q, k, v, softmax_scale=scale, causal=False)
        else:
            out = fn(q, k, v, dropout_p=dropout_p, softmax_scale=scale, causal=False)
        out = out[0] if isinstance(out, tuple) else out  # some FA3 versions also return the LSE
        return out.transpose(1, 2)


class Xformers(AttentionBackend):
    name = "xformers"
    devices, dtypes, min_compute_capability = ("cuda",), (torch.float32, *_LOW), (5, 0)
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
for _b in BACKENDS.values():
    dispatch.register_backend(_b)
ATTENTION_BACKENDS = dispatch.FAMILIES["attention"].switch_names


def device_class(t: torch.Tensor) -> str:
    return dispatch.device_class(t)


def priority(q: torch.Tensor) -> list[str]:
    """Backend names in the order `auto` tries them for q's device, dtype and length (tuned entries win)."""
    return dispatch.priority("attention", {"q": q})


# --------------------------------------------------------------------------
# the one function


_tune = os.environ.get(TUNE_ENV, "0") not in ("", "0", "false")
_TUNED: set[tuple] = set()


def select_backend(q, k, v, dropout_p: float = 0.0, name: str | None = None) -> AttentionBackend:
    """The backend that runs this call under switch `name` (default: the one in force)."""
    if _tune and not torch.compiler.is_compiling():
        key = (dispatch.device_class(q), q.dtype, tuple(q.shape), dropout_p > 0)
        if key not in _TUNED:  # timing runs eagerly, once per shape, and installs its order in the table
            from videomae.attention_tune import tune  # only when tuning: a forward never imports the timers

            tune(q, k, v)
            _TUNED.add(key)
    return dispatch.select("attention", attention_inputs(q, k, v, dropout_p), name)


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dropout_p: float = 0.0
) -> torch.Tensor:
    """q: [B, H, Nq, d], k, v: [B, H, N, d] -> [B, H, Nq, d]: `softmax(q k^T * scale) v` (dropout on the weights)."""
    return select_backend(q, k, v, dropout_p)(q, k, v, scale, dropout_p)


# --------------------------------------------------------------------------
# the report


def backend_report(device: str | torch.device | None = None, dtype: torch.dtype = torch.bfloat16) -> dict:
    """For `videomae info`: the switch, and per backend whether it can run typical encoder (160
    tokens) and decoder (1568 tokens) calls of ViT-B on `device` in `dtype`, with reasons, and
    which backend `auto` picks for each."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shapes = {"encoder": (1, 12, 160, 64), "decoder": (1, 6, 1568, 64)}
    report = {"switch": dispatch.switches()["attention"]["switch"], "env": ENV, "tune_at_first_use": _tune,
              "device": str(device), "dtype": str(dtype).removeprefix("torch."), "backends": {}, "auto": {}}
    for part, shape in shapes.items():
        q = torch.empty(shape, dtype=dtype, device=device)
        for n, b in BACKENDS.items():
            reasons = b.reasons(q, q, q, 0.0)
            report["backends"].setdefault(n, {})[part] = {"available": not reasons, "reasons": reasons}
        try:
            report["auto"][part] = select_backend(q, q, q, 0.0, name="auto").name
        except AttentionNotSupported as e:
            report["auto"][part] = f"none: {e}"
    return report

