"""`videomae export`: weights to a Hugging Face model folder (that transformers loads) or a classifier to ONNX
(run against the eager model: onnxruntime when installed, else onnx's reference interpreter)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from videomae.commands import _common as c
from videomae.commands import runs

NAME = "export"
HELP = "weights to a Hugging Face folder (--format hf) or ONNX (--format onnx)"
DESCRIPTION = ("Export weights: `--format hf` writes config.json + model.safetensors that "
               "transformers.VideoMAEForPreTraining / VideoMAEForVideoClassification load; `--format onnx` writes "
               "a classifier's graph for a fixed clip shape [1, 3, T, S, S] and runs it against the eager model.")


def add_arguments(p) -> None:
    g = p.add_argument_group("export")
    c.flag(g, "--checkpoint", default=None, help="weights (any supported layout, or a Hugging Face folder)")
    c.flag(g, "--model", default=None, help="model name (default: the one stored with the weights)")
    c.flag(g, "--format", default="hf", choices=("hf", "onnx"), help="hf: a transformers model folder; onnx: a "
           ".onnx file")
    c.flag(g, "--output", default=None, help="output folder (hf) or file (onnx); default: next to the weights")
    c.flag(g, "--input_size", type=int, default=224, help="clip size in pixels (default: the weights')")
    c.flag(g, "--num_frames", type=int, default=16, help="frames per clip (default: the weights')")
    c.flag(g, "--tubelet_size", type=int, default=2, help="frames per cube (default: the weights')")
    c.flag(g, "--classes", default=None, help="class names for the HF config's id2label (one per line)")


def check(args) -> None:
    runs.check_weights(args, "checkpoint")
    kind = "pretrain" if _is_pretraining(args.checkpoint) else "vit"
    runs.model_from_weights(args, "checkpoint", kind)
    c.check_model(args, kind)
    c.check_geometry(args, c.model_patch_size(args.model))
    if args.classes is not None and not Path(args.classes).is_file():
        c.fail(args, f"--classes {args.classes}: no such file")
    if args.format == "onnx":
        import importlib.util

        if kind == "pretrain":
            c.fail(args, "--format onnx exports classifiers: the pretraining model's token selection depends on "
                   "its mask; use --format hf for pretraining weights")

        if importlib.util.find_spec("onnx") is None:
            c.fail(args, "--format onnx needs the onnx package (pip install onnx onnxscript)")
    if args.output is None:
        base = Path(args.checkpoint)
        base = base if base.is_dir() else base.with_suffix("")
        args.output = str(base.parent / (base.name + ("_hf" if args.format == "hf" else ".onnx")))
    if args.format == "hf" and Path(args.output).exists() and any(Path(args.output).iterdir()):
        c.fail(args, f"--output {args.output} exists and is not empty")


def _is_pretraining(path) -> bool:
    from videomae.checkpoint import read_checkpoint, unwrap

    sd = unwrap(read_checkpoint(path), str(path))
    return any(k.startswith(("decoder.", "encoder_to_decoder.")) for k in sd)


def build(args):
    from videomae.checkpoint import load_checkpoint, read_checkpoint, unwrap
    from videomae.interop.hf import hf_to_official, is_hf_state_dict
    from videomae.registry import create_model

    kw = dict(num_frames=args.num_frames, img_size=args.input_size, tubelet_size=args.tubelet_size)
    if args.model.startswith("vit"):
        sd = unwrap(read_checkpoint(args.checkpoint), str(args.checkpoint))
        sd = hf_to_official(sd)[0] if is_hf_state_dict(sd) else sd
        kw["num_classes"] = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    model = create_model(args.model, **kw)
    report = load_checkpoint(model, args.checkpoint)
    if report.missing:
        c.fail(args, f"--checkpoint {args.checkpoint} leaves {', '.join(report.missing[:3])} of {args.model} "
               "unset: export the weights of a complete model")
    return model.eval()


def hf_config(model, names: list[str] | None = None) -> dict:
    """The transformers VideoMAEConfig (as a dict) of one of our models."""
    pretraining = hasattr(model, "encoder")
    enc = model.encoder if pretraining else model
    block = enc.blocks[0]
    width = enc.patch_embed.proj.weight.shape[0]
    config = {
        "model_type": "videomae", "image_size": enc.grid[1] * enc.patch_embed.patch_size,
        "patch_size": enc.patch_embed.patch_size, "num_channels": enc.patch_embed.proj.weight.shape[1],
        "num_frames": enc.grid[0] * enc.patch_embed.tubelet_size, "tubelet_size": enc.patch_embed.tubelet_size,
        "hidden_size": width, "num_hidden_layers": len(enc.blocks), "num_attention_heads": block.attn.num_heads,
        "intermediate_size": block.mlp.fc1.out_features, "hidden_act": "gelu", "qkv_bias": True,
        "layer_norm_eps": block.norm1.eps, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
    }
    if pretraining:
        dec = model.decoder
        config.update(
            architectures=["VideoMAEForPreTraining"], use_mean_pooling=isinstance(enc.norm, torch.nn.Identity),
            decoder_hidden_size=dec.head.in_features, decoder_num_hidden_layers=len(dec.blocks),
            decoder_num_attention_heads=dec.blocks[0].attn.num_heads if len(dec.blocks) else 1,
            decoder_intermediate_size=dec.blocks[0].mlp.fc1.out_features if len(dec.blocks) else 0,
            norm_pix_loss=bool(model.normalize_target))
    else:
        names = names or [str(i) for i in range(model.num_classes)]
        config.update(architectures=["VideoMAEForVideoClassification"], use_mean_pooling=True,
                      id2label={str(i): n for i, n in enumerate(names)},
                      label2id={n: i for i, n in enumerate(names)})
    return config


def export_hf(model, out: Path, names: list[str] | None) -> list[str]:
    """-> notes. Through transformers when installed (its own save_pretrained, after a strict load)."""
    from safetensors.torch import save_file

    from videomae.interop.hf import HF_FIXED_NORM_EPS, official_to_hf

    config = hf_config(model, names)
    notes = []
    if abs(config["layer_norm_eps"] - HF_FIXED_NORM_EPS) > 0:
        notes.append(f"transformers builds fc_norm / decoder.norm with eps {HF_FIXED_NORM_EPS} (this model: "
                     f"{config['layer_norm_eps']}); outputs agree to about 1e-5, not bit for bit")
    sd = model.state_dict()
    try:
        import transformers
    except ImportError:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config, indent=1))
        save_file({k: v.contiguous() for k, v in official_to_hf(sd).items()}, str(out / "model.safetensors"),
                  metadata={"format": "pt"})
        return notes + ["transformers is not installed: wrote the current layout without loading it back"]
    cls = getattr(transformers, config["architectures"][0])
    hf = cls(transformers.VideoMAEConfig(**{k: v for k, v in config.items() if k != "model_type"}))
    layout = "new" if any(k.endswith("attention.attention.query.bias") for k in hf.state_dict()) else "old"
    hf.load_state_dict(official_to_hf(sd, layout=layout), strict=True)
    hf.save_pretrained(out)
    return notes


def export_onnx(model, path: Path, args) -> list[str]:
    clip = torch.randn(1, 3, args.num_frames, args.input_size, args.input_size,
                       generator=torch.Generator().manual_seed(0))
    inputs, names = (clip,), ["videos"]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, inputs, str(path), input_names=names, output_names=["output"])
    with torch.no_grad():
        want = model(*inputs).float()
    feeds = {n: t.numpy() for n, t in zip(names, inputs)}
    try:
        import onnxruntime

        runner = "onnxruntime"
        got = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    except ImportError:  # onnx's own reference interpreter: slow, but needs nothing more
        from onnx.reference import ReferenceEvaluator

        runner = "onnx.reference (onnxruntime is not installed)"
        got = ReferenceEvaluator(str(path)).run(None, feeds)[0]
    err = (torch.from_numpy(got).float() - want).abs().max().item() / max(want.abs().max().item(), 1e-12)
    if err > 1e-4:
        raise ValueError(f"{path}: {runner} computes outputs {err:.2e} (relative max) away from the eager model")
    return [f"ran the graph with {runner}: relative max error {err:.1e} against the eager model"]


def run(args) -> int:
    model = build(args)
    names = None
    if args.classes:
        names = [n.strip() for n in Path(args.classes).read_text().splitlines() if n.strip()]
    out = Path(args.output)
    notes = export_hf(model, out, names) if args.format == "hf" else export_onnx(model, out, args)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {out}")
    return 0
