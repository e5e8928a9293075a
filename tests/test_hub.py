"""Hub ids wherever weights are accepted, with no network: small models placed in a Hugging Face cache layout
(HF_HUB_CACHE in a temporary folder, `models--ORG--NAME/{refs,snapshots}`) and read by id with HF_HUB_OFFLINE=1
through the real huggingface_hub code, in subprocesses (huggingface_hub reads both variables when imported)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
GEOMETRY = dict(img_size=32, num_frames=4)


def tiny_hf_folder(folder: Path, kind: str, seed: int, names=None) -> torch.nn.Module:
    """A Hugging Face model folder (config.json + model.safetensors, transformers' key names) of a tiny model."""
    from safetensors.torch import save_file

    import videomae
    from videomae.interop.hf import hf_config, official_to_hf

    torch.manual_seed(seed)
    if kind == "pretrain":
        model = videomae.create_model("pretrain_videomae_tiny_patch16_224", **GEOMETRY)
    else:
        model = videomae.create_model("vit_tiny_patch16_224", num_classes=3, init_scale=1.0, **GEOMETRY)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(hf_config(model, names)))
    save_file({k: v.contiguous() for k, v in official_to_hf(model.state_dict()).items()},
              str(folder / "model.safetensors"))
    return model.eval()


def cache_repo(cache: Path, repo_id: str, folder: Path, revision: str = "main") -> str:
    """Put `folder` in huggingface_hub's cache layout as `repo_id` at `revision` -> its commit hash."""
    sha = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / revision).write_text(sha)
    shutil.copytree(folder, root / "snapshots" / sha)
    return sha


def offline_env(tmp_path: Path) -> dict:
    return {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "hf_home"),
            "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=env)


def videomae_cli(env: dict, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videomae", *argv], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A cache holding org/tiny-pretrain (main and tag v1, other weights) and org/tiny-classifier; expected outputs."""
    tmp = tmp_path_factory.mktemp("hubtest")
    cache = tmp / "hub"
    clips = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    pre = tiny_hf_folder(tmp / "src" / "pre_main", "pretrain", seed=1)
    pre_v1 = tiny_hf_folder(tmp / "src" / "pre_v1", "pretrain", seed=2)
    cls = tiny_hf_folder(tmp / "src" / "cls", "classifier", seed=3, names=["walk", "run", "jump"])
    cache_repo(cache, "org/tiny-pretrain", tmp / "src" / "pre_main")
    sha_v1 = cache_repo(cache, "org/tiny-pretrain", tmp / "src" / "pre_v1", revision="v1")
    cache_repo(cache, "org/tiny-classifier", tmp / "src" / "cls")
    from videomae.masking import token_ids, tube_mask

    ids = token_ids(tube_mask(2, (2, 2, 2), 0.5, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        want = {"main": pre(clips, ids), "v1": pre_v1(clips, ids), "cls": cls(clips)}
    torch.save({"clips": clips, "want": want, "sha_v1": sha_v1}, tmp / "expect.pt")
    return tmp


LIBRARY = """
import sys, torch, videomae
from videomae.masking import token_ids, tube_mask
e = torch.load(sys.argv[1] if len(sys.argv) > 1 else {expect!r}, weights_only=False)
ids = token_ids(tube_mask(2, (2, 2, 2), 0.5, generator=torch.Generator().manual_seed(0)))
rel = lambda a, b: ((a - b).abs().max() / b.abs().max()).item()
out = {{}}
for rev, key in ((None, "main"), ("v1", "v1"), (e["sha_v1"], "v1")):
    model, report = videomae.from_pretrained("org/tiny-pretrain", revision=rev)
    with torch.no_grad():
        err = rel(model.eval()(e["clips"], ids), e["want"][key])
    out[f"{{key}}@{{rev}}"] = (err, report.layout, len(report.missing))
model, _ = videomae.from_pretrained("org/tiny-pretrain")
with torch.no_grad():
    out["main_vs_v1"] = rel(model.eval()(e["clips"], ids), e["want"]["v1"])
cls = videomae.create_model("vit_tiny_patch16_224", num_classes=3, img_size=32, num_frames=4)
report = videomae.load_checkpoint(cls, "org/tiny-classifier")
with torch.no_grad():
    out["cls"] = (rel(cls.eval()(e["clips"]), e["want"]["cls"]), report.layout, len(report.missing))
try:
    videomae.from_pretrained("org/not-cached")
except ValueError as err:
    out["missing"] = str(err)
print(repr(out))
"""


def test_from_pretrained_and_load_checkpoint_take_hub_ids_offline(hub):
    proc = python(LIBRARY.format(expect=str(hub / "expect.pt")), offline_env(hub))
    assert proc.returncode == 0, proc.stderr
    out = eval(proc.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr of floats and strings
    # HF builds fc_norm / decoder.norm with eps 1e-5, the source model 1e-6: agreement to ~1e-5, not bitwise.
    for key in ("main@None", "v1@v1", f"v1@{torch.load(hub / 'expect.pt')['sha_v1']}", "cls"):
        err, layout, missing = out[key]
        assert err < 1e-4 and layout == "hf" and missing == 0, (key, out[key])
    assert out["main_vs_v1"] > 1e-2  # the revisions hold different weights: the check above can tell them apart
    assert out["missing"].count("\n") == 0 and "org/not-cached" in out["missing"]
    assert "HF_HUB_OFFLINE=1" in out["missing"] and str(hub / "hub") in out["missing"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    pytest.importorskip("av")  # the clips are H.264 files
    from videomae.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, num_train=2, num_val=1, num_frames=16, size=32, seed=0)
    return root


RUN = ["--batch_size", "2", "--num_workers", "0", "--epochs", "1", "--max_steps", "1", "--no_tensorboard",
       "--no_preview", "--sampling_rate", "2", "--mask_ratio", "0.5", "--lr", "0", "--min_lr", "0"]


def test_pretrain_init_from_a_hub_id_takes_the_architecture_from_its_config(hub, synth, tmp_path):
    pytest.importorskip("av")
    out = tmp_path / "run"
    proc = videomae_cli(offline_env(hub), "pretrain", "--data_path", str(synth / "train.txt"), "--output_dir",
                        str(out), "--init", "org/tiny-pretrain", *RUN)  # no --model, no size flags
    assert proc.returncode == 0, proc.stderr
    args = json.loads((out / "args.json").read_text())
    assert (args["model"], args["input_size"], args["num_frames"], args["decoder_depth"]) == (
        "pretrain_videomae_tiny_patch16_224", 32, 4, 1)
    # lr 0: the exported weights are the Hub model's, key for key
    from safetensors.torch import load_file

    from videomae.interop.hf import hf_to_official

    src = hf_to_official(load_file(str(hub / "src" / "pre_main" / "model.safetensors")))[0]
    got = torch.load(out / "model.pth", weights_only=True)["model"]
    assert all(torch.equal(got[k], v) for k, v in src.items())


def test_flags_that_disagree_with_the_config_name_both_in_one_line(hub, synth, tmp_path):
    proc = videomae_cli(offline_env(hub), "pretrain", "--data_path", str(synth / "train.txt"), "--output_dir",
                        str(tmp_path / "run"), "--init", "org/tiny-pretrain", "--num_frames", "8", *RUN)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "--num_frames 8 vs num_frames 4 in config.json" in lines[0] and "org/tiny-pretrain" in lines[0]
    assert not (tmp_path / "run").exists()
    proc = videomae_cli(offline_env(hub), "pretrain", "--data_path", str(synth / "train.txt"), "--output_dir",
                        str(tmp_path / "run"), "--init", "org/tiny-pretrain", "--model",
                        "pretrain_videomae_small_patch16_224", *RUN)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "width 384" in lines[0] and "hidden_size 192" in lines[0]


def test_predict_with_a_hub_classifier_names_its_labels(hub, synth, tmp_path):
    pytest.importorskip("av")
    video = synth / "videos" / "val_00000.mp4"
    proc = videomae_cli(offline_env(hub), "predict", str(video), "--checkpoint", "org/tiny-classifier",
                        "--sampling_rate", "2", "--top_k", "3", "--output_dir", str(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr
    top = json.loads((tmp_path / "p" / "predictions.json").read_text())["videos"][0]["top"]
    assert sorted(t["class"] for t in top) == ["jump", "run", "walk"]


def test_a_missing_hub_id_is_one_line(hub, tmp_path):
    proc = videomae_cli(offline_env(hub), "export", "--checkpoint", "org/not-cached", "--output",
                        str(tmp_path / "x"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "--checkpoint org/not-cached" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0]
    assert not (tmp_path / "x").exists()


def test_timm_pretrained_loads_through_its_pretrained_cfg(hub):
    pytest.importorskip("timm")
    code = f"""
import torch, timm, videomae
e = torch.load({str(hub / 'expect.pt')!r}, weights_only=False)
m = timm.create_model("videomae_vit_tiny_patch16_224", pretrained=True,
                      pretrained_cfg_overlay={{"hf_hub_id": "org/tiny-classifier"}}).eval()
with torch.no_grad():
    print(((m(e["clips"]) - e["want"]["cls"]).abs().max() / e["want"]["cls"].abs().max()).item())
ten = timm.create_model("videomae_vit_tiny_patch16_224", pretrained=True, num_classes=10,
                        pretrained_cfg_overlay={{"hf_hub_id": "org/tiny-classifier"}})
print(ten.num_classes)
print(timm.models.get_pretrained_cfg("videomae_vit_base_patch16_224").hf_hub_id)
print(timm.models.get_pretrained_cfg("pretrain_videomae_base_patch16_224.ssv2").hf_hub_id)
"""
    proc = python(code, offline_env(hub))
    assert proc.returncode == 0, proc.stderr
    err, classes, default, ssv2 = proc.stdout.split()[-4:]
    assert float(err) < 1e-4 and classes == "10"
    # the transformers conversions of the official checkpoints (huggingface.co/MCG-NJU)
    assert (default, ssv2) == ("MCG-NJU/videomae-base-finetuned-kinetics", "MCG-NJU/videomae-base-ssv2")
