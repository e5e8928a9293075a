"""Files we write and files we read: content hashes that loading verifies, Hugging Face configs checked against
their weights before any model is built, and full or read-only storage as one line with nothing lost."""

from __future__ import annotations

import json

import pytest
import torch
from storage_faults import faulty_open

import videomae
from videomae import cli, integrity
from videomae.interop.hf import hf_config, official_to_hf

GEOMETRY = dict(img_size=32, num_frames=4)


def tiny_classifier(seed=0):
    torch.manual_seed(seed)
    return videomae.create_model("vit_tiny_patch16_224", num_classes=3, init_scale=1.0, **GEOMETRY)


def flip(path, start: int, count: int = 4096) -> None:
    """Invert `count` bytes of a file from `start` (clamped to the file)."""
    data = bytearray(path.read_bytes())
    start = min(start, max(len(data) - count, 0))
    for i in range(start, min(start + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- content hashes


@pytest.mark.parametrize("fmt, name", [("official", "model.pth"), ("safetensors", "model.safetensors")])
def test_flipped_bytes_in_a_checkpoint_we_wrote_are_refused_naming_the_file(tmp_path, fmt, name):
    model = tiny_classifier()
    path = tmp_path / name
    videomae.save_checkpoint(model, path, format=fmt)
    assert integrity.sidecar(path).is_file()
    videomae.load_checkpoint(tiny_classifier(seed=1), path, strict=True)  # intact: loads
    flip(path, path.stat().st_size // 2)
    with pytest.raises(ValueError) as err:
        videomae.load_checkpoint(tiny_classifier(seed=1), path)
    assert str(path) in str(err.value) and "SHA-256" in str(err.value) and "\n" not in str(err.value)


def test_flipped_weights_are_one_line_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "model.pth"
    videomae.save_checkpoint(tiny_classifier(), path, args={"model": "vit_tiny_patch16_224", "input_size": 32,
                                                           "num_frames": 4, "tubelet_size": 2})
    flip(path, 2000)
    code = cli.main(["export", "--checkpoint", str(path), "--output", str(tmp_path / "hf")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(path) in err[0] and "SHA-256" in err[0], err
    assert not (tmp_path / "hf").exists()


def test_the_hf_export_carries_a_hash_that_loading_checks(tmp_path):
    model = tiny_classifier()
    weights = tmp_path / "model.pth"
    videomae.save_checkpoint(model, weights, args={"model": "vit_tiny_patch16_224", "input_size": 32,
                                                   "num_frames": 4, "tubelet_size": 2})
    assert cli.main(["export", "--checkpoint", str(weights), "--output", str(tmp_path / "hf")]) == 0
    st = tmp_path / "hf" / "model.safetensors"
    assert integrity.verify(st)
    flip(st, st.stat().st_size - 5000)
    with pytest.raises(ValueError, match="SHA-256"):
        videomae.load_checkpoint(tiny_classifier(seed=1), tmp_path / "hf")


# ---------------------------------------------------------------- Hugging Face configs


def hf_folder(tmp_path, config_text: str | None = None, **changes):
    """A classifier's HF folder; `changes` edit its config.json, `config_text` replaces it."""
    from safetensors.torch import save_file

    model = tiny_classifier()
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in official_to_hf(model.state_dict()).items()},
              str(folder / "model.safetensors"))
    config = {**hf_config(model, ["a", "b", "c"]), **changes}
    (folder / "config.json").write_text(config_text if config_text is not None else json.dumps(config))
    return folder


BAD_CONFIGS = [
    (dict(config_text="[1, 2, 3]"), "expected a JSON object"),
    (dict(config_text='{"hidden_size": 192,'), "not valid JSON"),
    (dict(hidden_size="192"), "hidden_size '192' must be a positive integer"),
    (dict(num_hidden_layers=-2), "num_hidden_layers -2 must be a positive integer"),
    (dict(image_size=[32, 48]), "image_size [32, 48] is not square"),
    (dict(layer_norm_eps="tiny"), "layer_norm_eps"),
    (dict(hidden_size=3 * 2**20, num_attention_heads=3), "hidden_size 3145728 does not match the weights"),
    (dict(intermediate_size=4096), "intermediate_size 4096 does not match the weights"),
    (dict(num_hidden_layers=5), "num_hidden_layers 5 does not match the weights (2 blocks"),
    (dict(hidden_act="relu"), "hidden_act 'relu'"),
]


@pytest.mark.parametrize("change, needle", BAD_CONFIGS)
def test_a_bad_config_is_one_line_naming_file_and_field_before_any_model_is_built(tmp_path, monkeypatch, change,
                                                                                  needle):
    import videomae.interop.pretrained as pretrained

    folder = hf_folder(tmp_path, **change)

    def never(*args, **kwargs):
        raise AssertionError("a model was built before the config was checked")

    monkeypatch.setattr(pretrained, "model_from_hf_config", never)
    with pytest.raises(ValueError) as err:
        videomae.from_pretrained(folder)
    text = str(err.value)
    assert "\n" not in text and str(folder / "config.json") in text and needle in text, text


def test_a_bad_config_is_one_line_on_the_command_line(tmp_path, capsys):
    folder = hf_folder(tmp_path, hidden_size=10**7, num_attention_heads=1)
    code = cli.main(["predict", "x.mp4", "--checkpoint", str(folder), "--output_dir", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "hidden_size 10000000 does not match the weights" in err[0], err
    assert not (tmp_path / "p").exists()


def test_a_good_folder_still_loads(tmp_path):
    folder = hf_folder(tmp_path)
    model, report = videomae.from_pretrained(folder)
    assert report.layout == "hf" and not report.missing and model.num_classes == 3


# ---------------------------------------------------------------- full, read-only, refused


@pytest.mark.parametrize("kind, why", [("full", "No space left on device"), ("read-only", "Read-only file system"),
                                       ("denied", "Permission denied")])
def test_save_checkpoint_on_failing_storage_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, kind, why):
    path = tmp_path / "model.pth"
    videomae.save_checkpoint(tiny_classifier(seed=0), path)
    before = path.read_bytes(), integrity.sidecar(path).read_bytes()
    opener, hit = faulty_open(kind, match="model.pth")
    monkeypatch.setattr(integrity, "open", opener, raising=False)
    with pytest.raises(integrity.WriteFailed) as err:
        videomae.save_checkpoint(tiny_classifier(seed=5), path)
    assert hit and str(path) in str(err.value) and why in str(err.value) and "\n" not in str(err.value)
    assert (path.read_bytes(), integrity.sidecar(path).read_bytes()) == before  # nothing lost
    assert integrity.verify(path) and sorted(p.name for p in tmp_path.iterdir()) == ["model.pth", "model.pth.sha256"]

