"""Backend registry and per-call dispatch, xformers style.

A backend is an object with a `name`, a `priority` and `not_supported_reasons(op, inputs) -> list[str]`;
it runs op `X` through the torch op `videomae::X_{name}` (see `library.py`). Each call:
- `auto` (default): the first backend with no reasons, in order of the per-op preference table
  (`preference.json`, measured on GPU) and then of priority (cuda > triton > torch);
- forced (`VIDEOMAE_BACKEND=name` or `with use_backend(name):`): that backend, or `NotSupportedError`
  listing every reason it cannot run the call.

Adding a backend (the CUDA one lives in `videomae/ops/cuda_backend.py`):

    class CudaBackend(Backend):
        name, priority = "cuda", 30
        devices = ("cuda",)
        ...
    register_backend(CudaBackend())

after defining the ops `videomae::{op}_cuda` / `videomae::{op}_cuda_backward` with the schemas of
`library.SCHEMAS` and calling `library.register_fakes_and_autograd("cuda")`. `videomae/ops/__init__.py`
imports `cuda_backend` if it exists; an import error there becomes an availability reason, not a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

BACKEND_NAMES = ("auto", "cuda", "triton", "torch")
ENV = "VIDEOMAE_BACKEND"
PREFERENCE_FILE = Path(__file__).with_name("preference.json")


class NotSupportedError(RuntimeError):
    """A forced backend cannot run a call; the message lists every reason."""


class Backend:
    """Declares what a backend can run; subclasses set the class attributes and may extend the checks."""

    name: str = ""
    priority: int = 0
    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)
    min_compute_capability: tuple[int, int] = (0, 0)
    ops: tuple[str, ...] = ("cube_embed", "decoder_input", "norm_pix_mse")

    def unavailable_reasons(self) -> list[str]:
        """Why this backend cannot run anything here (missing library, no device); [] if it can."""
        return []

    def not_supported_reasons(self, op: str, inputs: dict[str, torch.Tensor | None]) -> list[str]:
        """inputs: the op's tensors by argument name; the first float tensor sets the dtype that matters."""
        reasons = list(self.unavailable_reasons())
        if op not in self.ops:
            reasons.append(f"op {op} not implemented")
        tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        for k, v in tensors.items():
            if v.device.type not in self.devices:
                reasons.append(f"{k} on {v.device.type}, needs {'/'.join(self.devices)}")
        floats = [v for v in tensors.values() if v.is_floating_point()]
        if floats and floats[0].dtype not in self.dtypes:
            reasons.append(f"dtype {floats[0].dtype} not in {[str(d) for d in self.dtypes]}")
        for v in tensors.values():
            if v.device.type == "cuda" and torch.cuda.get_device_capability(v.device) < self.min_compute_capability:
                reasons.append(f"compute capability {torch.cuda.get_device_capability(v.device)} "
                               f"< {self.min_compute_capability}")
                break
        return reasons


class TorchBackend(Backend):
    """Eager torch (`torch_backend.py`): runs everything, everywhere."""

    name, priority = "torch", 10
    dtypes = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


_BACKENDS: dict[str, Backend] = {}
_BROKEN: dict[str, str] = {}  # backend name -> why its module failed to import
_FORCED = threading.local()


def register_backend(backend: Backend) -> None:
    """Add (or replace) a backend; dispatch considers it from the next call on."""
    if backend.name not in BACKEND_NAMES[1:]:
        raise ValueError(f"backend name must be one of {BACKEND_NAMES[1:]}, got {backend.name!r}")
    _BACKENDS[backend.name] = backend
    _BROKEN.pop(backend.name, None)


def mark_broken(name: str, reason: str) -> None:
    """Record why a backend could not be loaded, for errors and `backend_report()`."""
    if name not in _BACKENDS:
        _BROKEN[name] = reason


def registered() -> dict[str, Backend]:
    return dict(_BACKENDS)


def load_preference(path: Path = PREFERENCE_FILE) -> dict[str, list[str]]:
    """{op: [backend, ...]} fastest first, from the committed GPU benchmark table; {} if absent."""
    if not path.exists():
        return {}
    table = json.loads(path.read_text())
    return {k: list(v) for k, v in table.items() if not k.startswith("_")}


_PREFERENCE = load_preference()


def candidates(op: str) -> list[Backend]:
    """Backends in the order `auto` tries them for `op`."""
    preferred = [n for n in _PREFERENCE.get(op, []) if n in _BACKENDS]
    rest = sorted((b for b in _BACKENDS.values() if b.name not in preferred), key=lambda b: -b.priority)
    return [_BACKENDS[n] for n in preferred] + rest


def forced() -> str:
    """The backend name in force: `use_backend` wins over `VIDEOMAE_BACKEND`; `auto` if neither."""
    name = getattr(_FORCED, "name", None) or os.environ.get(ENV, "auto").strip().lower() or "auto"
    if name not in BACKEND_NAMES:
        raise ValueError(f"{ENV} must be one of {BACKEND_NAMES}, got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force a backend (`auto`, `cuda`, `triton`, `torch`) for the calls in this block, this thread."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {name!r}")
    prev = getattr(_FORCED, "name", None)
    _FORCED.name = name
    try:
        yield
    finally:
        _FORCED.name = prev


def _reasons(name: str, op: str, inputs: dict) -> list[str]:
    if name in _BROKEN:
        return [_BROKEN[name]]
    if name not in _BACKENDS:
        return ["not registered"]
    return _BACKENDS[name].not_supported_reasons(op, inputs)


def select(op: str, inputs: dict[str, torch.Tensor | None]) -> Backend:
    """The backend that runs this call (see the module docstring)."""
    name = forced()
    if name != "auto":
        reasons = _reasons(name, op, inputs)
        if reasons:
            raise NotSupportedError(f"backend {name!r} cannot run {op}: " + "; ".join(reasons))
        return _BACKENDS[name]
    tried = []
    for backend in candidates(op):
        reasons = backend.not_supported_reasons(op, inputs)
        if not reasons:
            return backend
        tried.append(f"{backend.name}: {'; '.join(reasons)}")
    raise NotSupportedError(f"no backend can run {op}: " + " | ".join(tried))


def backend_report() -> dict[str, dict[str, dict]]:
    """{op: {backend: {"available": bool, "reasons": [...]}}} for the environment (no particular input).

    Availability here means "could run some call of this op on this machine"; per-call reasons
    (dtype, device of the inputs) appear only when a call is dispatched.
    """
    report: dict[str, dict[str, dict]] = {}
    for op in Backend.ops:
        report[op] = {}
        for name in BACKEND_NAMES[1:]:
            if name in _BROKEN or name not in _BACKENDS:
                reasons = [_BROKEN.get(name, "not registered")]
            else:
                b = _BACKENDS[name]
                reasons = b.unavailable_reasons() + ([] if op in b.ops else [f"op {op} not implemented"])
            report[op][name] = {"available": not reasons, "reasons": reasons}
    return report
