"""`videomae info` reads the one dispatcher (fused ops and attention) and the training step's report; a broken
piece becomes a line in the report, never a crash."""

from __future__ import annotations

import json

from videomae import dispatch, info


def test_fused_ops_and_attention_come_from_the_dispatcher(monkeypatch):
    monkeypatch.setenv("VIDEOMAE_BACKEND", "torch")
    monkeypatch.setitem(dispatch._SWITCH, "ops", None)
    ops = info.fused_ops()
    assert ops["switch"] == "torch" and ops["env"] == "VIDEOMAE_BACKEND"
    assert ops["report"] == dispatch.backend_report("ops")
    assert ops["report"]["cube_embed"]["torch"] == {"available": True, "reasons": []}
    attn = info.attention()
    assert attn["env"] == "VIDEOMAE_ATTN" and set(attn["backends"]) == set(dispatch.registered("attention"))
    assert attn["auto"]["decoder"] in dispatch.registered("attention")


def test_bad_env_var_is_reported_not_raised(monkeypatch):
    monkeypatch.setenv("VIDEOMAE_BACKEND", "fast")
    monkeypatch.setitem(dispatch._SWITCH, "ops", None)
    ops = info.fused_ops()
    assert ops["switch"].startswith("invalid: VIDEOMAE_BACKEND must be one of")
    assert "switch invalid" in info.format_report({**info.collect(), "fused ops": ops})


def test_fast_path_shows_the_trainers_switches(monkeypatch):
    import types

    base = info.collect()
    report = {"config": {"precision": "bf16"}, "compile": "available", "attention": {"dropped": True}}
    engine = types.SimpleNamespace(step_report=lambda: dict(report))
    monkeypatch.setattr(info.importlib, "import_module", {"videomae.train.engine": engine}.__getitem__)
    r = info.fast_path()
    assert r == {"source": "videomae.train.engine.step_report", "config": {"precision": "bf16"},
                 "compile": "available"}  # attention has its own section
    text = info.format_report({**base, "fast path": r})
    assert "bf16" in text and "compile here" in text


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
