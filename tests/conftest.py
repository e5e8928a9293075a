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


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """8 training and 4 validation H.264 clips (16 frames, 32x32) for the CLI run tests; a module that needs
    another size defines its own `synth`."""
    from videomae.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, num_train=8, num_val=4, num_frames=16, size=32, seed=0)
    return root
