"""Fixtures of the op tests: csrc/ compiled for the CPU (csrc/emu/cuda_emu.h), so that CI runs the real CUDA kernel
and binding code on CPU tensors, as ops `videomae_emu::*_cuda`; and those kernels served as the real
`videomae::*_cuda` ops for one test (the shared autograd glue of library.py calling them)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from videomae import _ext
from videomae.ops import cuda_backend, library

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)<<<(.*?)>>>\(", re.S)


def cuda_include() -> Path | None:
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda", *sorted(Path("/usr/local").glob("cuda-*"))):
        if home and Path(home, "include", "cuda_runtime_api.h").exists():
            return Path(home, "include")
    return None


@pytest.fixture(scope="session")
def emu():
    """torch.ops.videomae_emu: csrc/ built with -DVIDEOMAE_EMULATE after rewriting each `k<<<grid, block, smem,
    stream>>>(args)` into `::emu::launch(grid, block, smem, stream, k)(args)`; schemas from library.SCHEMAS."""
    include = cuda_include()
    from torch.utils.cpp_extension import is_ninja_available, load

    if include is None or shutil.which("c++") is None or not is_ninja_available():
        pytest.skip("needs the CUDA headers, a C++ compiler and ninja")

    build = ROOT / "build" / f"emu-torch{torch.__version__.split('+')[0]}"  # one per torch ABI (CI's two stacks)
    build.mkdir(parents=True, exist_ok=True)
    sources = []
    for src in [*sorted((ROOT / "csrc").glob("*.cu")), ROOT / "csrc" / "bindings.cpp"]:
        text = LAUNCH.sub(lambda m: f"::emu::launch({m.group(2)}, {m.group(1)})(", src.read_text())
        dst = build / f"{src.stem}.cpp"
        if not dst.exists() or dst.read_text() != text:  # keep ninja's incremental build
            dst.write_text(text)
        sources.append(str(dst))
    flags = ["-DVIDEOMAE_EMULATE", "-include", str(ROOT / "csrc" / "emu" / "cuda_emu.h"), f"-I{ROOT / 'csrc'}",
             f"-I{include}", "-O1", "-g0", "-pthread"]
    load(name="videomae_emu", sources=sources, extra_cflags=flags, extra_ldflags=["-pthread"],
         build_directory=str(build), is_python_module=False)
    # The library holds kernels only, as the real one: its schemas come from the one table. Defining them after the
    # load is the order cuda_backend uses; the dispatcher checks each C++ signature against its schema here.
    cuda_backend.define_schemas("videomae_emu")
    return torch.ops.videomae_emu


@pytest.fixture
def cuda_ops_on_cpu(emu):
    """`videomae::*_cuda` served on CPU tensors by the emulated kernels for one test: the autograd path of a step
    (the shared glue of library.py calling the backward ops) runs the real kernel code."""
    if not _ext.available():
        pytest.skip(f"the videomae::*_cuda ops are defined with the extension: {_ext.reason()}")
    lib = torch.library.Library("videomae", "IMPL")
    try:
        for op in library.SCHEMAS:
            name = library.qualname(op, "cuda").split("::")[1]
            lib.impl(name, getattr(emu, name).default, "CPU")
        yield torch.ops.videomae
    finally:
        lib._destroy()
