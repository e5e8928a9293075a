"""Bad files are skipped, named, counted and replaced; all-bad data stops with a clear error."""

import warnings

import numpy as np
import pytest
import torch

from videomae.data import SkippedFileWarning, build_finetune_dataset, build_loader, build_pretrain_dataset
from videomae.data.synth import write_mp4, write_synthetic_dataset

BAD_KINDS = {
    "missing.mp4": "missing file",
    "empty.mp4": "empty file (0 bytes)",
    "text.mp4": "not a readable video",
    "truncated.mp4": "truncated or corrupt video",
    "short.mp4": "too short (2 frames < min_frames=4)",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    paths = write_synthetic_dataset(root, num_train=4, num_val=0, num_frames=12, size=(32, 64), seed=0)
    good = (root / "videos" / "train_00000.mp4").read_bytes()
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("definitely not a video\n" * 100)
    (root / "truncated.mp4").write_bytes(good[: len(good) // 2])
    write_mp4(root / "short.mp4", np.zeros((2, 32, 64, 3), np.uint8))
    bad_lines = "".join(f"{name} 1\n" for name in BAD_KINDS)
    (root / "mixed.txt").write_text(paths["train"].read_text() + bad_lines)
    (root / "allbad.txt").write_text(bad_lines)
    return root


def pretrain(path, **kw):
    return build_pretrain_dataset(path, num_frames=4, sampling_rate=2, input_size=32, mask_ratio=0.75, seed=0, **kw)


def check_summary(summary, root):
    assert summary.count >= len(BAD_KINDS)  # a bad file met again (as a replacement draw) counts again
    assert set(summary.files) == {str(root / name) for name in BAD_KINDS}
    for name, reason in BAD_KINDS.items():
        assert summary.files[str(root / name)].startswith(reason), summary.files


def test_each_bad_file_is_skipped_named_and_replaced(data):
    ds = pretrain(data / "mixed.txt")
    loader = build_loader(ds, batch_size=3, shuffle=False, drop_last=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(loader)
    # every one of the 9 samples delivered: bad ones replaced by good videos
    assert sum(b[0].shape[0] for b in batches) == 9
    assert all(torch.isfinite(b[0]).all() for b in batches)
    check_summary(loader.skip_summary(), data)
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedFileWarning)]
    for name, reason in BAD_KINDS.items():
        assert any(str(data / name) in m and reason in m for m in messages), (name, messages)


def test_summary_per_epoch_and_across_workers(data):
    ds = pretrain(data / "mixed.txt", num_sample=2)
    loader = build_loader(ds, batch_size=2, num_workers=2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(2):
            loader.set_epoch(epoch)
            for videos, ids in loader:
                assert videos.shape[0] == ids.visible.shape[0]
    # 9 samples, 4 batches of 2 (drop_last): at least 4 of the 5 bad indices are drawn every epoch
    for epoch in range(2):
        summary = loader.skip_summary(epoch)
        assert set(summary.files) <= {str(data / n) for n in BAD_KINDS}
        assert summary.count >= 4 and len(summary.files) >= 4
    assert "skip(s)" in str(loader.skip_summary(0))


def test_all_bad_is_a_clear_error(data):
    ds = pretrain(data / "allbad.txt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="all 5 videos of the dataset are unreadable"):
            ds[0]


def test_consecutive_failure_cap(data):
    ds = build_finetune_dataset(data / "allbad.txt", mode="val", num_frames=4, input_size=32)
    ds.max_consecutive_failures = 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="3 unreadable videos in a row"):
            ds[0]


def test_eval_replacement_keeps_its_own_index_and_label(data):
    ds = build_finetune_dataset(data / "mixed.txt", mode="test", num_frames=4, sampling_rate=2, input_size=32,
                                test_num_segment=1, test_num_crop=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = [ds[i] for i in range(len(ds))]
    good = {i: r.label for i, r in enumerate(ds.records) if "videos/" in r.path}
    assert len(good) == 4
    for _, label, video in items:
        assert video in good and label == good[video]  # never a bad video's index
    assert [video for _, _, video in items[:8]] == [0, 0, 1, 1, 2, 2, 3, 3]  # good videos keep their views
