"""GPU-side augmentation (videomae/data/gpu_aug.py, videomae/data/feed.py), run on CPU tensors (the code is
device-agnostic; `gpu` marked cases run on CUDA)."""

import pytest
import torch

from videomae.data.gpu_aug import pad_frames
from videomae.data.transforms import crop_resize


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


def test_crop_resize_batch_flips_and_rejects_wrong_inputs():
    from videomae.data.feed import crop_resize_batch

    a, b = clips(1)
    frames, boxes = pad_frames([a, b]), torch.tensor([[0, 0, 30, 30], [0, 0, 24, 24]])
    u8 = crop_resize_batch(frames, boxes, 16)
    flipped = crop_resize_batch(frames, boxes, 16, flips=torch.tensor([True, False]))
    assert torch.equal(flipped[0], u8[0].flip(-1)) and torch.equal(flipped[1], u8[1])
    with pytest.raises(ValueError, match="uint8"):
        crop_resize_batch(frames.float(), boxes, 16)
    with pytest.raises(ValueError, match="boxes"):
        crop_resize_batch(frames, boxes[:1], 16)


# ---------------------------------------------------------------- the batched device feed (videomae/data/feed.py)


def random_batch(seed=3):
    """Two clips of different frame sizes, padded; boxes that shrink, keep and enlarge (antialias matters)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 256, (4, 40, 56, 3), dtype=torch.uint8, generator=g)
    b = torch.randint(0, 256, (4, 30, 44, 3), dtype=torch.uint8, generator=g)
    boxes = torch.tensor([[3, 5, 33, 41], [2, 1, 12, 10]])  # 33x41 -> 16 (down), 12x10 -> 16 (up)
    return pad_frames([a, b]), boxes, (a, b)


def test_batched_crop_resize_matches_the_cpu_workers_within_one_level():
    """Tolerance: one uint8 level. The CPU workers resize uint8 with torch's fixed-point kernel (rounding between
    its two passes); the batched path resizes in float and rounds once."""
    from videomae.data.feed import crop_resize_batch

    frames, boxes, clips = random_batch()
    out = crop_resize_batch(frames, boxes, 16)
    assert out.shape == (2, 3, 4, 16, 16) and out.dtype == torch.uint8
    for i, clip in enumerate(clips):
        want = crop_resize(clip.permute(0, 3, 1, 2), tuple(boxes[i].tolist()), 16).transpose(0, 1)  # [3, T, S, S]
        assert (out[i].int() - want.int()).abs().max() <= 1


def test_batched_resize_is_torchs_antialiased_bilinear_in_float():
    """Before rounding, the weight matrices reproduce F.interpolate(antialias=True) in fp64 (an independent
    implementation of the same filter) to rounding error, for shrinking and enlarging boxes and a flip."""
    import torch.nn.functional as F

    from videomae.data.feed import resize_weights

    frames, boxes, clips = random_batch(4)
    for i, clip in enumerate(clips):
        y0, x0, h, w = boxes[i].tolist()
        crop = clip.permute(0, 3, 1, 2)[:, :, y0:y0 + h, x0:x0 + w].double()
        want = F.interpolate(crop, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
        wy = resize_weights(boxes[i:i + 1, 0], boxes[i:i + 1, 2], frames.shape[2], 16, torch.float64)[0]
        wx = resize_weights(boxes[i:i + 1, 1], boxes[i:i + 1, 3], frames.shape[3], 16, torch.float64)[0]
        got = wy @ frames[i].permute(0, 3, 1, 2).double() @ wx.T
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)  # fp32 weights: 255 * 2^-24 * a few terms
        flipped = wy @ frames[i].permute(0, 3, 1, 2).double() @ wx.flip(0).T
        torch.testing.assert_close(flipped, want.flip(-1), rtol=0, atol=1e-4)


def test_device_feed_moves_and_resizes_on_cpu():
    from videomae.data.feed import DeviceFeed
    from videomae.masking import token_ids, tube_mask

    frames, boxes, _ = random_batch()
    ids = token_ids(tube_mask(2, (2, 1, 1), 0.0))
    clips, out_ids = DeviceFeed("cpu", 16)((frames, boxes, ids))
    assert clips.shape == (2, 3, 4, 16, 16) and clips.dtype == torch.uint8
    assert torch.equal(out_ids.visible, ids.visible)
    plain = torch.randint(0, 256, (2, 3, 4, 16, 16), dtype=torch.uint8)
    same, _ = DeviceFeed("cpu", 16)((plain, ids))
    assert torch.equal(same, plain)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_feed_on_cuda_matches_cpu_within_one_level():
    from videomae.data.feed import DeviceFeed
    from videomae.masking import token_ids, tube_mask

    frames, boxes, _ = random_batch()
    ids = token_ids(tube_mask(2, (2, 1, 1), 0.0))
    cpu, _ = DeviceFeed("cpu", 16)((frames, boxes, ids))
    cuda, cuda_ids = DeviceFeed("cuda", 16)((frames.pin_memory(), boxes.pin_memory(), ids))
    assert cuda.is_cuda and cuda_ids.visible.is_cuda
    assert (cpu.int() - cuda.cpu().int()).abs().max() <= 1
