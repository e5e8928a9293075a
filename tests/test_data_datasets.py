"""Datasets and loaders on tiny synthetic videos: shapes, determinism, repeated sampling, views, workers."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from videomae.constants import IMAGENET_MEAN, IMAGENET_STD
from videomae.data import (
    DeviceFeed,
    MaskGenerator,
    PretrainDataset,
    build_finetune_dataset,
    build_loader,
    build_pretrain_dataset,
    read_list,
    write_synthetic_dataset,
)
from videomae.data.transforms import normalize

T, S = 8, 32  # clip frames, crop size: token grid (4, 2, 2) = 16 tokens


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    # 64 wide: decord 0.6 cannot decode frames narrower than 64 pixels (PyAV would take over).
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds"), num_train=6, num_val=2, num_frames=20,
                                   size=(48, 64), seed=1)


def pretrain(synth, **kw):
    args = dict(num_frames=T, sampling_rate=2, input_size=S, mask_type="tube", mask_ratio=0.75, seed=5)
    return build_pretrain_dataset(synth["train"], **{**args, **kw})


def value_bounds():
    lo = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    hi = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    return lo - 1e-5, hi + 1e-5


def test_pretrain_item(synth):
    clip, mask = pretrain(synth)[0]
    assert clip.shape == (3, T, S, S) and clip.dtype == torch.float32
    lo, hi = value_bounds()
    assert lo <= clip.min() and clip.max() <= hi
    assert mask.shape == (16,) and mask.dtype == torch.bool
    assert int(mask.sum()) == 4 * 3  # tube: int(0.75 * 4) of each frame's 2x2 patches, 4 frames
    assert torch.equal(mask.view(4, 4), mask.view(4, 4)[:1].expand(4, 4))  # same pattern at every t


def test_pretrain_determinism(synth):
    ds = pretrain(synth)
    a, b = ds[2], ds[2]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    ds.set_epoch(1)
    assert not torch.equal(ds[2][0], a[0])  # new epoch, new clip
    assert not torch.equal(pretrain(synth, seed=6)[2][0], a[0])
    copy = pickle.loads(pickle.dumps(ds))  # what a spawn worker receives
    assert torch.equal(copy[3][0], ds[3][0])


def test_repeated_sampling_item_and_flattened_batch(synth):
    ds = pretrain(synth, num_sample=3)
    clips, masks = ds[0]
    assert clips.shape == (3, 3, T, S, S) and masks.shape == (3, 16)
    assert not torch.equal(clips[0], clips[1]) and not torch.equal(clips[1], clips[2])
    loader = build_loader(ds, batch_size=2, seed=0)
    first_two = list(loader.sampler)[:2]  # epoch 0's order
    videos, ids = next(iter(loader))
    assert videos.shape == (6, 3, T, S, S)
    # The collate's TokenIds are the items' masks, video after video, clip after clip: 4 of 16 cubes visible.
    assert type(ids).__name__ == "TokenIds" and ids.visible.shape == (6, 4) and ids.decoded.shape == (6, 12)
    assert torch.equal(ids.mask(16), torch.cat([ds[i][1] for i in first_two]))


def test_gpu_aug_path_matches_cpu_path(synth):
    cpu = pretrain(synth, num_sample=2)
    gpu = pretrain(synth, num_sample=2, gpu_aug=True)
    frames, boxes, masks = gpu[1]
    # the worker ships each clip's crop (of the 48x64 frames), zero-padded to the larger of the two
    assert frames.dtype == torch.uint8 and frames.shape[:2] == (2, T) and boxes.shape == (2, 4)
    assert frames.shape[2] <= 48 and frames.shape[3] <= 64 and (boxes[:, :2] == 0).all()
    assert frames.shape[2:4] == tuple(boxes[:, 2:].max(0).values.tolist())
    clips, cpu_masks = cpu[1]
    # The device feed resizes in float and rounds once (the workers' uint8 kernel rounds between passes): one
    # uint8 level, i.e. 1 / (255 std) after normalization.
    fed, fed_masks = DeviceFeed("cpu", S)((frames, boxes, masks))
    assert fed.dtype == torch.uint8 and fed.shape == clips.shape
    torch.testing.assert_close(normalize(fed.transpose(1, 2)), clips, rtol=0,
                               atol=1 / (255 * min(IMAGENET_STD)) + 1e-5)
    assert torch.equal(fed_masks, cpu_masks) and torch.equal(masks, cpu_masks)


def test_loader_independent_of_workers(synth):
    ds = pretrain(synth)
    serial = [b[0] for b in build_loader(ds, batch_size=2, num_workers=0, seed=1)]
    parallel = [b[0] for b in build_loader(ds, batch_size=2, num_workers=2, seed=1)]
    assert len(serial) == 3 and all(torch.equal(a, b) for a, b in zip(serial, parallel))


def test_loader_epochs_reshuffle_reproducibly(synth):
    ds = build_finetune_dataset(synth["train"], num_frames=T, sampling_rate=2, input_size=S, rand_augment=None)
    loader = build_loader(ds, batch_size=6, seed=3)
    first = next(iter(loader))[2].tolist()
    second = next(iter(loader))[2].tolist()  # epoch advanced on its own
    loader.set_epoch(0)
    assert next(iter(loader))[2].tolist() == first
    assert sorted(first) == sorted(second) == list(range(6)) and first != second


def test_distributed_sampler_partitions(synth):
    ds = pretrain(synth)
    seen = []
    for rank in range(2):
        loader = build_loader(ds, batch_size=1, distributed=True, num_replicas=2, rank=rank, seed=0)
        seen.append([int(i) for i in loader.sampler])
    assert sorted(seen[0] + seen[1]) == list(range(6)) and len(seen[0]) == 3


def test_decoder_masks(synth):
    ds = PretrainDataset(read_list(synth["train"]), num_frames=T, sampling_rate=2, input_size=S,
                         mask_fn=MaskGenerator("tube", 0.75, (4, 2, 2), decoder_mask_ratio=0.5), num_sample=2)
    videos, ids = next(iter(build_loader(ds, batch_size=2)))
    assert videos.shape[0] == ids.visible.shape[0] == ids.decoded.shape[0] == 4
    assert ids.decoded.shape[1] == 8  # running cell at 0.5: half of the 16 tokens decoded
    assert ids.scored.shape == (4, 8) and ids.visible.shape == (4, 4)  # tube 0.75: 4 of 16 visible


def test_segment_sampling_pretrain(synth):
    clip, _ = pretrain(synth, sampling="segment")[0]
    assert clip.shape == (3, T, S, S)


# ---------------------------------------------------------------- fine-tuning / evaluation


def finetune(synth, mode, **kw):
    args = dict(mode=mode, num_frames=T, sampling_rate=2, input_size=S, seed=2)
    return build_finetune_dataset(synth["train" if mode == "train" else "val"], **{**args, **kw})


def test_finetune_train_item(synth):
    ds = finetune(synth, "train")
    clip, label, index = ds[4]
    assert clip.shape == (3, T, S, S) and clip.dtype == torch.float32
    assert label == 4 and index == 4  # labels are round robin in the synthetic lists
    assert torch.equal(ds[4][0], clip)
    ds.set_epoch(1)
    assert not torch.equal(ds[4][0], clip)


def test_finetune_flip_switch(synth):
    plain = finetune(synth, "train", rand_augment=None, reprob=0.0, flip=False)
    flip = finetune(synth, "train", rand_augment=None, reprob=0.0, flip=True)
    mirrored = 0
    for i in range(6):
        a, b = plain[i][0], flip[i][0]
        assert torch.equal(a, b) or torch.equal(a.flip(-1), b)  # flip is the last random draw
        mirrored += not torch.equal(a, b)
    assert 0 < mirrored < 6


def test_val_and_test_views(synth):
    val = finetune(synth, "val")
    assert len(val) == 2 and torch.equal(val[1][0], val[1][0])
    test = finetune(synth, "test", test_num_segment=2, test_num_crop=3)
    assert len(test) == 2 * 2 * 3
    assert [test[i][2] for i in range(12)] == [0] * 6 + [1] * 6
    clips = [test[i][0] for i in range(6)]
    # 48x64 -> short side 32: 32x43, crops along width at x0 = 0, 5, 11 of the same frames
    assert not torch.equal(clips[0], clips[2]) and not torch.equal(clips[0], clips[3])


def test_finetune_needs_labels(tmp_path, synth):
    with pytest.raises(ValueError, match="fine-tuning needs labels"):
        build_finetune_dataset(synth["root"] / "videos")


def test_segment_sampling_finetune(synth):
    ds = finetune(synth, "test", sampling="segment", test_num_segment=2, test_num_crop=1)
    assert len(ds) == 4 and ds[1][0].shape == (3, T, S, S)
    assert not np.array_equal(ds[0][0].numpy(), ds[1][0].numpy())


def test_rawframe_folders_through_v2_list(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "frames" / name).mkdir(parents=True)
        for i in range(1, 13):  # img_00001.jpg .. img_00012.jpg
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "frames" / name / f"img_{i:05d}.jpg")
    (tmp_path / "v2.txt").write_text("frames/a 1 12\nframes/b 1 12\n")
    ds = build_pretrain_dataset(tmp_path / "v2.txt", num_frames=4, sampling_rate=3, input_size=S, seed=0)
    assert ds.records[0].is_frame_folder
    clip, mask = ds[1]
    assert clip.shape == (3, 4, S, S) and mask.shape == (2 * 2 * 2,)


class _HostReads(TorchDispatchMode):
    """Records the ops that read a tensor on the host or make a data-dependent shape (a wait for a GPU)."""

    SYNCING = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "masked_select"}

    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in self.SYNCING:
            self.found.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_the_documented_library_loop_does_not_wait_on_the_host(synth):
    """`for videos, ids in loader: loss = model.forward_loss(videos, model(videos, ids), ids)` (the videomae.data
    docs, the README's example, and what the CLI runs): the loader's TokenIds keep the step free of host reads;
    the same batch with Bool masks would make the model read them (the check is shown to catch that)."""
    import videomae

    torch.manual_seed(0)
    model = videomae.create_model("pretrain_videomae_tiny_patch16_224", num_frames=T, img_size=S)
    videos, ids = next(iter(build_loader(pretrain(synth), batch_size=2, seed=0)))
    with _HostReads() as reads:
        model.forward_loss(videos, model(videos, ids), ids).backward()
    assert not reads.found, reads.found
    with _HostReads() as reads:
        mask = ids.mask(16)
        model(videos, mask)
    assert reads.found  # a Bool mask is converted (and validated) inside: host reads
