"""Triton kernels of the fused ops, one file per op (`videomae.ops.triton.<op>`) plus `_common.py`.

Each file reads kernel -> launcher; the launchers take int64 token-id tables (`videomae.masking.TokenIds`),
and the op glue (validation, fake kernels, autograd) lives in `videomae.ops.<op>`. `INTERPRET` records
whether the kernels were built for the Triton interpreter (`TRITON_INTERPRET=1`), where they run on CPU tensors.
"""

import triton
from torch.library import wrap_triton

INTERPRET = bool(triton.knobs.runtime.interpret)


def launcher(kernel):
    """`kernel[grid](...)` as torch.compile can trace it (`wrap_triton`); the interpreter's kernels as they are
    (torch 2.11's wrap_triton rejects them, and those ops are opaque custom ops anyway)."""
    return kernel if INTERPRET else wrap_triton(kernel)
