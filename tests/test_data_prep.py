"""`videomae data prep`: round trip against the resized source, fps conversion, bad inputs, resuming."""

import argparse
import json

import av
import numpy as np
import pytest
import torch

from videomae.data import prep
from videomae.data.decode import read_frames
from videomae.data.lists import load_records
from videomae.data.synth import write_mp4

T, H, W, FPS = 40, 96, 128, 30


def smooth(t=T, h=H, w=W, phase=0.0):
    """Slowly varying colour waves moving 4 px per frame: compressible like real footage, and every frame
    differs from its neighbours by more than the codec noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(t):
        s = x + 4.0 * i + phase
        rgb = [128 + 90 * np.sin(s / 18 + c) * np.cos(y / 26 - c) for c in (0.0, 2.0, 4.0)]
        frames.append(np.stack(rgb, -1))
    return np.clip(frames, 0, 255).astype(np.uint8)


def decode_all(path):
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = [f for f in c.decode(stream)]
        return frames, float(stream.average_rate)


def args_for(src, out, **kw):
    parser = argparse.ArgumentParser()
    prep.add_prep_arguments(parser)
    argv = [str(src), str(out), "--short-side", "64", "--workers", "1", "--no-progress"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    (root / "clips").mkdir()
    for i in range(3):
        write_mp4(root / "clips" / f"v{i}.mp4", smooth(phase=17.0 * i), fps=FPS, crf=12, gop=250)
    (root / "train.txt").write_text("".join(f"clips/v{i}.mp4 {i}\n" for i in range(3)))
    return root


def test_round_trip_matches_resized_source(sources, tmp_path):
    assert prep.run_prep(args_for(sources / "train.txt", tmp_path / "out", crf=18)) == 0
    out = tmp_path / "out"
    manifest = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["path"] for m in manifest] == [f"videos/clips/v{i}.mp4" for i in range(3)]
    assert (out / "list.txt").read_text().splitlines() == [f"videos/clips/v{i}.mp4 {i}" for i in range(3)]
    src_frames, _ = decode_all(sources / "clips" / "v1.mp4")
    got, fps = decode_all(out / "videos" / "clips" / "v1.mp4")
    # 96x128 -> short side 64: 64 x round(128 * 64/96 / 2) * 2 = 64 x 86
    assert (got[0].height, got[0].width) == (64, 86)
    assert len(got) == len(src_frames) == T and fps == FPS
    m = manifest[1]
    assert (m["frames"], m["fps"], m["width"], m["height"]) == (T, FPS, 86, 64)
    assert m["duration"] == pytest.approx(T / FPS)
    # the source resized as prep resizes it (area average in YUV 4:2:0), then to RGB
    expect = np.stack([f.reformat(width=86, height=64, format="yuv420p", interpolation="AREA")
                       .to_ndarray(format="rgb24") for f in src_frames]).astype(np.float32)
    mine = np.stack([f.to_ndarray(format="rgb24") for f in got]).astype(np.float32)
    err = np.abs(mine - expect).mean(axis=(1, 2, 3))
    assert err.max() < 2.5, err  # codec noise at crf 18 on this content: about 1 level
    shifted = np.abs(mine[1:] - expect[:-1]).mean()
    assert shifted > 2 * err.mean()  # the content moves enough that an off-by-one frame would fail


def test_fps_conversion_takes_nearest_frames(sources, tmp_path):
    assert prep.run_prep(args_for(sources / "clips", tmp_path / "out", fps=15)) == 0
    got, fps = decode_all(tmp_path / "out" / "videos" / "v0.mp4")
    src_frames, _ = decode_all(sources / "clips" / "v0.mp4")
    assert fps == 15 and len(got) == T // 2
    expect = np.stack([f.reformat(width=86, height=64, format="rgb24").to_ndarray() for f in src_frames])
    mine = np.stack([f.to_ndarray(format="rgb24") for f in got]).astype(np.float32)
    for j in range(len(got)):  # output frame j at j/15 s is source frame 2j (at 2j/30 s), not a neighbour
        near = [i for i in range(2 * j - 3, 2 * j + 4) if 0 <= i < T]
        errs = [np.abs(mine[j] - expect[i]).mean() for i in near]
        assert near[int(np.argmin(errs))] == 2 * j
    # folder input: unlabeled list in the V2 format
    assert (tmp_path / "out" / "list.txt").read_text().splitlines()[0] == "videos/v0.mp4 0 -1"


def test_bad_inputs_are_named_and_skipped(sources, tmp_path, capsys):
    (tmp_path / "text.mp4").write_text("not a video\n" * 20)
    (tmp_path / "list.txt").write_text(f"{sources}/clips/v0.mp4 0\ntext.mp4 1\nmissing.mp4 2\n"
                                       f"{sources}/clips/v2.mp4 2\n")
    assert prep.run_prep(args_for(tmp_path / "list.txt", tmp_path / "out")) == 1
    report = json.loads((tmp_path / "out" / "prep_report.json").read_text())
    assert set(report["failed"]) == {str(tmp_path / "text.mp4"), str(tmp_path / "missing.mp4")}
    assert report["failed"][str(tmp_path / "missing.mp4")] == "missing file"
    assert report["prepared"] == 2
    lines = (tmp_path / "out" / "list.txt").read_text().splitlines()
    assert [ln.split()[1] for ln in lines] == ["0", "2"]  # labels follow their videos
    err = capsys.readouterr().err
    assert f"skipped {tmp_path / 'text.mp4'}" in err and f"skipped {tmp_path / 'missing.mp4'}: missing file" in err
    assert not list((tmp_path / "out").rglob("*.tmp*"))  # no half-written copies left behind


def test_interrupted_run_resumes_without_redoing(sources, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real, calls = prep.encode_one, []

    def interrupted(job, out_dir, settings):
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the third video is being encoded
        calls.append(job.name)
        return real(job, out_dir, settings)

    monkeypatch.setattr(prep, "encode_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prep.run_prep(args_for(sources / "train.txt", out))
    finished = {n: (out / "videos" / n).stat().st_mtime_ns for n in calls}
    assert len(finished) == 2 and not (out / "list.txt").exists()

    redone = []
    monkeypatch.setattr(prep, "encode_one", lambda job, o, s: redone.append(job.name) or real(job, o, s))
    assert prep.run_prep(args_for(sources / "train.txt", out)) == 0
    assert redone == ["clips/v2.mp4"]
    assert {n: (out / "videos" / n).stat().st_mtime_ns for n in calls} == finished
    assert len((out / "list.txt").read_text().splitlines()) == 3
    report = json.loads((out / "prep_report.json").read_text())
    assert report["skipped_as_done"] == 2
    # other settings: nothing counts as done
    redone.clear()
    assert prep.run_prep(args_for(sources / "train.txt", out, gop=8)) == 0
    assert len(redone) == 3


def test_datasets_read_the_manifest(sources, tmp_path, monkeypatch):
    assert prep.run_prep(args_for(sources / "train.txt", tmp_path / "out", workers=2)) == 0
    records = load_records(tmp_path / "out" / "list.txt")
    assert [r.num_frames for r in records] == [T] * 3 and [r.label for r in records] == [0, 1, 2]
    (clip,) = read_frames(records[0].path, lambda n: [np.arange(0, n, 8)], num_frames=records[0].num_frames)
    assert clip.shape == (T // 8, 64, 86, 3)


def test_bad_arguments_are_one_line_each(tmp_path, capsys):
    assert prep.run_prep(args_for(tmp_path / "nope.txt", tmp_path / "out", gop=0)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"videomae data prep: input {str(tmp_path / 'nope.txt')!r}: no such list file or folder",
                   "videomae data prep: --gop must be >= 1, got 0"]


def test_pretrain_dataset_trusts_the_manifest(sources, tmp_path):
    from videomae.data import build_pretrain_dataset

    out = tmp_path / "out"
    assert prep.run_prep(args_for(sources / "train.txt", out)) == 0
    ds = build_pretrain_dataset(out / "list.txt", num_frames=4, sampling_rate=2, input_size=32, mask_ratio=0.75,
                                num_sample=2, gpu_aug=True, seed=0)
    frames, boxes, masks = ds[0]  # crops of the 64x86 frames, zero-padded to the larger one
    assert frames.shape[:2] == (2, 4) and frames.shape[2] <= 64 and frames.shape[3] <= 86 and masks.shape[0] == 2
    assert (boxes[:, :2] == 0).all() and (boxes[:, 2:] <= torch.tensor([64, 86])).all()
    # A manifest that says 2 frames rejects the video without decoding it (the file itself has 40).
    lines = (out / "manifest.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["frames"] = 2
    (out / "manifest.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    ds = build_pretrain_dataset(out / "list.txt", num_frames=4, sampling_rate=2, input_size=32, mask_ratio=0.75,
                                seed=0)
    with pytest.warns(UserWarning, match=r"too short \(2 frames < min_frames=4\)"):
        ds[0]
