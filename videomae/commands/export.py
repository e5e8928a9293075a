"""`videomae export`: weights to a Hugging Face model folder that transformers' tools open (`from_pretrained`,
`pipeline("video-classification")`), or a classifier to ONNX with a dynamic batch axis (run against the eager model:
onnxruntime when installed, else onnx's reference interpreter)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from videomae.commands import _common as c
from videomae.commands import runs

NAME = "export"
HELP = "weights to a Hugging Face folder (--format hf) or ONNX (--format onnx)"
DESCRIPTION = ("Export weights. `--format hf` writes config.json (with the class names), preprocessor_config.json "
               "(frames, short-side resize, center crop, ImageNet mean and std) and model.safetensors: transformers' "
               "VideoMAEForPreTraining / VideoMAEForVideoClassification and pipeline('video-classification') open "
               "the folder. `--format onnx` writes a classifier's graph for clips [batch, 3, T, S, S] with a dynamic "
               "batch axis, in one .onnx file (and a .onnx.data file beside it only when the weights exceed "
               "ONNX's 2 GB limit; both are named), and runs it against the eager model.")
# ONNX keeps the graph in one protobuf of at most 2 GB; larger weights must go to an external data file.
ONNX_INLINE_LIMIT = 1_800_000_000


def add_arguments(p) -> None:
    g = p.add_argument_group("export")
    c.flag(g, "--checkpoint", default=None, help="weights (any supported layout, a Hugging Face folder or Hub id)")
    c.flag(g, "--model", default=None, help="model name (default: the one stored with the weights)")
    c.flag(g, "--format", default="hf", choices=("hf", "onnx"), help="hf: a transformers model folder; onnx: a "
           ".onnx file")
    c.flag(g, "--output", default=None, help="output folder (hf) or file (onnx); default: next to the weights")
    c.flag(g, "--input_size", type=int, default=224, help="clip size in pixels (default: the weights', else 224)")
    c.flag(g, "--num_frames", type=int, default=16, help="frames per clip (default: the weights', else 16)")
    c.flag(g, "--tubelet_size", type=int, default=2, help="frames per cube (default: the weights', else 2)")
    c.flag(g, "--classes", default=None, help="class names for the HF config's id2label (one per line; default: "
           "classes.txt beside the weights, else the class numbers)")


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
    out = Path(args.output)
    if args.format == "hf" and out.exists() and (not out.is_dir() or any(out.iterdir())):
        c.fail(args, f"--output {args.output} exists and is not an empty folder")
    if args.format == "onnx" and out.is_dir():
        c.fail(args, f"--output {args.output} is a folder; --format onnx writes a file")


def _is_pretraining(path) -> bool:
    from videomae.checkpoint import read_checkpoint, unwrap

    sd = unwrap(read_checkpoint(path), str(path))
    return any(k.startswith(("decoder.", "encoder_to_decoder.", "decoder.decoder_layers.")) for k in sd)


def build(args):
    from videomae.checkpoint import load_checkpoint, read_checkpoint, unwrap
    from videomae.interop.hf import hf_to_official, is_hf_state_dict
    from videomae.interop.pretrained import build_for_weights

    kw = dict(num_frames=args.num_frames, img_size=args.input_size, tubelet_size=args.tubelet_size)
    if args.model.startswith("vit"):
        sd = unwrap(read_checkpoint(args.checkpoint), str(args.checkpoint))
        sd = hf_to_official(sd)[0] if is_hf_state_dict(sd) else sd
        kw["num_classes"] = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    model = build_for_weights(args.checkpoint, args.model, given=args._explicit, **kw)
    report = load_checkpoint(model, args.checkpoint)
    if report.missing:
        c.fail(args, f"--checkpoint {args.checkpoint} leaves {', '.join(report.missing[:3])} of {args.model} "
               "unset: export the weights of a complete model")
    return model.eval()


def class_names(args, num_classes: int) -> list[str] | None:
    """--classes, else classes.txt beside the weights (as fine-tuning writes it); None: the class numbers."""
    path = Path(args.classes) if args.classes else Path(args.checkpoint).parent / "classes.txt"
    if not path.is_file() or num_classes < 1:
        return None
    names = [n.strip() for n in path.read_text().splitlines() if n.strip()]
    return (names + [str(i) for i in range(len(names), num_classes)])[:num_classes]


def export_hf(model, out: Path, names: list[str] | None, args) -> list[str]:
    """Writes config.json, preprocessor_config.json and model.safetensors (+ its .sha256) into a new folder,
    whole or not at all. -> notes. With transformers installed, the weights are first loaded strictly into its
    model class (the keys and shapes it expects; its attention bias names, which changed across versions)."""
    from safetensors.torch import save

    from videomae import integrity
    from videomae.constants import IMAGENET_MEAN, IMAGENET_STD
    from videomae.interop.hf import HF_FIXED_NORM_EPS, hf_config, official_to_hf, preprocessor_config

    config = hf_config(model, names)
    notes = []
    if abs(config["layer_norm_eps"] - HF_FIXED_NORM_EPS) > 0:
        notes.append(f"transformers builds fc_norm / decoder.norm with eps {HF_FIXED_NORM_EPS} (this model: "
                     f"{config['layer_norm_eps']}); outputs agree to about 1e-5, not bit for bit")
    sd = official_to_hf(model.state_dict())
    try:
        import transformers
    except ImportError:
        notes.append("transformers is not installed: wrote its current layout without loading it back")
    else:
        hf = getattr(transformers, config["architectures"][0])(
            transformers.VideoMAEConfig(**{k: v for k, v in config.items() if k != "model_type"}))
        theirs = hf.state_dict()
        layout = "new" if any(k.endswith("attention.attention.query.bias") for k in theirs) else "old"
        key_bias = any(k.endswith("attention.attention.key.bias") for k in theirs)
        sd = official_to_hf(model.state_dict(), layout=layout, key_bias=key_bias)
        hf.load_state_dict(sd, strict=True)
    size = config["image_size"]
    files = {
        "config.json": json.dumps(config, indent=1) + "\n",
        "preprocessor_config.json": json.dumps(
            preprocessor_config(size, config["num_frames"], IMAGENET_MEAN, IMAGENET_STD), indent=1) + "\n",
    }
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.mkdir(parents=True)
        for name, text in files.items():
            integrity.write_atomic(tmp / name, lambda f, t=text: f.write(t.encode()), sidecar_too=False)
        data = save({k: v.detach().contiguous() for k, v in sd.items()}, metadata={"format": "pt"})
        integrity.write_atomic(tmp / "model.safetensors", lambda f: f.write(data))
        if out.is_dir():
            out.rmdir()  # empty (checked): the folder appears complete in one rename
        os.replace(tmp, out)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        cause = integrity.storage_error(err)
        if cause is None or isinstance(err, integrity.WriteFailed):
            raise
        raise integrity.WriteFailed(cause.errno, cause.strerror, str(cause.filename or out)) from err
    return notes


def export_onnx(model, path: Path, args) -> tuple[list[Path], list[str]]:
    """-> (the files written, notes). A dynamic batch axis; the weights inline unless they exceed ONNX's limit."""
    import tempfile

    from videomae import integrity

    clip = torch.randn(2, 3, args.num_frames, args.input_size, args.input_size,
                       generator=torch.Generator().manual_seed(0))
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    inline = weight_bytes < ONNX_INLINE_LIMIT
    batch = torch.export.Dim("batch", min=1, max=4096)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.tmp-") as tmp:
        staged = Path(tmp) / path.name
        torch.onnx.export(model, (clip,), str(staged), input_names=["videos"], output_names=["logits"],
                          dynamic_shapes=({0: batch},), external_data=not inline, verbose=False)
        runner, err = _check_onnx(model, staged, args)
        written = []
        try:
            for file in sorted(Path(tmp).iterdir()):  # the graph, and its external data when there is one
                os.replace(file, path.parent / file.name)
                written.append(path.parent / file.name)
        except OSError as e:
            raise integrity.WriteFailed(e.errno, e.strerror, str(path)) from e
    notes = [f"ran the graph with {runner} at batch 1 and 3: relative max error {err:.1e} against the eager model"]
    if not inline:
        notes.append(f"the weights ({weight_bytes / 1e9:.1f} GB) exceed ONNX's 2 GB protobuf limit: they are in "
                     f"{written[-1].name}, which must stay beside {path.name}")
    return written, notes


def _check_onnx(model, path: Path, args) -> tuple[str, float]:
    """The exported graph against the eager model at two batch sizes other than the traced one."""
    try:
        import onnxruntime

        runner = "onnxruntime"
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        run = lambda feeds: session.run(None, feeds)[0]  # noqa: E731
    except ImportError:  # onnx's own reference interpreter: slow, but needs nothing more
        from onnx.reference import ReferenceEvaluator

        runner = "onnx.reference (onnxruntime is not installed)"
        evaluator = ReferenceEvaluator(str(path))
        run = lambda feeds: evaluator.run(None, feeds)[0]  # noqa: E731
    worst = 0.0
    for batch in (1, 3):
        clips = torch.randn(batch, 3, args.num_frames, args.input_size, args.input_size,
                            generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = model(clips).float()
        got = torch.from_numpy(run({"videos": clips.numpy()})).float()
        if got.shape != want.shape:
            raise ValueError(f"{path}: {runner} gives shape {list(got.shape)} for a batch of {batch}, the eager "
                             f"model {list(want.shape)}")
        worst = max(worst, (got - want).abs().max().item() / max(want.abs().max().item(), 1e-12))
    if worst > 1e-4:
        raise ValueError(f"{path}: {runner} computes outputs {worst:.2e} (relative max) away from the eager model")
    return runner, worst


def run(args) -> int:
    model = build(args)
    out = Path(args.output)
    if args.format == "hf":
        names = class_names(args, getattr(model, "num_classes", 0)) if not hasattr(model, "encoder") else None
        notes, written = export_hf(model, out, names, args), [out]
    else:
        written, notes = export_onnx(model, out, args)
    for note in notes:
        print(f"note: {note}")
    print("wrote " + ", ".join(map(str, written)))
    return 0
