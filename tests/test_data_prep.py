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
    assert (out / "train.txt").read_text().splitlines() == [f"videos/clips/v{i}.mp4 {i}" for i in range(3)]
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
    report = json.loads((tmp_path / "out" / "prep_report.json").read_text())["splits"]["list"]
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
    assert len(finished) == 2 and not (out / "train.txt").exists()

    redone = []
    monkeypatch.setattr(prep, "encode_one", lambda job, o, s: redone.append(job.name) or real(job, o, s))
    assert prep.run_prep(args_for(sources / "train.txt", out)) == 0
    assert redone == ["clips/v2.mp4"]
    assert {n: (out / "videos" / n).stat().st_mtime_ns for n in calls} == finished
    assert len((out / "train.txt").read_text().splitlines()) == 3
    report = json.loads((out / "prep_report.json").read_text())["splits"]["train"]
    assert report["skipped_as_done"] == 2
    # other settings: nothing counts as done
    redone.clear()
    assert prep.run_prep(args_for(sources / "train.txt", out, gop=8)) == 0
    assert len(redone) == 3


def test_datasets_read_the_manifest(sources, tmp_path, monkeypatch):
    assert prep.run_prep(args_for(sources / "train.txt", tmp_path / "out", workers=2)) == 0
    records = load_records(tmp_path / "out" / "train.txt")
    assert [r.num_frames for r in records] == [T] * 3 and [r.label for r in records] == [0, 1, 2]
    (clip,) = read_frames(records[0].path, lambda n: [np.arange(0, n, 8)], num_frames=records[0].num_frames)
    assert clip.shape == (T // 8, 64, 86, 3)


def test_bad_arguments_are_one_line_each(tmp_path, capsys):
    assert prep.run_prep(args_for(tmp_path / "nope.txt", tmp_path / "out", gop=0)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"videomae data prep: error: input {str(tmp_path / 'nope.txt')!r}: no such list file or folder; "
                   "--gop must be >= 1, got 0"]
    assert not (tmp_path / "out").exists()


def test_pretrain_dataset_trusts_the_manifest(sources, tmp_path):
    from videomae.data import build_pretrain_dataset

    out = tmp_path / "out"
    assert prep.run_prep(args_for(sources / "train.txt", out)) == 0
    ds = build_pretrain_dataset(out / "train.txt", num_frames=4, sampling_rate=2, input_size=32, mask_ratio=0.75,
                                num_sample=2, gpu_aug=True, seed=0)
    frames, boxes, masks = ds[0]  # crops of the 64x86 frames, zero-padded to the larger one
    assert frames.shape[:2] == (2, 4) and frames.shape[2] <= 64 and frames.shape[3] <= 86 and masks.shape[0] == 2
    assert (boxes[:, :2] == 0).all() and (boxes[:, 2:] <= torch.tensor([64, 86])).all()
    # A manifest that says 2 frames rejects the video without decoding it (the file itself has 40).
    lines = (out / "manifest.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["frames"] = 2
    (out / "manifest.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    ds = build_pretrain_dataset(out / "train.txt", num_frames=4, sampling_rate=2, input_size=32, mask_ratio=0.75,
                                seed=0)
    with pytest.warns(UserWarning, match=r"too short \(2 frames < min_frames=4\)"):
        ds[0]


# ---------------------------------------------------------------- splits, names, own output, storage errors


def small_sources(root, names_phases):
    """Short 32x48 clips, each with its own content (phase), written under `root`."""
    for name, phase in names_phases.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_mp4(root / name, smooth(t=8, h=32, w=48, phase=phase), fps=8, crf=12)


def cli_prep(*argv):
    from videomae import cli

    return cli.main(["data", "prep", *map(str, argv), "--workers", "1", "--no_progress", "--short_side", "32"])


def test_splits_fill_one_folder_in_the_layout_finetune_reads_without_overwriting(tmp_path, capsys):
    src = tmp_path / "src"
    small_sources(src, {"v/a.mp4": 0.0, "v/b.mp4": 9.0, "v/c.mp4": 21.0})
    (src / "train.csv").write_text("v/a.mp4 0\nv/b.mp4 1\n")
    (src / "k400_val.csv").write_text("v/c.mp4 1\n")
    (src / "test.csv").write_text("v/a.mp4 0\nv/c.mp4 1\n")
    out = tmp_path / "ds"
    assert cli_prep(src / "train.csv", src / "k400_val.csv", "--output_dir", out) == 0
    train_before = (out / "train.txt").read_bytes()
    assert cli_prep(src / "test.csv", "--output_dir", out) == 0  # a later call adds a split
    assert (out / "train.txt").read_bytes() == train_before
    assert (out / "train.txt").read_text().splitlines() == ["videos/v/a.mp4 0", "videos/v/b.mp4 1"]
    assert (out / "val.txt").read_text().splitlines() == ["videos/v/c.mp4 1"]
    assert (out / "test.txt").read_text().splitlines() == ["videos/v/a.mp4 0", "videos/v/c.mp4 1"]
    manifest = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(m["path"] for m in manifest) == ["videos/v/a.mp4", "videos/v/b.mp4", "videos/v/c.mp4"]
    for split in ("train", "val", "test"):  # every list reads with the manifest's frame counts
        assert [r.num_frames for r in load_records(out / f"{split}.txt")] == [8] * len(
            (out / f"{split}.txt").read_text().splitlines())
    # another input for an existing split is refused in one line, and the list stays as it was
    (src / "train2.txt").write_text("v/c.mp4 0\n")
    capsys.readouterr()
    assert cli_prep(src / "train2.txt", "--output_dir", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.txt was written from" in err[0] and "train2.txt" in err[0]
    assert (out / "train.txt").read_bytes() == train_before
    # finetune --data_path DIR takes the folder as it is (its checks read the train list and the manifest)
    from videomae import cli

    args = cli.parse(["finetune", "--data_path", str(out), "--model", "vit_tiny_patch16_224", "--input_size", "32",
                      "--num_frames", "4", "--batch_size", "1", "--output_dir", str(tmp_path / "ft")])
    cli.check(args)


def test_sources_sharing_a_name_each_get_their_own_copy_recorded_in_the_manifest(tmp_path, capsys):
    src = tmp_path / "src"
    small_sources(src, {"x.mp4": 0.0, "x.avi": 30.0, "x.mkv": 60.0})
    (src / "train.txt").write_text("x.mp4 0\nx.avi 1\nx.mkv 2\nx.avi 1\n")  # the last line repeats a source
    out = tmp_path / "out"
    assert cli_prep(src / "train.txt", "--output_dir", out) == 0
    assert "prepared 4 of 4 videos (3 files, 0 failed)" in capsys.readouterr().out  # 4 lines, 3 distinct sources
    lines = (out / "train.txt").read_text().splitlines()
    assert lines == ["videos/x.mp4 0", "videos/x.avi.mp4 1", "videos/x.mkv.mp4 2", "videos/x.avi.mp4 1"]
    manifest = {m["path"]: m for m in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert manifest["videos/x.avi.mp4"]["renamed_from"] == "videos/x.mp4" and "renamed_from" not in manifest[
        "videos/x.mp4"]
    assert {m["source"] for m in manifest.values()} == {str(src / n) for n in ("x.mp4", "x.avi", "x.mkv")}
    # each copy holds its own source's pictures: nearer to it than to either other source
    firsts = {n: decode_all(src / n)[0][0].to_ndarray(format="rgb24").astype(np.float32) for n in
              ("x.mp4", "x.avi", "x.mkv")}
    for path, m in manifest.items():
        got = decode_all(out / path)[0][0].reformat(width=48, height=32).to_ndarray(format="rgb24")
        errs = {n: np.abs(got - f).mean() for n, f in firsts.items()}
        assert min(errs, key=errs.get) == m["source"].rsplit("/", 1)[1], (path, errs)
    # a rerun keeps every name and redoes nothing
    assert cli_prep(src / "train.txt", "--output_dir", out) == 0
    assert (out / "train.txt").read_text().splitlines() == lines


def test_output_inside_the_input_folder_is_never_read_as_input(tmp_path, capsys):
    src = tmp_path / "videos"
    small_sources(src, {"a.mp4": 0.0, "b.mp4": 5.0})
    out = src / "prepped"
    for _ in range(2):  # the second run finds its own copies in the folder it reads
        assert cli_prep(src, "--output_dir", out, "--split", "train") == 0
    assert (out / "train.txt").read_text().splitlines() == ["videos/a.mp4 0 -1", "videos/b.mp4 0 -1"]
    assert "2 inside the output folder not read" in capsys.readouterr().out
    report = json.loads((out / "prep_report.json").read_text())["splits"]["train"]
    assert report["inside_output_not_read"] == 2 and report["videos"] == 2
    assert not (out / "videos" / "prepped").exists()


def test_full_disk_stops_in_one_line_and_keeps_what_was_done(sources, tmp_path, monkeypatch, capsys):
    import errno

    out = tmp_path / "out"
    real = prep.encode_one

    def full_after_one(job, out_dir, settings):
        if job.name != "clips/v0.mp4":
            raise OSError(errno.ENOSPC, "No space left on device", str(out / "videos" / ".v1.mp4.tmp.mp4"))
        return real(job, out_dir, settings)

    monkeypatch.setattr(prep, "encode_one", full_after_one)
    assert prep.run_prep(args_for(sources / "train.txt", out)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and str(out / "videos") in err[0], err
    assert (out / ".done" / "clips" / "v0.mp4.json").is_file() and not (out / "train.txt").exists()
    monkeypatch.setattr(prep, "encode_one", lambda job, o, s: redone.append(job.name) or real(job, o, s))
    redone = []
    assert prep.run_prep(args_for(sources / "train.txt", out)) == 0
    assert redone == ["clips/v1.mp4", "clips/v2.mp4"]  # v0 was kept


def test_read_only_folder_for_the_lists_is_one_line_and_the_old_list_stays(sources, tmp_path, monkeypatch, capsys):
    import builtins
    import errno

    from videomae import integrity

    out = tmp_path / "out"
    assert prep.run_prep(args_for(sources / "train.txt", out)) == 0
    before = (out / "train.txt").read_bytes()

    def read_only(path, mode="r", *a, **kw):
        if "w" in mode:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return builtins.open(path, mode, *a, **kw)

    monkeypatch.setattr(integrity, "open", read_only, raising=False)
    capsys.readouterr()
    assert prep.run_prep(args_for(sources / "train.txt", out, crf=30)) == 1  # new settings: all re-encoded
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Read-only file system" in err[0] and "train.txt" in err[0], err
    assert (out / "train.txt").read_bytes() == before and not list(out.glob(".*tmp*"))
