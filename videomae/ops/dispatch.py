"""The fused ops' view of `videomae.dispatch` (the one dispatcher, shared with attention): the `ops` family,
switched by `VIDEOMAE_BACKEND` or `with use_backend(name):`.

Adding a backend (the CUDA one lives in `videomae/ops/cuda_backend.py`):

    class CudaBackend(Backend):
        name = "cuda"
        devices = ("cuda",)
        ...
    register_backend(CudaBackend())

after defining the ops `videomae::{op}_cuda` / `videomae::{op}_cuda_backward`; its place in `auto`'s order is
`videomae.dispatch.PRIORITY`.
"""

from __future__ import annotations

import contextlib

from videomae import dispatch as _dispatch
from videomae.dispatch import Backend, NotSupportedError, TorchBackend, candidates, register_backend, select

__all__ = ["BACKEND_NAMES", "ENV", "Backend", "NotSupportedError", "TorchBackend", "backend_report", "candidates",
           "forced", "mark_broken", "register_backend", "registered", "select", "use_backend"]

BACKEND_NAMES = _dispatch.FAMILIES["ops"].switch_names
ENV = _dispatch.FAMILIES["ops"].env


def registered() -> dict[str, Backend]:
    return _dispatch.registered("ops")


def forced() -> str:
    """The fused-op backend in force: `use_backend` wins over `VIDEOMAE_BACKEND`; `auto` if neither."""
    return _dispatch.forced("ops")


def mark_broken(name: str, reason: str) -> None:
    _dispatch.mark_broken(name, reason, "ops")


def use_backend(name: str) -> contextlib.AbstractContextManager[None]:
    """Force a fused-op backend (`auto`, `cuda`, `triton`, `torch`) for the calls in this block."""
    return _dispatch.use_backend("ops", name)


def backend_report() -> dict[str, dict[str, dict]]:
    """{op: {backend: {"available": bool, "reasons": [...]}}} for the fused ops on this machine."""
    return _dispatch.backend_report("ops")

