"""Multi-view evaluation (softmax averaged over test_num_segment x test_num_crop views per video): the validation
pass of `videomae finetune`, its final test, and `videomae evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from videomae.train import distributed
from videomae.train.classifier import build_classifier, class_names, make_dataset, split_list
from videomae.train.plots import confusion_matrix
from videomae.train.run import Run
from videomae.train.step import Precision, resolve_precision


@torch.no_grad()
def evaluate(model, dataset, args, device: torch.device, precision: Precision, info) -> dict:
    """-> {'top1', 'top5', 'num_videos', 'views', 'scores' [V, C], 'labels' [V]} over the whole dataset.

    `model` is the bare module, not the DDP wrapper: DDP would sync buffers in every forward. Every rank runs
    the same number of batches (FSDP2 gathers weights in each forward): the loader pads short shards by
    wrap-around, and only the first `sampler.real` items of each rank count."""
    from videomae.data.loader import build_loader

    num_videos = len(dataset.records)
    loader = build_loader(dataset, args.batch_size, num_workers=args.num_workers, shuffle=False, drop_last=False,
                          rank=info.rank, num_replicas=info.world_size)
    real_items = loader.sampler.real
    model.eval()
    scores = torch.zeros(num_videos, model.num_classes, dtype=torch.float64, device=device)
    counts = torch.zeros(num_videos, dtype=torch.float64, device=device)
    seen = 0
    for clips, _, video in loader:
        with precision.autocast():
            logits = model(clips.to(device, non_blocking=True))
        probs = logits.float().softmax(dim=-1).double()
        real = (torch.arange(seen, seen + len(video)) < real_items).to(device)  # padding counts nothing
        seen += len(video)
        video = video.to(device)
        scores.index_add_(0, video, probs * real.unsqueeze(1))
        counts.index_add_(0, video, real.double())
    model.train()
    distributed.all_reduce_sum(scores)
    distributed.all_reduce_sum(counts)
    scores = (scores / counts.clamp(min=1).unsqueeze(1)).cpu()
    labels = torch.tensor([r.label for r in dataset.records])
    return {**accuracy(scores, labels), "scores": scores, "labels": labels, "num_videos": num_videos,
            "views": dataset.num_views}


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> dict:
    """Video-level top-1 / top-5 in percent (top-5 = top-k with k = min(5, classes))."""
    k = min(5, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    hit = top == labels.unsqueeze(1)
    return {"top1": float(hit[:, 0].float().mean() * 100), "top5": float(hit.any(dim=1).float().mean() * 100)}


def per_class(scores: torch.Tensor, labels: torch.Tensor, names: list[str]) -> tuple[dict, np.ndarray]:
    """-> ({class: accuracy % or None if absent}, confusion matrix [true, predicted])."""
    k = scores.shape[1]
    pred = scores.argmax(dim=1)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (labels.numpy(), pred.numpy()), 1)
    rows = matrix.sum(axis=1)
    acc = {names[i] if i < len(names) else str(i): (float(matrix[i, i] / rows[i] * 100) if rows[i] else None)
           for i in range(k)}
    return acc, matrix


def write_report(result: dict, names: list[str], output_dir: Path, tag: str = "eval") -> tuple[Path, Path]:
    acc, matrix = per_class(result["scores"], result["labels"], names)
    report = {"top1": result["top1"], "top5": result["top5"], "num_videos": result["num_videos"],
              "views_per_video": result["views"], "per_class_top1": acc, "confusion_matrix": matrix.tolist(),
              "class_names": names}
    output_dir.mkdir(parents=True, exist_ok=True)
    js = output_dir / f"{tag}.json"
    js.write_text(json.dumps(report, indent=1))
    png = confusion_matrix(matrix, [names[i] if i < len(names) else str(i) for i in range(matrix.shape[0])],
                           output_dir / "confusion_matrix.png")
    return js, png


def say_result(run: Run, result: dict, names: list[str]) -> None:
    acc, _ = per_class(result["scores"], result["labels"], names)
    worst = sorted(((v, k) for k, v in acc.items() if v is not None))[:3]
    run.say(f"{result['num_videos']} videos x {result['views']} views: top-1 {result['top1']:.2f}%  "
            f"top-5 {result['top5']:.2f}%  (weakest classes: " + ", ".join(f"{k} {v:.0f}%" for v, k in worst) + ")")


def head_classes(checkpoint: str) -> int | None:
    """The class count of a classifier checkpoint's head (None: it has no head)."""
    from videomae.checkpoint import read_checkpoint, unwrap

    head = unwrap(read_checkpoint(checkpoint), checkpoint).get("head.weight")
    return int(head.shape[0]) if head is not None else None


def run_evaluation(args) -> Path:
    """`videomae evaluate` (and the official `--eval`/`--validation`): the output folder is made only when the
    report is written, so a failure before leaves none."""
    from videomae.checkpoint import load_checkpoint

    with Run.start(args) as run:
        test_list = split_list(args.data_path, getattr(args, "eval_split", "test"))
        dataset = make_dataset(args, test_list, "test")
        labels = [r.label for r in dataset.records]
        num_classes = args.nb_classes or head_classes(args.checkpoint) or len(class_names(test_list, labels, None))
        names = class_names(test_list, labels, num_classes)
        args.drop_path, args.fc_drop_rate, args.init_scale, args.use_checkpoint = 0.0, 0.0, 0.001, False
        model = build_classifier(args, num_classes, args.checkpoint)
        report = load_checkpoint(model, args.checkpoint)
        if report.missing:
            raise ValueError(f"{args.checkpoint} does not fit {args.model}: missing {', '.join(report.missing[:4])}")
        model = model.to(run.device)
        if args.compile:
            model = torch.compile(model)
        precision = Precision(resolve_precision(args.precision, run.device), run.device)
        run.say(f"evaluating {args.checkpoint} ({args.model}, {num_classes} classes) on {test_list}")
        result = evaluate(model, dataset, args, run.device, precision, run.info)
        if run.info.is_main:
            say_result(run, result, names)
            js, png = write_report(result, names, run.output_dir)
            run.say(f"wrote:\n  {js}\n  {png}")
    return run.output_dir
