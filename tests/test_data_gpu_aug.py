"""GPU-side augmentation, run on CPU tensors (the code is device-agnostic; a `gpu` marked case runs on CUDA)."""

import pytest
import torch

from videomae.data.gpu_aug import GpuAugment, pad_frames
from videomae.data.transforms import crop_resize, normalize


def clips(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 256, (4, 30, 40, 3), dtype=torch.uint8, generator=g)  # [T, H, W, 3]
    b = torch.randint(0, 256, (4, 24, 52, 3), dtype=torch.uint8, generator=g)
    return a, b


def test_pad_frames():
    a, b = clips()
    batch = pad_frames([a, b])
    assert batch.shape == (2, 4, 30, 52, 3) and batch.dtype == torch.uint8
    assert torch.equal(batch[0, :, :30, :40], a) and (batch[0, :, :, 40:] == 0).all()
    assert torch.equal(batch[1, :, :24, :52], b) and (batch[1, :, 24:] == 0).all()
    assert torch.equal(pad_frames([a, a]), torch.stack([a, a]))


def reference(clip, box, size):
    """What a CPU worker makes: [T, H, W, 3] -> float [3, T, S, S]."""
    return normalize(crop_resize(clip.permute(0, 3, 1, 2), box, size))


def test_matches_per_sample_cpu_path_on_padded_batch():
    a, b = clips()
    boxes = torch.tensor([[2, 3, 26, 30], [0, 10, 24, 24]])
    out = GpuAugment(16)(pad_frames([a, b]), boxes)
    assert out.shape == (2, 3, 4, 16, 16) and out.dtype == torch.float32
    assert torch.equal(out[0], reference(a, (2, 3, 26, 30), 16))
    assert torch.equal(out[1], reference(b, (0, 10, 24, 24), 16))


def test_uint8_output_and_flips():
    a, b = clips(1)
    frames, boxes = pad_frames([a, b]), torch.tensor([[0, 0, 30, 30], [0, 0, 24, 24]])
    u8 = GpuAugment(16, normalize=False)(frames, boxes, device="cpu")
    assert u8.shape == (2, 3, 4, 16, 16) and u8.dtype == torch.uint8
    want = crop_resize(a.permute(0, 3, 1, 2), (0, 0, 30, 30), 16).transpose(0, 1)  # [3, T, S, S]
    assert torch.equal(u8[0], want)
    flipped = GpuAugment(16, normalize=False)(frames, boxes, flips=torch.tensor([True, False]))
    assert torch.equal(flipped[0], u8[0].flip(-1)) and torch.equal(flipped[1], u8[1])


def test_rejects_wrong_inputs():
    a, _ = clips()
    with pytest.raises(ValueError, match="uint8"):
        GpuAugment(16)(a.float().unsqueeze(0), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="boxes"):
        GpuAugment(16)(a.unsqueeze(0), torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_within_one_level():
    a, b = clips(2)
    frames, boxes = pad_frames([a, b]), torch.tensor([[1, 1, 28, 36], [0, 4, 24, 40]])
    cpu = GpuAugment(16, normalize=False)(frames, boxes)
    cuda = GpuAugment(16, normalize=False)(frames, boxes, device="cuda").cpu()
    assert (cpu.int() - cuda.int()).abs().max() <= 1
