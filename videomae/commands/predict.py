"""`videomae predict`: a fine-tuned classifier on a video, a folder or a list: top-k classes per video, the
softmax averaged over sliding windows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from videomae.commands import _common as c
from videomae.commands import _video

NAME = "predict"
USAGE = "%(prog)s VIDEO [VIDEO ...] --checkpoint WEIGHTS [flags]"
HELP = "top-k classes per video with a fine-tuned classifier (sliding-window averaging)"
DESCRIPTION = ("Classify videos: softmax of every window averaged per video; prints the top-k classes and writes "
               "predictions.json.")


def add_arguments(p) -> None:
    _video.add_video_arguments(p)
    g = p.add_argument_group("output")
    c.flag(g, "--top_k", type=int, default=5, help="classes shown per video")
    c.flag(g, "--classes", default=None, help="class names, one per line (default: classes.txt beside the "
           "weights or beside the training list stored with them; else the class numbers)")


def check(args) -> None:
    _video.check_video_arguments(args)
    c.check_positive(args, "top_k")
    if args.classes is not None and not Path(args.classes).is_file():
        c.fail(args, f"--classes {args.classes}: no such file")


def class_names(args, num_classes: int) -> list[str]:
    """--classes, else a Hugging Face folder's id2label, else classes.txt beside the weights or their training list."""
    from videomae.checkpoint import stored_args

    if not args.classes and Path(args.checkpoint, "config.json").is_file():
        from videomae.interop.pretrained import read_hf_config

        labels = read_hf_config(args.checkpoint).get("id2label") or {}
        if len(labels) == num_classes:
            return [str(labels[k]) for k in sorted(labels, key=int)]

    candidates = [Path(args.classes)] if args.classes else [Path(args.checkpoint).parent / "classes.txt"]
    data_path = stored_args(args.checkpoint).get("data_path")
    if not args.classes and isinstance(data_path, str):
        folder = Path(data_path) if Path(data_path).is_dir() else Path(data_path).parent
        candidates.append(folder / "classes.txt")
    for path in candidates:
        if path.is_file():
            names = [n.strip() for n in path.read_text().splitlines() if n.strip()]
            return names + [str(i) for i in range(len(names), num_classes)]
    return [str(i) for i in range(num_classes)]


@torch.no_grad()
def video_scores(model, clips: torch.Tensor, batch_size: int) -> torch.Tensor:
    """clips [W, 3, T, S, S] -> class probabilities averaged over the windows [C] (fp64)."""
    device = next(model.parameters()).device
    probs = [model(clips[i:i + batch_size].to(device)).float().softmax(dim=-1).double().cpu()
             for i in range(0, len(clips), batch_size)]
    return torch.cat(probs).mean(dim=0)


def run(args) -> int:
    from videomae.data.decode import VideoReadError

    model, _ = _video.classifier(args)
    if model.num_classes < 1:
        c.fail(args, f"--checkpoint {args.checkpoint} has no classification head (pretraining weights?): "
               "fine-tune first, or use `videomae extract` for features")
    names = class_names(args, model.num_classes)
    k = min(args.top_k, model.num_classes)
    results = []
    for path in args.videos:
        try:
            clips, starts = _video.read_windows(path, args)
        except VideoReadError as err:
            print(f"skipped {path}: {err.reason}")
            continue
        scores = video_scores(model, clips, args.batch_size)
        top = scores.topk(k)
        best = [{"class": names[i], "index": int(i), "probability": float(p)} for p, i in zip(top.values, top.indices)]
        results.append({"path": path, "windows": len(starts), "top": best})
        print(f"{path}: " + ", ".join(f"{b['class']} {b['probability']:.3f}" for b in best))
    if not results:
        print(f"no predictions: none of the {len(args.videos)} videos could be read", file=sys.stderr)
        return 1
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.json").write_text(json.dumps({"checkpoint": str(args.checkpoint), "model": args.model,
                                                      "videos": results}, indent=1))
    print(f"wrote {out / 'predictions.json'}")
    return 0
