"""Loader of the compiled CUDA kernels `videomae._C` (csrc/, ops `torch.ops.videomae.*_cuda*`).

Never raises: when the extension cannot be used, `available()` is False, `reason()` says why and the ops fall
back to the other backends. A failed load (built against another torch, missing CUDA libraries) warns once
per process; a pure-Python install (no extension built) warns only where it matters, on a machine with a GPU.
"""

from __future__ import annotations

import importlib
import json
import sysconfig
import warnings
from pathlib import Path

import torch

_MODULE = "videomae._C"
_state: dict | None = None  # {"available": bool, "reason": str, "warn": bool} once probed
_info: dict | None = None  # the build record, read once


def build_info_path(ext_suffix: str | None = None) -> Path:
    """The build record of the extension this interpreter would load: one per extension suffix
    (`_build_info.cpython-312-x86_64-linux-gnu.json` beside `_C.cpython-312-x86_64-linux-gnu.so`), so that builds
    for other Pythons in the same tree keep their own."""
    suffix = ext_suffix if ext_suffix is not None else sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return Path(__file__).with_name(f"_build_info{suffix.removesuffix('.so')}.json")


def build_info() -> dict:
    """What setup.py recorded when it built this interpreter's extension (archs, torch, torch_cuda, nvcc, ...);
    {} if not built. Read once per process, at import of the CUDA backend (never inside a traced step)."""
    global _info
    if _info is None:
        try:
            _info = json.loads(build_info_path().read_text())
        except (OSError, ValueError):
            _info = {}
    return _info


def other_builds() -> list[str]:
    """Build records in this tree for other interpreters (one tree, two venvs: CI's pinned stack), by file name."""
    own = build_info_path().name
    return sorted(p.name for p in build_info_path().parent.glob("_build_info.*.json") if p.name != own)


def _abi_mismatch(info: dict) -> str | None:
    """Why an extension built for `info` must not be loaded into this torch (loading could crash), or None."""
    built, cuda = info.get("torch", ""), info.get("torch_cuda", "")
    if built and built.split("+")[0].split(".")[:2] != torch.__version__.split("+")[0].split(".")[:2]:
        return f"built against torch {built}, running torch {torch.__version__}"
    if cuda and torch.version.cuda and cuda.split(".")[0] != torch.version.cuda.split(".")[0]:
        return f"built against CUDA {cuda}, running torch for CUDA {torch.version.cuda}"
    return None


def _probe(module: str) -> dict:
    mismatch = _abi_mismatch(build_info())
    if mismatch:
        return {"available": False, "warn": True,
                "reason": f"{module} {mismatch}; rebuild: pip install --no-build-isolation -e ."}
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            return {"available": False, "warn": True, "reason": f"{module} failed to load: {e}"}
        return {"available": False, "warn": torch.cuda.is_available(),
                "reason": f"{module} is not built (install with nvcc present: pip install --no-build-isolation .)"}
    except (ImportError, OSError) as e:  # undefined symbols: compiled against another torch
        return {"available": False, "warn": True,
                "reason": f"{module} failed to load ({type(e).__name__}: {e}); rebuild against torch "
                          f"{torch.__version__}: pip install --no-build-isolation -e ."}
    return {"available": True, "warn": False, "reason": ""}


def _load() -> dict:
    global _state
    if _state is None:
        _state = _probe(_MODULE)
        if _state["warn"]:
            warnings.warn(f"videomae CUDA kernels unavailable, falling back: {_state['reason']}", RuntimeWarning,
                          stacklevel=3)
    return _state


def available() -> bool:
    """True when `videomae._C` is loaded: its ops are registered with torch."""
    return _load()["available"]


def reason() -> str:
    """Why the extension is unavailable; '' when it is loaded."""
    return _load()["reason"]
