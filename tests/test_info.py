"""`videomae info` reads the one dispatcher (fused ops and attention) and the training step's report; a broken
piece becomes a line in the report, never a crash."""

from __future__ import annotations

import json

import pytest
import torch

from videomae import dispatch, info

OPS = {"cube_embed", "decoder_input", "norm_pix_mse", "add_layer_norm"}
ATTENTION = {"flash-attn", "sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "xformers", "sdpa-math", "sdpa-default",
             "eager"}


def test_fused_ops_report_each_op_on_each_backend_with_reasons(monkeypatch):
    monkeypatch.setenv("VIDEOMAE_BACKEND", "torch")
    monkeypatch.setitem(dispatch._SWITCH, "ops", None)
    ops = info.fused_ops()
    assert ops["switch"] == "torch" and ops["env"] == "VIDEOMAE_BACKEND"
    assert set(ops["report"]) == OPS
    for op, per_backend in ops["report"].items():
        assert set(per_backend) == {"cuda", "triton", "torch"}, op
        assert per_backend["torch"] == {"available": True, "reasons": []}  # the eager path runs everywhere
        for name, entry in per_backend.items():
            assert bool(entry["reasons"]) != entry["available"], (op, name, entry)  # unavailable <=> a reason
        if not torch.cuda.is_available():
            assert per_backend["cuda"]["available"] is False


def test_attention_report_lists_every_backend_and_auto_picks_a_runnable_one():
    attn = info.attention()
    assert attn["env"] == "VIDEOMAE_ATTN" and set(attn["backends"]) == ATTENTION
    for role in ("encoder", "decoder"):
        assert attn["backends"][attn["auto"][role]][role]["available"], role
        assert attn["backends"]["eager"][role] == {"available": True, "reasons": []}


def test_bad_env_var_is_reported_not_raised(monkeypatch):
    monkeypatch.setenv("VIDEOMAE_BACKEND", "fast")
    monkeypatch.setitem(dispatch._SWITCH, "ops", None)
    ops = info.fused_ops()
    assert ops["switch"].startswith("invalid: VIDEOMAE_BACKEND must be one of")
    assert "switch invalid" in info.format_report({**info.collect(), "fused ops": ops})


@pytest.mark.skipif(torch.cuda.is_available(), reason="the expected values are a CPU's")
def test_fast_path_shows_the_step_switches_resolved_for_a_cpu():
    r = info.fast_path()
    assert r["source"] == "videomae.train.step.step_report"
    # The CLI's defaults on a CPU, written out: auto precision is fp32 there, and compile is off off CUDA.
    assert r["config"] == {"precision": "fp32", "ops_backend": "auto", "attention": "auto", "fused_adamw": True,
                           "compile": False, "compile_mode": None, "compile_backend": "inductor",
                           "cuda_graphs": False, "checkpoint": False, "recompute": "auto", "tf32": True}
    assert "attention" not in r  # shown in its own section
    text = info.format_report({**info.collect(), "fast path": r})
    assert "fp32" in text and "compile here" in text


def test_fast_path_missing_is_one_line(monkeypatch):
    monkeypatch.setattr(info, "STEP_REPORT", ("videomae.no_such_module", "step_report"))
    r = info.fast_path()
    assert r["error"].startswith("no training step report: videomae.no_such_module.step_report: ")
    assert r["error"] in info.format_report({**info.collect(), "fast path": r})


def test_json_report_round_trips(capsys):
    assert info.main(as_json=True) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"versions", "devices", "backends", "fused ops", "attention", "fast path"} <= set(report)
    assert report["fused ops"]["report"].keys() == {"cube_embed", "decoder_input", "norm_pix_mse", "add_layer_norm"}


def test_layout_names_the_folder_each_kernel_family_lives_in():
    """`videomae.kernels` is the design's kernels/ folder, one Triton file per op, whatever the install."""
    from pathlib import Path

    report = info.layout()
    folder = Path(report["Triton kernels"].split(" = ", 1)[1])
    assert folder.name == "kernels" and OPS <= {p.stem for p in folder.glob("*.py")}
    assert report["CUDA kernels"].startswith(("videomae._C = ", "videomae._C not built"))
