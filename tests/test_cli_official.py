"""Official command lines (MCG-NJU/VideoMAE and OpenGVLab/VideoMAEv2 `scripts/*.sh`, rewritten here with
tiny paths) are accepted with the official arity and meaning; flags that change nothing here print one
note line; values we cannot honour stop with one line; docs/official_flags.md lists every official flag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from videomae import cli
from videomae.commands import official

ROOT = Path(__file__).resolve().parent.parent

# Command lines as the official scripts write them (paths replaced by placeholders filled in below).
V1_SSV2_PRETRAIN = """--data_path {list} --mask_type tube --mask_ratio 0.9 --model pretrain_videomae_base_patch16_224
 --decoder_depth 4 --batch_size 32 --num_frames 16 --sampling_rate 2 --opt adamw --opt_betas 0.9 0.95
 --warmup_epochs 40 --save_ckpt_freq 20 --epochs 801 --log_dir {out} --output_dir {out}"""
V1_SSV2_FINETUNE = """--model vit_base_patch16_224 --data_set SSV2 --nb_classes 174 --data_path {folder}
 --finetune {weights} --log_dir {out} --output_dir {out} --batch_size 8 --num_sample 1 --input_size 224
 --short_side_size 224 --save_ckpt_freq 10 --num_frames 16 --opt adamw --lr 5e-4 --opt_betas 0.9 0.999
 --weight_decay 0.05 --epochs 50 --dist_eval --test_num_segment 2 --test_num_crop 3 --enable_deepspeed"""
V1_K400_FINETUNE = """--model vit_base_patch16_224 --data_path {folder} --finetune {weights} --log_dir {out}
 --output_dir {out} --batch_size 8 --num_sample 2 --input_size 224 --short_side_size 224 --save_ckpt_freq 10
 --num_frames 16 --sampling_rate 4 --opt adamw --lr 1e-3 --opt_betas 0.9 0.999 --weight_decay 0.05
 --epochs 100 --dist_eval --test_num_segment 5 --test_num_crop 3 --enable_deepspeed"""
V2_HYBRID_PRETRAIN = """--data_path {list} --mask_type tube --mask_ratio 0.9 --decoder_mask_type run_cell
 --decoder_mask_ratio 0.5 --model pretrain_videomae_large_patch16_224 --decoder_depth 4 --batch_size 32
 --num_frames 16 --sampling_rate 4 --num_workers 10 --opt adamw --lr 1e-3 --opt_betas 0.9 0.95
 --warmup_epochs 30 --save_ckpt_freq 20 --epochs 300 --log_dir {out} --output_dir {out}"""
V2_K400_FINETUNE = """--model vit_base_patch16_224 --data_set Kinetics-400 --nb_classes 400 --data_path {folder}
 --data_root {root} --finetune {weights} --log_dir {out} --output_dir {out} --batch_size 8 --input_size 224
 --short_side_size 224 --save_ckpt_freq 10 --num_frames 16 --sampling_rate 4 --num_sample 2 --num_workers 10
 --opt adamw --lr 7e-4 --drop_path 0.1 --head_drop_rate 0.0 --layer_decay 0.75 --opt_betas 0.9 0.999
 --weight_decay 0.05 --warmup_epochs 5 --epochs 90 --test_num_segment 5 --test_num_crop 3 --dist_eval
 --enable_deepspeed --with_checkpoint"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """A list of 64 lines (official scripts use batches of 32; lists are parsed, not decoded, by the checks),
    train/val/test lists in a folder, and a weights file."""
    import torch

    root = tmp_path_factory.mktemp("official")
    from videomae.data.synth import write_synthetic_dataset

    write_synthetic_dataset(root / "synth", num_train=8, num_val=4, num_frames=16, size=32, seed=0)
    video = (root / "synth" / "videos" / "train_00000.mp4").resolve()
    (root / "lists").mkdir()
    for name in ("train", "val", "test"):
        (root / "lists" / f"{name}.csv").write_text("".join(f"{video} {i % 4}\n" for i in range(64)))
    weights = root / "checkpoint-799.pth"
    torch.save({"model": {"encoder.norm.weight": torch.ones(3)}}, weights)
    return {"list": root / "lists" / "train.csv", "folder": root / "lists", "weights": weights, "root": root,
            "synth": root / "synth"}


def argv(template: str, data: dict, out: Path) -> list[str]:
    return template.format(out=out, **data).split()


def checked(command: str, line: list[str], capsys):
    args = cli.parse([command, *line])
    cli.check(args)
    return args, capsys.readouterr().out


def test_v1_ssv2_pretrain_script(data, tmp_path, capsys):
    out = tmp_path / "run"
    args, notes = checked("pretrain", argv(V1_SSV2_PRETRAIN, data, out), capsys)
    assert args.opt_betas == (0.9, 0.95) and args.epochs == 801 and args.log_dir == str(out)
    assert (args.mask_type, args.mask_ratio, args.decoder_depth, args.sampling_rate) == ("tube", 0.9, 4, 2)
    assert notes == ""  # --opt adamw is our optimizer: nothing to say
    assert not out.exists()  # the checks touch nothing


def test_v2_pretrain_script_with_dual_masking(data, tmp_path, capsys):
    args, _ = checked("pretrain", argv(V2_HYBRID_PRETRAIN, data, tmp_path / "run"), capsys)
    assert (args.decoder_mask_type, args.decoder_mask_ratio, args.lr) == ("run_cell", 0.5, 1e-3)


@pytest.mark.parametrize("script", [V1_SSV2_FINETUNE, V1_K400_FINETUNE, V2_K400_FINETUNE])
def test_finetune_scripts(script, data, tmp_path, capsys):
    args, notes = checked("finetune", argv(script, data, tmp_path / "run"), capsys)
    assert args.opt_betas == (0.9, 0.999) and args.finetune == str(data["weights"])
    lines = notes.splitlines()
    assert any(x.startswith("note: --enable_deepspeed: no DeepSpeed") for x in lines)
    assert any(x.startswith("note: --dist_eval:") for x in lines)
    assert args.sampling == ("segment" if "SSV2" in script else "dense")  # the SSv2 loader samples segments
    if "--num_sample 2" in script:
        assert any(x.startswith("note: --num_sample: 1 clip per video") for x in lines)
    if "--with_checkpoint" in script:
        assert args.use_checkpoint


def test_every_official_flag_is_accepted_with_its_arity_and_sets_its_value():
    parser = cli.build_parser()
    sub = {a.dest: a for a in parser._actions if a.dest == "command"}["command"].choices
    for command in (official.PT, official.FT):
        for name in official.SAME[command]:
            assert f"--{name}" in sub[command]._option_string_actions, (command, name)
        for o in official.OFFICIAL:
            if command not in o.commands:
                continue
            # The tokens the official parser takes for this flag, and the value they must leave behind.
            action, kind = o.kwargs.get("action"), o.kwargs.get("type")
            if action == "store_true":
                given, expected = [], True
            elif action == "store_false":
                given, expected = [], False
            elif o.kwargs.get("nargs") == "+":
                given, expected = ["0.2", "0.8"], [0.2, 0.8]
            elif kind in (int, float):
                given, expected = ["3"], kind(3)
            else:
                given, expected = ["adamw"], "adamw"
            args = sub[command].parse_args([f"--{o.name}", *given])
            assert getattr(args, official._dest(o)) == expected, (command, o.name)


@pytest.mark.parametrize("command, line, needle", [
    ("pretrain", ["--opt", "sgd"], "--opt sgd: only adamw"),
    ("pretrain", ["--start_epoch", "5"], "--start_epoch 5"),
    ("pretrain", ["--decoder_mask_type", "random"], "--decoder_mask_type random"),
    ("pretrain", ["--normlize_target", "maybe"], "--normlize_target"),
    ("finetune", ["--use_cls"], "--use_cls"),
    ("finetune", ["--no_save_ckpt"], "--no_save_ckpt"),
    ("finetune", ["--cutmix_minmax", "0.2", "0.8"], "--cutmix_minmax"),
])
def test_values_we_cannot_honour_stop_with_one_line(command, line, needle, data, tmp_path, capsys):
    path = data["list"] if command == "pretrain" else data["folder"]
    code = cli.main([command, "--data_path", str(path), "--output_dir", str(tmp_path / "o"), *line])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


def test_normlize_target_takes_the_official_word():
    # Official `type=bool` made `--normlize_target False` true; here the word means what it says.
    assert cli.parse(["pretrain", "--data_path", ".", "--normlize_target", "False"]).normlize_target is False
    assert cli.parse(["pretrain", "--data_path", ".", "--normlize_target", "True"]).normlize_target is True
    assert cli.parse(["pretrain", "--data_path", ".", "--normlize_target"]).normlize_target is True
    assert cli.parse(["pretrain", "--data_path", ".", "--opt_betas", "0.9,0.98"]).opt_betas == (0.9, 0.98)


def test_auto_resume_is_resume_auto(data, tmp_path, capsys):
    args, _ = checked("pretrain", argv(V1_SSV2_PRETRAIN, data, tmp_path / "r") + ["--auto_resume"], capsys)
    assert args.resume == "auto" and args.resume_from is None  # nothing to resume yet: a new run


def test_notes_file_lists_every_official_flag():
    doc = (ROOT / "docs" / "official_flags.md").read_text()
    assert doc == official.markdown(), "docs/official_flags.md is stale: write official.markdown() into it"
    for o in official.OFFICIAL:
        assert f"`--{o.name}`" in doc


def test_an_official_pretraining_command_line_runs(data, tmp_path):
    # V1's SSv2 pretrain.sh as written, with the sizes cut down to a CPU test (model, batch, frames, epochs).
    out = tmp_path / "ssv2"
    line = argv(V1_SSV2_PRETRAIN, {**data, "list": data["synth"] / "train.txt"}, out)
    small = {"--model": "pretrain_videomae_tiny_patch16_224", "--batch_size": "2", "--num_frames": "4",
             "--epochs": "1"}
    line = [small.get(line[i - 1], tok) if i else tok for i, tok in enumerate(line)]
    cmd = [sys.executable, "-m", "videomae", "pretrain", *line, "--input_size", "32", "--num_workers", "0",
           "--no_preview", "--auto_resume"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "model.pth").is_file() and (out / "checkpoint-0.pth").is_file()
    assert "\r" not in proc.stderr  # not a terminal: plain progress lines
    assert "epoch 1/1  step 4/4" in proc.stderr


def test_eval_data_path_and_disable_eval_choose_the_evaluation_lists(data, tmp_path):
    import argparse

    from videomae.train.classifier import optional_list

    other = tmp_path / "other.csv"
    other.write_text((data["folder"] / "val.csv").read_text())
    plain = argparse.Namespace(data_path=str(data["folder"]))
    assert optional_list(plain, "val") == data["folder"] / "val.csv"
    assert optional_list(plain, "test") == data["folder"] / "test.csv"
    given = argparse.Namespace(data_path=str(data["folder"]), eval_data_path=str(other))
    assert optional_list(given, "val") == other and optional_list(given, "test") == other
    off = argparse.Namespace(data_path=str(data["folder"]), disable_eval_during_finetuning=True)
    assert optional_list(off, "val") is None and optional_list(off, "test") == data["folder"] / "test.csv"


def test_official_dropout_flags_reach_the_classifier():
    from videomae.train.classifier import build_classifier

    args = cli.parse(["finetune", "--data_path", ".", "--model", "vit_tiny_patch16_224", "--input_size", "32",
                      "--num_frames", "4", "--drop", "0.2", "--attn_drop_rate", "0.1", "--head_drop_rate", "0.3"])
    model = build_classifier(args, 3)
    assert model.pos_drop.p == 0.2 and model.fc_dropout.p == 0.3
    assert model.blocks[0].attn.attn_drop == 0.1  # a rate handed to the attention kernel
