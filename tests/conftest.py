"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture
def no_tf32():
    """fp32 compared like for like: no TF32 in reference convs / matmuls nor in the kernels' cuBLAS calls."""
    prev = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    yield
    torch.backends.cudnn.allow_tf32 = prev[0]
    torch.set_float32_matmul_precision(prev[1])
