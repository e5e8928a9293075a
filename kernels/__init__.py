"""Triton kernels of the fused VideoMAE ops, installed as `videomae.kernels` (never import `kernels`).

Each file reads kernel -> launcher; the launchers take index tables (int32 token ids) built by
`videomae.ops`, and autograd lives in `videomae.ops.library`. `INTERPRET` records whether the kernels
were built for the Triton interpreter (`TRITON_INTERPRET=1`), where they run on CPU tensors.
"""

import triton

INTERPRET = bool(triton.knobs.runtime.interpret)
