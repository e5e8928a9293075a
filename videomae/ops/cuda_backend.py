"""The `cuda` backend: ops `videomae::{op}_cuda` compiled from csrc/ into `videomae._C`.

The schemas are the one table `library.SCHEMAS`, defined here; the extension only implements them
(`TORCH_LIBRARY_IMPL(videomae, CUDA, m)` in csrc/bindings.cpp). The dispatcher takes the C++ kernels before their
schemas and checks, when a schema is defined, that the kernel's C++ signature matches it: an extension built from
other sources fails here, with one line saying to rebuild. Fake kernels and autograd are the shared ones of
`library.py`. Without a usable extension nothing is registered and the dispatch reports why.
"""

from __future__ import annotations

import torch

from videomae import _ext
from videomae.dispatch import Backend, capability, mark_broken, register_backend

from .library import OPS, SCHEMAS, qualname, register_fakes_and_autograd

MAX_CHANNELS = 4  # per-channel constants live in registers (csrc/videomae_kernels.h: ChannelAffine)
MAX_CUBE = 40960  # norm_pix_mse stages a cube in shared memory as fp32 (160 KiB)


def _arch(text: str) -> tuple[tuple[int, int], bool]:
    """'9.0+PTX' -> ((9, 0), True)"""
    base, _, ptx = text.strip().partition("+")
    major, minor = base.rstrip("a").split(".")
    return (int(major), int(minor)), ptx.upper() == "PTX"


def _built_archs(archs: str) -> tuple[tuple[tuple[int, int], bool], ...]:
    """'8.0;9.0+PTX' -> (((8, 0), False), ((9, 0), True))"""
    return tuple(map(_arch, archs.replace(" ", ";").split(";"))) if archs else ()


def _runs_on(capability: tuple[int, int], built: tuple | None = None) -> bool:
    """Whether the built code runs on a device: a cubin of the same major and no newer minor, or older PTX.

    `built` defaults to the archs read once at import (`BUILT_ARCHS`): dispatch runs inside torch.compile's trace,
    where reading the build record (file I/O) cannot be traced, so this is plain arithmetic on constants."""
    built = BUILT_ARCHS if built is None else built
    if not built:
        return True  # no record (hand-built): let the kernel launch report it
    for arch, ptx in built:
        if (arch[0] == capability[0] and arch[1] <= capability[1]) or (ptx and arch <= capability):
            return True
    return False


def define_schemas(namespace: str = "videomae") -> None:
    """Define the six `{op}_cuda` ops of `library.SCHEMAS` in `namespace` (`videomae_emu`: the tests' CPU build)."""
    for op, schema in SCHEMAS.items():
        torch.library.define(f"{namespace}::{qualname(op, 'cuda').split('::')[1]}", schema)


def _register() -> str:
    """Load the extension and register its ops: '' when done, else why not."""
    if not _ext.available():
        return _ext.reason()
    try:
        define_schemas()
    except RuntimeError as e:  # the C++ kernels' signatures do not match SCHEMAS: a stale build
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return (f"videomae._C does not match the op schemas of videomae.ops.library ({first}); rebuild: "
                "pip install --no-build-isolation -e .")
    register_fakes_and_autograd("cuda")
    return ""


class CudaBackend(Backend):
    """CUDA C++ kernels (csrc/): fp32/bf16/fp16 on sm_80+ for the archs the extension was built for."""

    name = "cuda"
    ops = OPS  # the ops csrc/ implements (not library.PYTHON_OPS)
    devices = ("cuda",)
    min_compute_capability = (8, 0)

    def unavailable_reasons(self) -> list[str]:
        if _REASON:
            return [_REASON]
        if not torch.cuda.is_available():
            return ["no CUDA device"]
        return []

    def not_supported_reasons(self, op: str, inputs: dict[str, torch.Tensor | None]) -> list[str]:
        reasons = super().not_supported_reasons(op, inputs)
        tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        # Every float input, not just the first: the kernels read pos / mask_token in their own dtype.
        for k, v in tensors.items():
            if v.is_floating_point() and v.dtype not in self.dtypes:
                reasons.append(f"{k} has dtype {v.dtype}, needs one of {[str(d) for d in self.dtypes]}")
        cuda = [v for v in tensors.values() if v.device.type == "cuda"]
        if cuda and not _runs_on(capability(cuda[0])):
            reasons.append(f"built for archs {BUILT_ARCHS_TEXT}, device has compute capability "
                           f"{capability(cuda[0])}")
        videos = inputs.get("videos")
        if isinstance(videos, torch.Tensor) and videos.dim() == 5:
            channels = videos.shape[1]
            if (op == "norm_pix_mse" or videos.dtype == torch.uint8) and channels > MAX_CHANNELS:
                reasons.append(f"videos has {channels} channels, the kernels take at most {MAX_CHANNELS}")
            pred = inputs.get("pred")
            if op == "norm_pix_mse" and isinstance(pred, torch.Tensor) and pred.shape[-1] > MAX_CUBE:
                reasons.append(f"cubes of {pred.shape[-1]} values exceed the {MAX_CUBE} held in shared memory")
        return reasons


_REASON = _register()
# Read once, here, outside any traced region (see `_runs_on`).
BUILT_ARCHS_TEXT = _ext.build_info().get("archs", "")
BUILT_ARCHS = _built_archs(BUILT_ARCHS_TEXT)
if _REASON:
    mark_broken("cuda", _REASON)
else:
    register_backend(CudaBackend())
