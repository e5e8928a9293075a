"""The command line itself: flags, aliases, config files, the demo preset, one-line errors, info, data."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from videomae import cli

ROOT = Path(__file__).resolve().parent.parent


def run_main(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


# ---------------------------------------------------------------- parser


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from _subparsers(sub)


def test_every_flag_has_help_text_and_underscore_flags_have_dash_aliases():
    for name, sub in _subparsers(cli.build_parser()):
        if name == "prep":  # videomae/data/prep.py defines its own flags (and tests them)
            continue
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
            for opt in action.option_strings:
                if "_" in opt:
                    assert opt.replace("_", "-") in action.option_strings, f"{name} {opt} lacks a dash alias"


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_official_flag_names_exist(command):
    official = ["--data_path", "--model", "--batch_size", "--epochs", "--warmup_epochs", "--lr", "--min_lr",
                "--weight_decay", "--num_frames", "--sampling_rate", "--input_size", "--output_dir", "--log_dir",
                "--save_ckpt_freq", "--resume", "--drop_path", "--num_workers", "--seed", "--clip_grad", "--device",
                "--max_steps", "--accum_iter", "--precision", "--compile", "--config"]
    official += (["--mask_type", "--mask_ratio", "--decoder_depth", "--num_sample"] if command == "pretrain" else
                 ["--finetune", "--layer_decay", "--mixup", "--cutmix", "--smoothing", "--test_num_segment",
                  "--test_num_crop", "--update_freq"])
    sub = dict(_subparsers(cli.build_parser()))[command]
    for opt in official:
        assert opt in sub._option_string_actions, opt


def test_dash_aliases_set_the_same_destination():
    a = cli.parse(["pretrain", "--data_path", ".", "--batch-size", "5", "--mask-ratio", "0.5"])
    b = cli.parse(["pretrain", "--data_path", ".", "--batch_size", "5", "--mask_ratio", "0.5"])
    assert (a.batch_size, a.mask_ratio) == (b.batch_size, b.mask_ratio) == (5, 0.5)


def test_official_recipe_defaults():
    p = cli.parse(["pretrain", "--data_path", "."])
    assert (p.model, p.mask_type, p.mask_ratio, p.lr, p.min_lr, p.warmup_epochs, p.weight_decay, p.opt_betas,
            p.clip_grad, p.epochs, p.num_frames, p.sampling_rate) == (
        "pretrain_videomae_base_patch16_224", "tube", 0.9, 1.5e-4, 1e-5, 40, 0.05, (0.9, 0.95), None, 800, 16, 4)
    f = cli.parse(["finetune", "--data_path", "."])
    assert (f.layer_decay, f.drop_path, f.mixup, f.cutmix, f.smoothing, f.warmup_epochs, f.opt_betas,
            f.test_num_segment, f.test_num_crop, f.aa, f.reprob) == (
        0.75, 0.1, 0.8, 1.0, 0.1, 5, (0.9, 0.999), 5, 3, "rand-m7-n4-mstd0.5-inc1", 0.25)


def test_demo_preset_applies_without_data_path_and_explicit_flags_win():
    demo = cli.parse(["pretrain"])
    assert demo.demo and demo.model == "pretrain_videomae_tiny_patch16_224"
    assert demo.input_size == cli.DEMO["input_size"]
    mine = cli.parse(["pretrain", "--epochs", "3", "--input-size", "96"])
    assert mine.demo and mine.epochs == 3 and mine.input_size == 96
    real = cli.parse(["pretrain", "--data_path", "."])
    assert not real.demo and real.model == "pretrain_videomae_base_patch16_224"


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDEOMAE_CACHE", str(tmp_path))
    assert cli.cache_dir() == tmp_path


def test_config_file_sets_flags_and_the_command_line_wins(tmp_path):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text("batch_size: 7\nmask-ratio: 0.75\nopt_betas: [0.9, 0.98]\nepochs: 5\n")
    args = cli.parse(["pretrain", "--data_path", ".", "--config", str(cfg), "--epochs", "9"])
    assert (args.batch_size, args.mask_ratio, args.opt_betas, args.epochs) == (7, 0.75, (0.9, 0.98), 9)


def test_shipped_configs_parse():
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert configs, "configs/*.yaml example recipes are missing"
    for cfg in configs:
        command = "finetune" if "finetune" in cfg.name else "pretrain"
        args = cli.parse([command, "--data_path", ".", "--config", str(cfg)])
        assert args.command == command


# ---------------------------------------------------------------- one-line errors


@pytest.mark.parametrize("argv, needle", [
    (["pretrain", "--bogus"], "--bogus"),
    (["pretrain", "--batch_size", "many"], "--batch_size"),
    (["pretrain", "--precision", "fp8"], "fp8"),
    (["pretrain", "--mask_type", "checker"], "checker"),
    (["nosuchcommand"], "nosuchcommand"),
    ([], "required"),
    (["pretrain", "--data_path", "/no/such/list.txt"], "/no/such/list.txt"),
    (["pretrain", "--model", "pretrain_videomae_bas_patch16_224"], "did you mean"),
    (["pretrain", "--model", "vit_base_patch16_224"], "not a pretraining model"),
    (["pretrain", "--mask_ratio", "1.5"], "--mask_ratio"),
    (["pretrain", "--batch_size", "0"], "--batch_size"),
    (["pretrain", "--resume", "/no/such/ckpt.pth"], "/no/such/ckpt.pth"),
    (["finetune"], "--data_path"),
    (["finetune", "--data_path", ".", "--finetune", "/no/such/weights.pth"], "/no/such/weights.pth"),
    (["evaluate", "--data_path", "."], "--checkpoint"),
    (["visualize", "--video", "/no/such/video.mp4"], "/no/such/video.mp4"),
    (["bench", "no_such_benchmark"], "no_such_benchmark"),
    (["pretrain", "--device", "tpu9"], "tpu9"),
])
def test_bad_flags_and_paths_give_one_clear_line(argv, needle, capsys):
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, needle)


def test_cuda_device_without_cuda_is_a_usage_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_one_line_error(*run_main(["pretrain", "--device", "cuda"], capsys)[::2], "no CUDA device")


def test_bad_config_files_give_one_clear_line(tmp_path, capsys):
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("batch_sise: 3\n")
    assert_one_line_error(*run_main(["pretrain", "--config", str(unknown)], capsys)[::2], "batch_sise")
    choice = tmp_path / "choice.yaml"
    choice.write_text("precision: fp8\n")
    assert_one_line_error(*run_main(["pretrain", "--config", str(choice)], capsys)[::2], "fp8")
    assert_one_line_error(*run_main(["pretrain", "--config", str(tmp_path / "none.yaml")], capsys)[::2], "none.yaml")


def test_list_file_syntax_error_names_file_and_line(tmp_path, capsys):
    lst = tmp_path / "train.txt"
    lst.write_text("a.mp4 0\nb.mp4 zero\n")
    code, _, err = run_main(["pretrain", "--data_path", str(lst), "--model", "pretrain_videomae_tiny_patch16_224",
                             "--output_dir", str(tmp_path / "out"), "--num_workers", "0"], capsys)
    assert_one_line_error(code, err, f"{lst}:2")


def test_module_entry_point_prints_one_line_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "videomae", "pretrain", "--no-such-flag"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--no-such-flag" in proc.stderr and "Traceback" not in proc.stderr


def test_help_explains_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["pretrain", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--batch_size" in out and "--batch-size" in out and "total_batch" in out


# ---------------------------------------------------------------- info, data, bench


def test_info_reports_versions_backends_and_reasons(capsys):
    code, out, _ = run_main(["info"], capsys)
    assert code == 0
    for needle in ("python", "torch", "triton", "numpy", "compiled extension", "flash-attn", "xformers", "SDPA",
                   "decord", "PyAV", "cube_embed", "norm_pix_mse", "attention"):
        assert needle in out, needle
    import torch

    if not torch.cuda.is_available():  # on a CPU machine every GPU backend must say why not
        assert "needs a CUDA device" in out or "no CUDA device" in out


def test_info_json_is_machine_readable(capsys):
    code, out, _ = run_main(["info", "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and {"versions", "devices", "backends", "fused ops", "attention"} <= set(report)
    for entry in report["backends"].values():
        assert entry["available"] or entry["reasons"], entry


def test_data_synth_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    code, stdout, _ = run_main(["data", "synth", "--output_dir", str(out), "--num_train", "2", "--num_val", "1",
                                "--num_frames", "4", "--size", "32", "--style", "smooth"], capsys)
    assert code == 0 and str(out) in stdout
    assert len((out / "train.txt").read_text().splitlines()) == 2 and (out / "videos" / "val_00000.mp4").stat().st_size
    assert json.loads((out / "meta.json").read_text())["style"] == "smooth"


def test_data_synth_rejects_unknown_styles(tmp_path, capsys):
    code, _, err = run_main(["data", "synth", "--output_dir", str(tmp_path), "--style", "noise"], capsys)
    assert_one_line_error(code, err, "--style")


def test_data_synth_rejects_odd_sizes(tmp_path, capsys):
    code, _, err = run_main(["data", "synth", "--output_dir", str(tmp_path), "--size", "33"], capsys)
    assert_one_line_error(code, err, "--size")


def test_bench_lists_scripts(capsys):
    if not cli.bench_dir().is_dir():
        pytest.skip("bench/ is not part of this tree")
    code, out, _ = run_main(["bench"], capsys)
    listed = {ln.strip() for ln in out.splitlines()[1:]}
    assert code == 0 and "benchmarks" in out
    assert {"cost_model", "memory", "train_step", "triton_sm90a"} <= listed
    assert not {"nodriver", "fake_step", "peers", "gpu_tests"} & listed  # helper modules, nothing to run


def test_bench_takes_a_unique_prefix(capsys):
    """`videomae bench cost` is bench/cost_model.py (the name issue 21 gives it); an ambiguous prefix names all."""
    from videomae.commands import bench

    if not bench.bench_dir().is_dir():
        pytest.skip("bench/ is not part of this tree")
    found = bench.scripts()
    assert bench.resolve("cost", found) == "cost_model" and bench.resolve("memory", found) == "memory"
    assert bench.resolve("tr", found) is None and bench.resolve("nosuch", found) is None
    code, _, err = run_main(["bench", "tr"], capsys)
    assert_one_line_error(code, err, "ambiguous", "trace", "train_step", "triton_sm90a")


def test_data_prep_is_the_data_engineers_tool(capsys):
    import importlib.util

    if importlib.util.find_spec("videomae.data.prep") is None:
        pytest.skip("videomae/data/prep.py is not in this tree yet")
    with pytest.raises(SystemExit) as exc:
        cli.main(["data", "prep", "--help"])
    assert exc.value.code == 0 and "usage: videomae data prep" in capsys.readouterr().out


def test_each_subcommand_lives_in_its_own_module():
    from videomae.commands import SUBCOMMANDS

    names = [m.NAME for m in SUBCOMMANDS]
    assert names == ["pretrain", "finetune", "evaluate", "visualize", "extract", "predict", "export", "info", "bench",
                     "data"]
    for module in SUBCOMMANDS:
        assert module.__name__ == f"videomae.commands.{module.NAME}"
        assert callable(module.add_arguments) and callable(module.check) and callable(module.run)


# ---------------------------------------------------------------- typos, help, start-up


@pytest.mark.parametrize("argv, line", [
    (["pretrain", "--bacth_size", "4"], "videomae pretrain: unknown flag --bacth_size; did you mean --batch_size?"),
    (["finetune", "--layer-decy", "0.7"], "videomae finetune: unknown flag --layer-decy; did you mean --layer-decay?"),
    (["predict", "--chekpoint=x.pth"], "videomae predict: unknown flag --chekpoint; did you mean --checkpoint?"),
    (["data", "prep", "in.txt", "--wokers", "2"], "videomae data prep: unknown flag --wokers; did you mean --workers?"),
    (["export", "--zzzzzz"], "videomae export: unknown flag --zzzzzz (see videomae export --help)"),
])
def test_a_mistyped_flag_names_the_subcommand_and_the_closest_flag(argv, line, capsys):
    code, _, err = run_main(argv, capsys)
    assert code == 2 and err.strip() == line


def test_a_mistyped_config_key_gets_a_suggestion(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("bacth_size: 4\n")
    code, _, err = run_main(["pretrain", "--config", str(cfg)], capsys)
    assert_one_line_error(code, err, "'bacth_size'", "did you mean 'batch_size'?")


def _help_entries(parser):
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.option_strings and action.help:
            yield action, formatter._get_help_string(action) % {"default": action.default}


def test_every_default_is_printed_once(capsys):
    parser = cli.build_parser()
    seen = 0
    for name, sub in _subparsers(parser):
        subs = dict(_subparsers(sub)) or {name: sub}
        for tool, p in subs.items():
            for action, text in _help_entries(p):
                assert text.lower().count("default") <= 1, (tool, action.option_strings, text)
                seen += 1
    assert seen > 300  # every subcommand's flags were looked at
    # the value itself is printed where the help text does not say what the default is
    export = dict(_subparsers(parser))["export"]
    texts = {a.dest: t for a, t in _help_entries(export)}
    assert texts["input_size"] == "clip size in pixels (default: the weights', else 224)"
    assert texts["format"].endswith("(default: hf)")


def test_help_sets_examples_apart_from_the_prose(capsys):
    with pytest.raises(SystemExit):
        cli.main(["data", "prep", "--help"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    examples = [i for i, line in enumerate(lines) if line.startswith("    videomae data prep ")]
    assert len(examples) >= 2, out
    first = examples[0]
    assert lines[first - 1] == "" and lines[first - 2].strip() == "Examples:"  # a block of its own
    assert all(len(lines[i]) > 100 for i in examples[:1])  # kept whole, not wrapped into the text


def test_help_and_flag_errors_do_not_import_the_heavy_modules():
    """`videomae --help` and a mistyped flag parse without the models, the fused ops (Triton, torch.compile's
    machinery) or transformers; timing is measured by hand (see the report), this checks the imports."""
    code = ("import sys\nfrom videomae import cli\n"
            "for argv in (['--help'], ['pretrain', '--help'], ['pretrain', '--bacth_size', '4']):\n"
            "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n"
            "heavy = ('videomae.ops', 'videomae.models', 'triton', 'transformers', 'torch._inductor', 'timm')\n"
            "print(sorted(m for m in heavy if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_import_videomae_is_lazy_and_create_model_still_works():
    code = ("import sys, videomae\nprint('videomae.ops' in sys.modules)\n"
            "m = videomae.create_model('vit_tiny_patch16_224', num_classes=2, img_size=32, num_frames=4)\n"
            "print(type(m).__name__, callable(videomae.from_pretrained), videomae.masking.tube_mask.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "VisionTransformer", "True", "tube_mask"]


def test_a_command_that_fails_leaves_no_folder(tmp_path, capsys):
    """export, extract, predict and data prep: every failure before a result leaves the output folder unmade."""
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 100)
    weights = tmp_path / "w.pth"
    import torch

    import videomae

    model = videomae.create_model("vit_tiny_patch16_224", num_classes=2, img_size=32, num_frames=4)
    torch.save({"module": model.state_dict(), "args": {"model": "vit_tiny_patch16_224", "input_size": 32,
                                                       "num_frames": 4, "tubelet_size": 2}}, weights)
    cases = {
        "export": ["export", "--checkpoint", str(tmp_path / "missing.pth"), "--output", str(tmp_path / "export")],
        "extract": ["extract", str(tmp_path / "broken.mp4"), "--checkpoint", str(weights), "--output_dir",
                    str(tmp_path / "extract")],
        "predict": ["predict", str(tmp_path / "broken.mp4"), "--checkpoint", str(weights), "--output_dir",
                    str(tmp_path / "predict")],
        "data": ["data", "prep", str(tmp_path / "no_list.txt"), "--output_dir", str(tmp_path / "data")],
    }
    for name, argv in cases.items():
        code = cli.main(argv)
        err = capsys.readouterr().err
        assert code in (1, 2) and err.strip(), (name, err)
        assert not (tmp_path / name).exists(), name
