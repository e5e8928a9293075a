"""`videomae extract`, `predict` and `export` through the command line, against the model run directly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import videomae
from videomae import cli

GEOMETRY = dict(img_size=32, num_frames=4)
ARGS = {"model": "vit_tiny_patch16_224", "input_size": 32, "num_frames": 4, "tubelet_size": 2}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from videomae.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, num_train=2, num_val=2, num_frames=16, size=32, seed=0)
    return root


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A 3-class tiny classifier with random weights, saved as fine-tuning writes it (+ classes.txt)."""
    torch.manual_seed(0)
    model = videomae.create_model("vit_tiny_patch16_224", num_classes=3, init_scale=1.0, **GEOMETRY).eval()
    folder = tmp_path_factory.mktemp("ft")
    torch.save({"module": model.state_dict(), "args": ARGS}, folder / "model.pth")
    (folder / "classes.txt").write_text("walk\nrun\njump\n")
    return model, folder / "model.pth"


def windows(video: Path) -> torch.Tensor:
    """The two windows of a 16-frame video (4 frames every 2: starts 0 and 8), decoded independently."""
    from videomae.data import transforms as TF
    from videomae.data.decode import read_frames

    picks = read_frames(str(video), lambda n: [np.arange(0, 8, 2), np.arange(8, 16, 2)])
    return torch.stack([TF.normalize(TF.crop_resize(TF.as_tchw(f), TF.center_crop_box(32, 32, 32), 32))
                        for f in picks])


def test_extract_writes_one_feature_per_window(synth, classifier, tmp_path, capsys):
    model, weights = classifier
    out = tmp_path / "feats"
    code = cli.main(["extract", "--checkpoint", str(weights), "--data_path", str(synth / "val.txt"),
                     "--sampling_rate", "2", "--output_dir", str(out)])
    assert code == 0, capsys.readouterr().err
    index = json.loads((out / "index.json").read_text())
    assert sorted(index["videos"]) == ["val_00000", "val_00001"]
    assert index["videos"]["val_00000"]["window_starts"] == [0, 8]
    got = np.load(out / "val_00000.npy")
    with torch.no_grad():
        want = model.forward_features(windows(synth / "videos" / "val_00000.mp4"))
    assert got.shape == (2, 192)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


def test_extract_to_safetensors_with_overlapping_windows(synth, classifier, tmp_path):
    _, weights = classifier
    out = tmp_path / "st"
    code = cli.main(["extract", "--checkpoint", str(weights), "--data_path", str(synth / "videos" / "val_00001.mp4"),
                     "--sampling_rate", "2", "--window_stride", "4", "--format", "safetensors", "--tokens",
                     "--output_dir", str(out)])
    assert code == 0
    from safetensors.torch import load_file

    feats = load_file(str(out / "features.safetensors"))
    assert list(feats) == ["val_00001"] and feats["val_00001"].shape == (3, 8, 192)  # starts 0, 4, 8; 2x2x2 tokens


def test_predict_averages_window_softmax_and_names_classes(synth, classifier, tmp_path, capsys):
    model, weights = classifier
    video = synth / "videos" / "val_00000.mp4"
    code = cli.main(["predict", "--checkpoint", str(weights), "--data_path", str(video), "--sampling_rate", "2",
                     "--top_k", "2", "--output_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    with torch.no_grad():
        want = model(windows(video)).softmax(dim=-1).mean(dim=0)
    names = ["walk", "run", "jump"]
    top = want.topk(2)
    result = json.loads((tmp_path / "predictions.json").read_text())["videos"][0]
    assert [t["class"] for t in result["top"]] == [names[i] for i in top.indices]
    assert [t["probability"] for t in result["top"]] == pytest.approx(top.values.tolist(), rel=1e-5)
    assert f"{video}: {names[top.indices[0]]} " in out


def test_predict_refuses_pretraining_weights_in_one_line(synth, tmp_path, capsys):
    pretrain = videomae.create_model("pretrain_videomae_tiny_patch16_224", **GEOMETRY)
    weights = tmp_path / "pt.pth"
    torch.save({"model": pretrain.state_dict()}, weights)
    code = cli.main(["predict", "--checkpoint", str(weights), "--data_path", str(synth / "videos" / "val_00000.mp4"),
                     "--input_size", "32", "--num_frames", "4", "--output_dir", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no classification head" in err


def test_export_hf_folder_loads_in_transformers_and_gives_our_logits(classifier, tmp_path):
    transformers = pytest.importorskip("transformers")
    model, weights = classifier
    out = tmp_path / "hf"
    assert cli.main(["export", "--checkpoint", str(weights), "--format", "hf", "--output", str(out),
                     "--classes", str(weights.parent / "classes.txt")]) == 0
    hf = transformers.VideoMAEForVideoClassification.from_pretrained(out).eval()
    assert hf.config.id2label == {0: "walk", 1: "run", 2: "jump"}
    clips = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(clips)
        got = hf(clips.permute(0, 2, 1, 3, 4)).logits  # HF takes [B, T, C, H, W]
    # HF's fc_norm has eps 1e-5, ours 1e-6: the only difference, far below this bound.
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-4
    # and our loader reads the folder back exactly
    back = videomae.create_model("vit_tiny_patch16_224", num_classes=3, **GEOMETRY).eval()
    videomae.load_checkpoint(back, out, strict=True)
    with torch.no_grad():
        assert torch.equal(back(clips), want)


def test_export_onnx_is_one_named_file_with_a_dynamic_batch_axis(classifier, tmp_path, capsys):
    model, weights = classifier
    out = tmp_path / "onnx"
    code = cli.main(["export", "--checkpoint", str(weights), "--format", "onnx", "--output", str(out / "m.onnx")])
    captured = capsys.readouterr()
    try:
        import onnx
    except ImportError:
        assert code == 2 and "needs the onnx package" in captured.err and len(captured.err.strip().splitlines()) == 1
        return
    assert code == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == ["m.onnx"]  # the weights fit: one file, nothing beside it
    assert f"wrote {out / 'm.onnx'}" in captured.out
    graph = onnx.load(str(out / "m.onnx"))
    onnx.checker.check_model(graph)
    batch = graph.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # a named, free axis
    from onnx.reference import ReferenceEvaluator

    run = ReferenceEvaluator(graph)
    for n in (1, 5):  # batch sizes the export never traced
        clips = torch.randn(n, 3, 4, 32, 32, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            want = model(clips)
        got = torch.from_numpy(run.run(None, {"videos": clips.numpy()})[0])
        assert got.shape == want.shape and ((got - want).abs().max() / want.abs().max()).item() < 1e-4


def test_exported_folder_runs_in_the_transformers_video_pipeline_with_our_labels(synth, classifier, tmp_path):
    transformers = pytest.importorskip("transformers")
    av = pytest.importorskip("av")
    model, weights = classifier
    out = tmp_path / "hf"
    assert cli.main(["export", "--checkpoint", str(weights), "--output", str(out)]) == 0  # classes.txt beside it
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "model.safetensors.sha256",
                                                    "preprocessor_config.json"]
    pre = transformers.VideoMAEImageProcessor.from_pretrained(out)
    assert (pre.crop_size["height"], pre.size["shortest_edge"], list(pre.image_mean)) == (32, 32, [0.485, 0.456, 0.406])
    pipe = transformers.pipeline("video-classification", model=str(out))
    video = synth / "videos" / "val_00000.mp4"
    from transformers.utils import is_torchcodec_available

    if is_torchcodec_available():
        result = pipe(str(video), top_k=3)  # the pipeline decodes the file itself
    else:
        # transformers >= 5 decodes files with torchcodec only (it needs the system's FFmpeg libraries, absent
        # here); the frames of the same file, decoded with PyAV, go through the same processor and model.
        with av.open(str(video)) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        result = pipe(frames, top_k=3)
    assert sorted(r["label"] for r in result) == ["jump", "run", "walk"]
    assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-5)
    # the pipeline's top label is our model's on the clip the pipeline's processor made
    if not is_torchcodec_available():
        pixels = pipe.video_processor(frames, num_frames=4, do_sample_frames=True, return_tensors="pt")
        with torch.no_grad():
            ours = model(pixels["pixel_values"].permute(0, 2, 1, 3, 4)).softmax(-1)[0]
        assert result[0]["label"] == ["walk", "run", "jump"][int(ours.argmax())]
        assert result[0]["score"] == pytest.approx(ours.max().item(), abs=1e-4)


def test_export_to_a_full_disk_is_one_line_and_leaves_no_folder(classifier, tmp_path, monkeypatch, capsys):
    from storage_faults import faulty_open

    from videomae import integrity

    _, weights = classifier
    opener, hit = faulty_open("full", match=".safetensors")
    monkeypatch.setattr(integrity, "open", opener, raising=False)
    out = tmp_path / "hf"
    code = cli.main(["export", "--checkpoint", str(weights), "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "No space left on device" in err[0], err
    assert hit and not out.exists() and not list(tmp_path.glob(".hf*"))  # no folder, no leftovers


def test_official_finetune_eval_flag_evaluates_the_given_weights(synth, classifier, tmp_path, capsys):
    _, weights = classifier
    code = cli.main(["finetune", "--eval", "--resume", str(weights), "--data_path", str(synth), "--model",
                     "vit_tiny_patch16_224", "--input_size", "32", "--num_frames", "4", "--sampling_rate", "2",
                     "--short_side_size", "32", "--test_num_segment", "1", "--test_num_crop", "1", "--nb_classes",
                     "3", "--num_workers", "0", "--output_dir", str(tmp_path / "ev")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["num_videos"] == 2 and report["views_per_video"] == 1


def test_export_hf_of_pretraining_weights_gives_transformers_predictions(tmp_path):
    transformers = pytest.importorskip("transformers")
    from videomae.masking import tube_mask

    torch.manual_seed(4)
    ours = videomae.create_model("pretrain_videomae_tiny_patch16_224", **GEOMETRY).eval()
    weights = tmp_path / "pt.pth"
    torch.save({"model": ours.state_dict(), "args": {**ARGS, "model": "pretrain_videomae_tiny_patch16_224"}}, weights)
    assert cli.main(["export", "--checkpoint", str(weights), "--output", str(tmp_path / "hf")]) == 0
    hf = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "hf").eval()
    clips = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    mask = tube_mask(2, (2, 2, 2), 0.5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = ours(clips, mask)
        got = hf(clips.permute(0, 2, 1, 3, 4), bool_masked_pos=mask).logits
    # HF's decoder.norm has eps 1e-5, ours 1e-6 (the export says so): agreement to ~1e-5, not bitwise.
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-4
