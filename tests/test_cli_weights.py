"""Start from any weights: `pretrain --init` (official, Hugging Face folder, ours) with the load report
printed, through the real command; timm finds our models in either import order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "pretrain_videomae_tiny_patch16_224", "--input_size", "32", "--num_frames", "4",
        "--sampling_rate", "2", "--mask_ratio", "0.5", "--batch_size", "2", "--num_workers", "0", "--epochs", "1",
        "--max_steps", "1", "--no_tensorboard", "--no_preview"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videomae", *args], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    pytest.importorskip("av")  # the clips are H.264 files
    from videomae.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, num_train=4, num_val=2, num_frames=8, size=32, seed=0)
    return root


def _tiny_weights() -> dict[str, torch.Tensor]:
    import videomae

    torch.manual_seed(3)
    return videomae.create_model("pretrain_videomae_tiny_patch16_224", img_size=32, num_frames=4).state_dict()


def test_pretrain_init_from_an_official_file_prints_the_report_and_starts_there(synth, tmp_path):
    weights = tmp_path / "official.pth"
    sd = _tiny_weights()
    torch.save({"model": {"_orig_mod." + k: v for k, v in sd.items()}, "epoch": 799}, weights)  # V2 compiled
    out = tmp_path / "run"
    proc = run("pretrain", "--data_path", str(synth / "train.txt"), "--output_dir", str(out), "--init", str(weights),
               "--lr", "0", "--min_lr", "0", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert f"initialized from {weights} (official layout): {len(sd)} tensors loaded" in proc.stdout
    # lr 0: one step changes nothing, so the exported weights are the initial ones.
    got = torch.load(out / "model.pth", weights_only=True)["model"]
    assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_finetune_flag_is_the_v2_spelling_of_init(synth, tmp_path):
    weights = tmp_path / "w.pth"
    torch.save({"model": _tiny_weights()}, weights)
    proc = run("pretrain", "--data_path", str(synth / "train.txt"), "--output_dir", str(tmp_path / "run"),
               "--finetune", str(weights), *TINY)
    assert proc.returncode == 0, proc.stderr
    assert f"initialized from {weights}" in proc.stdout


def test_pretrain_init_from_a_hugging_face_folder(synth, tmp_path):
    transformers = pytest.importorskip("transformers")
    from videomae.interop.hf import official_to_hf

    cfg = transformers.VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=192,
                                      num_hidden_layers=2, num_attention_heads=3, intermediate_size=768,
                                      decoder_hidden_size=96, decoder_num_hidden_layers=1,
                                      decoder_num_attention_heads=3, decoder_intermediate_size=384,
                                      use_mean_pooling=False)
    cfg.architectures = ["VideoMAEForPreTraining"]
    hf = transformers.VideoMAEForPreTraining(cfg)
    sd = _tiny_weights()
    theirs = hf.state_dict()  # the installed transformers' key names (and a key bias in some versions)
    hf.load_state_dict(official_to_hf(sd, layout="new" if any(k.endswith("query.bias") for k in theirs) else "old",
                                      key_bias=any(k.endswith("key.bias") for k in theirs)), strict=True)
    folder = tmp_path / "hf"
    hf.save_pretrained(folder)
    out = tmp_path / "run"
    proc = run("pretrain", "--data_path", str(synth / "train.txt"), "--output_dir", str(out), "--init", str(folder),
               "--lr", "0", "--min_lr", "0", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "(hf layout)" in proc.stdout
    got = torch.load(out / "model.pth", weights_only=True)["model"]
    assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_init_of_another_size_is_one_line_naming_both(synth, tmp_path):
    import videomae

    weights = tmp_path / "small.pth"
    small = videomae.create_model("pretrain_videomae_small_patch16_224", img_size=32, num_frames=4)
    torch.save({"model": small.state_dict()}, weights)
    proc = run("pretrain", "--data_path", str(synth / "train.txt"), "--output_dir", str(tmp_path / "run"),
               "--init", str(weights), *TINY)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "a ViT width 384, 12 blocks, patch 16 checkpoint, the model is a ViT width 192, 2 blocks" in lines[0]
    assert not (tmp_path / "run").exists()  # found by the checks, before the run folder was made


@pytest.mark.parametrize("order", ["import videomae, timm", "import timm, videomae"])
def test_timm_finds_our_models_in_either_import_order(order):
    pytest.importorskip("timm")
    code = (f"{order}\nimport sys\n"
            "m = timm.create_model('pretrain_videomae_tiny_patch16_224', img_size=32, num_frames=4)\n"
            "c = timm.create_model('videomae_vit_tiny_patch16_224', num_classes=3, img_size=32, num_frames=4)\n"
            "print(type(m).__name__, type(c).__name__, c.num_classes)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["PretrainVisionTransformer", "VisionTransformer", "3"]


def test_import_videomae_does_not_import_timm():
    proc = subprocess.run([sys.executable, "-c", "import sys, videomae; print('timm' in sys.modules)"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.stdout.strip() == "False", proc.stderr
