"""Video data for VideoMAE: list files, decoding, sampling, augmentation, loaders, synthetic data.

Pretraining loader, the one `videomae pretrain` runs (`--data_path` may be a list file, a directory of videos, or
None for the built-in synthetic dataset, written once under $VIDEOMAE_CACHE or ~/.cache/videomae/synth):

    from videomae.data import build_pretrain_dataset, build_loader
    ds = build_pretrain_dataset(args.data_path, num_frames=16, sampling_rate=4, input_size=224,
                                mask_type="tube", mask_ratio=0.9, num_sample=4, seed=args.seed,
                                root=None,            # official --data_root prefix for relative list paths
                                gpu_aug=False)        # True: workers ship uint8 frames, see DeviceFeed
    loader = build_loader(ds, batch_size=args.batch_size, num_workers=args.num_workers,
                          seed=args.seed, distributed=is_distributed)   # this rank's shard when True
    for epoch in range(start_epoch, epochs):
        loader.set_epoch(epoch)        # reshuffles, reseeds augmentation: same epoch, same clips
        for videos, ids in loader:     # videos float [B*num_sample, 3, T, H, W] ImageNet-normalized;
            videos, ids = videos.to(device, non_blocking=True), ids.to(device, non_blocking=True)
            loss = model.forward_loss(videos, model(videos, ids), ids)  # no host sync (ids: static shapes)
            ...                        # ids: masking.TokenIds, validated in the collate (tube 0.9: visible
                                       # [B', 160], decoded [B', 1408] of 1568)
        summary = loader.skip_summary()          # SkipSummary(count, files={path: reason}) of that epoch
        if summary.count: print(summary)         # each skip was also warned (SkippedFileWarning)

`loader.set_epoch(epoch, start=k)` resumes an epoch after its first k batches (the order is a pure function of
seed and epoch). `videomae.train.trainer.Trainer` runs this loop for the CLI: `Recipe(model, pretrain_loss,
schedule, data=loader, prepare=...)` then `fit()`.

`batch_size` counts videos; with `num_sample=k` every video gives k clips (independent temporal
offsets and crops, one decode) and a batch holds `batch_size * k` clips. With `gpu_aug=True` a batch
is `(frames uint8 [B', T, h, w, 3], the crops zero-padded to the largest, boxes int64 [B', 4], ids)` and
`DeviceFeed("cuda", input_size)(batch)` (`videomae.data.feed`) returns uint8 clips `[B', 3, T, S, S]` and the ids
on the device (the fused ops normalize uint8 as they read it). `decoder_mask_ratio=0.5` adds the V2 running-cell
decoder mask (`ids.scored`: the decoded cubes the loss counts).

Fine-tuning / evaluation loaders (labeled list files, e.g. `synthetic_lists()['train' | 'val']`):

    train = build_finetune_dataset(list_file, mode="train", num_frames=16, sampling_rate=4,
                                   sampling="dense",      # "segment" for SSv2-style TSN sampling
                                   flip=True,             # False for SSv2-like (direction) labels
                                   rand_augment="rand-m7-n4-mstd0.5-inc1", reprob=0.25, seed=args.seed)
    test = build_finetune_dataset(list_file, mode="test", test_num_segment=5, test_num_crop=3)
    train_loader = build_loader(train, batch_size, num_workers=..., seed=..., distributed=...)
    test_loader = build_loader(test, batch_size, shuffle=False)   # keeps every view (no drop_last); a rank's
                                                                  # shard is padded, its first sampler.real count
    for clips, labels, video_index in train_loader:
        clips, soft_targets = mixup_cutmix(clips, labels, num_classes, rng)   # batch level, even B
    # test: average softmax over the test_num_segment*test_num_crop items sharing a video_index.

Bad files (missing, empty, truncated, not a video, fewer than `min_frames` frames) are skipped
with a warning naming the file and reason, and replaced (in evaluation the replacement carries its
own video index and label); if every file is bad, or `max_consecutive_failures` in a row are,
loading raises RuntimeError saying so. Without `VideoLoader`, read skips with
`mark = ds.skip_log.mark()` before an epoch and `ds.skip_log.since(mark)` after it.

Decoding (`videomae.data.decode`): `backend="auto"` seeks with PyAV (decodes only from the keyframe before
a clip, one thread) and falls back to decord per file; "pyav", "decord", "torchcodec" force one, and
`decoder_report()` says which run here and why not. `videomae data prep` (`videomae.data.prep`) re-encodes
a dataset for fast seeking and writes the manifest the lists read.
Datasets pickle (spawn or fork workers) and need no worker seeding: every sample draws from
`(seed, epoch, index)`, so batches do not depend on the number of workers.
"""

from videomae.data.datasets import ClipCollate, FinetuneDataset, MaskGenerator, PretrainDataset
from videomae.data.decode import VideoReadError, decoder_report, read_frames
from videomae.data.feed import DeviceFeed
from videomae.data.gpu_aug import pad_frames
from videomae.data.lists import ListSyntaxError, VideoRecord, load_records, read_list, scan_directory
from videomae.data.loader import (
    EpochSampler,
    VideoLoader,
    build_finetune_dataset,
    build_loader,
    build_pretrain_dataset,
    default_cache_dir,
    synthetic_lists,
)
from videomae.data.randaug import RandAugment
from videomae.data.real import real_clip_dir, real_clips, real_records
from videomae.data.skips import SkippedFileWarning, SkipSummary
from videomae.data.transforms import mixup_cutmix

_SYNTH = {"SYNTH_CLASSES": "CLASSES", "ensure_synthetic_dataset": "ensure_synthetic_dataset",
          "write_synthetic_dataset": "write_synthetic_dataset"}


def __getattr__(name: str):
    # The synthetic dataset writes videos with PyAV; imported on first use so that machines without PyAV
    # (the GPU boxes) can still import the loader, DeviceFeed and the NVDEC decoder.
    if name in _SYNTH:
        from videomae.data import synth

        return getattr(synth, _SYNTH[name])
    raise AttributeError(f"module 'videomae.data' has no attribute {name!r}")


__all__ = [
    "SYNTH_CLASSES", "ClipCollate", "DeviceFeed", "EpochSampler", "FinetuneDataset", "ListSyntaxError",
    "MaskGenerator",
    "PretrainDataset", "RandAugment", "SkipSummary", "SkippedFileWarning", "VideoLoader", "VideoReadError",
    "VideoRecord", "build_finetune_dataset", "build_loader", "build_pretrain_dataset", "decoder_report",
    "default_cache_dir",
    "ensure_synthetic_dataset", "load_records", "mixup_cutmix", "pad_frames", "read_frames", "read_list",
    "real_clip_dir", "real_clips", "real_records",
    "scan_directory", "synthetic_lists", "write_synthetic_dataset",
]
