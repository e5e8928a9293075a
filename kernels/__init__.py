"""Triton kernels of the fused ops, one file per op (`kernels/<op>.py`, imported as `videomae.kernels.<op>`), plus
`_common.py` (launching, cube addressing, the per-token row sum).

This folder sits beside `videomae/` and `csrc/` (the design's layout) and installs inside the package namespace as
`videomae.kernels` (setup.py's `package_dir`); never as a top-level `kernels` module, a name an unrelated PyPI
package owns. A source checkout maps it to the same name (`videomae/__init__.py`).

Each file reads kernel -> launcher; the launchers take int64 token-id tables (`videomae.masking.TokenIds`), and the
op glue (validation, fake kernels, autograd) lives in `videomae/ops/<op>.py`. Importing this package costs nothing:
triton is imported by the kernel files only.
"""
