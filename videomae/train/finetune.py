"""`videomae finetune` and `videomae evaluate`: supervised fine-tuning with the official recipe and
multi-view evaluation (softmax averaged over test_num_segment x test_num_crop views per video)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from videomae.train import distributed
from videomae.train.data import EpochSampler, make_loader
from videomae.train.engine import (
    Position,
    Precision,
    StepConfig,
    Trainer,
    apply_config,
    build_objective,
    make_optimizer,
    resolve_precision,
)
from videomae.train.plots import confusion_matrix, training_curves
from videomae.train.run import (
    CheckpointWriter,
    Setup,
    export_weights,
    loop,
    open_log,
    restore,
    resume_path,
    save_args,
    seed_everything,
    setup,
    start_fresh,
)
from videomae.train.schedule import cosine_schedule, scaled_lr

SPLITS = {"train": ("train",), "val": ("val",), "test": ("test", "val")}


# ---------------------------------------------------------------- data


def split_list(data_path: str, split: str) -> Path:
    """A list file is used as given; a folder holds `train`/`val`/`test` lists (.txt or official .csv)."""
    path = Path(data_path)
    if path.is_file():
        return path
    for name in SPLITS[split]:
        for ext in (".txt", ".csv"):
            if (path / f"{name}{ext}").is_file():
                return path / f"{name}{ext}"
    raise FileNotFoundError(f"{data_path}: no {' or '.join(SPLITS[split])} list (.txt or .csv) in this folder")


def class_names(list_file: Path, labels: list[int], nb_classes: int | None) -> list[str]:
    """classes.txt beside the list file when present, else the label numbers."""
    names_file = list_file.parent / "classes.txt"
    if names_file.is_file():
        names = [n.strip() for n in names_file.read_text().splitlines() if n.strip()]
    else:
        names = [str(i) for i in range(max(labels) + 1)]
    if nb_classes is not None:
        names = (names + [str(i) for i in range(len(names), nb_classes)])[:nb_classes]
    return names


def make_dataset(args, list_file: Path, mode: str):
    from videomae.data.datasets import FinetuneDataset
    from videomae.data.lists import load_records
    from videomae.data.skips import SkipLog

    records = load_records(list_file, root=args.data_root, fmt=args.list_format)
    extra = {}
    if mode == "train":
        extra = dict(flip=args.flip, rand_augment=None if args.aa in ("none", "") else args.aa, reprob=args.reprob)
    return FinetuneDataset(
        records, mode=mode, num_frames=args.num_frames, sampling_rate=args.sampling_rate, sampling=args.sampling,
        input_size=args.input_size, short_side_size=args.short_side_size, test_num_segment=args.test_num_segment,
        test_num_crop=args.test_num_crop, seed=args.seed, backend=args.video_backend, skip_log=SkipLog(), **extra,
    )


class ShardSampler(Sampler[int]):
    """Evaluation order: index i on rank i % world. Every rank runs the same number of batches (FSDP2
    gathers weights in each forward), so short shards are padded; the first `real` indices count."""

    def __init__(self, size: int, rank: int, world_size: int):
        self.indices = list(range(rank, size, world_size))
        self.real = len(self.indices)
        self.indices += [0] * (math.ceil(size / world_size) - self.real)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model, dataset, args, device: torch.device, precision: Precision, info) -> dict:
    """-> {'top1', 'top5', 'num_videos', 'views', 'scores' [V, C], 'labels' [V]} over the whole dataset.

    `model` is the bare module, not the DDP wrapper: DDP would sync buffers in every forward."""
    num_videos = len(dataset.records)
    sampler = ShardSampler(len(dataset), info.rank, info.world_size)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.num_workers,
                        collate_fn=_collate)
    model.eval()
    scores = torch.zeros(num_videos, model.num_classes, dtype=torch.float64, device=device)
    counts = torch.zeros(num_videos, dtype=torch.float64, device=device)
    seen = 0
    for clips, _, video in loader:
        with precision.autocast():
            logits = model(clips.to(device, non_blocking=True))
        probs = logits.float().softmax(dim=-1).double()
        real = (torch.arange(seen, seen + len(video)) < sampler.real).to(device)  # padding counts nothing
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
    js = output_dir / f"{tag}.json"
    js.write_text(json.dumps(report, indent=1))
    png = confusion_matrix(matrix, [names[i] if i < len(names) else str(i) for i in range(matrix.shape[0])],
                           output_dir / "confusion_matrix.png")
    return js, png


def _collate(batch):
    clips, labels, videos = zip(*batch)
    return torch.stack(clips), torch.tensor(labels), torch.tensor(videos)


def _say_eval(s: Setup, result: dict, names: list[str]) -> None:
    acc, _ = per_class(result["scores"], result["labels"], names)
    worst = sorted(((v, k) for k, v in acc.items() if v is not None))[:3]
    s.say(f"{result['num_videos']} videos x {result['views']} views: top-1 {result['top1']:.2f}%  "
          f"top-5 {result['top5']:.2f}%  (weakest classes: "
          + ", ".join(f"{k} {v:.0f}%" for v, k in worst) + ")")


# ---------------------------------------------------------------- fine-tuning


def build_classifier(args, num_classes: int, weights=None):
    from videomae.interop.pretrained import build_for_weights  # an HF folder / Hub id: its config's model

    return build_for_weights(
        weights, args.model, given=getattr(args, "_explicit", None), num_classes=num_classes,
        num_frames=args.num_frames, img_size=args.input_size,
        tubelet_size=args.tubelet_size, drop_path_rate=args.drop_path, fc_drop_rate=args.fc_drop_rate,
        init_scale=args.init_scale, use_checkpoint=args.use_checkpoint,
        drop_rate=getattr(args, "drop_rate", 0.0), attn_drop_rate=getattr(args, "attn_drop_rate", 0.0),
    )


def run(args) -> Path:
    s = setup(args)
    train_list = split_list(args.data_path, "train")
    train_set = make_dataset(args, train_list, "train")
    labels = [r.label for r in train_set.records]
    num_classes = args.nb_classes or len(class_names(train_list, labels, None))
    names = class_names(train_list, labels, num_classes)

    seed_everything(args.seed)
    model = build_classifier(args, num_classes, args.finetune)
    if args.finetune:
        from videomae.checkpoint import load_checkpoint

        report = load_checkpoint(model, args.finetune)
        s.say(f"initialized from {report}")
    model = model.to(s.device)
    seed_everything(args.seed + s.info.rank)
    config = StepConfig.from_args(args).resolve(s.device, pretraining=False)
    args.step = config.as_dict()  # the switches in force, resolved for this device: into args.json
    precision = Precision(config.precision, s.device)

    world = s.info.world_size
    sampler = EpochSampler(len(train_set), s.info, seed=args.seed, shuffle=True)
    steps_per_epoch = sampler.per_rank // args.batch_size // args.accum_iter
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_set)} videos make no full step of --batch_size {args.batch_size} x "
                         f"--accum_iter {args.accum_iter} x {world} process(es)")
    total_batch = args.batch_size * args.accum_iter * world
    lr, min_lr = scaled_lr(args.lr, total_batch), scaled_lr(args.min_lr, total_batch)
    lr_schedule = cosine_schedule(lr, min_lr, args.epochs, steps_per_epoch, args.warmup_epochs,
                                  warmup_steps=args.warmup_steps)
    wd_schedule = cosine_schedule(args.weight_decay, args.weight_decay_end, args.epochs, steps_per_epoch) \
        if args.weight_decay_end is not None else None

    core = model
    apply_config(core, config)
    model = distributed.wrap(model, s.info, s.device, fsdp=args.fsdp)
    optimizer = make_optimizer(core, lr, args.weight_decay, betas=args.opt_betas or (0.9, 0.999), eps=args.opt_eps,
                               layer_decay=args.layer_decay, config=config)
    mixing = args.mixup > 0 or args.cutmix > 0
    from videomae.data.feed import DeviceFeed

    feed = DeviceFeed(s.device, args.input_size)  # side-stream copy from pinned memory (the workers crop)

    def prepare(batch):
        """A loader batch -> (clips, target) on the device, mixed, outside the step; target is soft when mixing."""
        from videomae.data.transforms import mixup_cutmix

        clips, target, video = batch
        clips, target = feed((clips, target))
        if not mixing:
            return clips, target
        # A pure function of (seed, epoch, the batch's videos): resumed runs mix the same way.
        rng = np.random.default_rng([args.seed, train_set.epoch, *video.tolist()])
        return mixup_cutmix(clips, target, num_classes, rng, args.mixup, args.cutmix, args.mixup_switch_prob,
                            args.mixup_prob, args.smoothing)

    forward = build_objective(model, config, model)  # compiled forward with --compile

    def objective(batch):
        clips, target = batch
        logits = forward(clips).float()
        if mixing:
            loss = torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
        else:
            loss = F.cross_entropy(logits, target, label_smoothing=args.smoothing)
        return loss, clips.shape[0]

    trainer = Trainer(model, optimizer, lr_schedule, wd_schedule, precision, accum_iter=args.accum_iter,
                      clip_grad=args.clip_grad, max_skipped=args.max_skipped_steps, max_steps=args.max_steps,
                      log_interval=getattr(args, "log_interval", 10), config=config, prepare=prepare)
    writer = CheckpointWriter(s, core, optimizer, trainer, args, args.fsdp)
    position = Position()
    start_from = resume_path(args, s.output_dir)
    if start_from is not None:
        position = restore(start_from, s, core, optimizer, trainer, args.fsdp)
        s.say(f"resumed from {start_from} at epoch {position.epoch + 1}, step {position.step}")
    else:
        start_fresh(s, args)
    open_log(s, args, trainer, position.global_step if start_from is not None else None)
    save_args(s, args)
    s.say(f"fine-tuning {args.model} ({sum(p.numel() for p in core.parameters()) / 1e6:.2f}M params, "
          f"{num_classes} classes) on {len(train_set)} videos from {train_list}: {args.epochs} epochs x "
          f"{steps_per_epoch} steps, global batch {total_batch}, lr {lr:.3g}, {precision.name} on {s.device}"
          + (f" x {world} processes" if world > 1 else ""))

    def batches_for(pos: Position):
        train_set.set_epoch(pos.epoch)
        sampler.set_position(pos.epoch, skip=pos.step * args.accum_iter * args.batch_size)
        return make_loader(train_set, sampler, args.batch_size, args.num_workers, _collate, args.seed,
                           drop_last=True, pin_memory=s.device.type == "cuda")

    val_list = _optional_list(args, "val")
    val_set = make_dataset(args, val_list, "val") if val_list is not None else None

    def end_of_epoch(epoch: int, stats: dict) -> dict:
        if val_set is None:
            return {}
        result = evaluate(core, val_set, args, s.device, precision, s.info)
        return {"val_acc1": round(result["top1"], 2), "val_acc5": round(result["top5"], 2)}

    loop(s, args, trainer, writer, position, args.epochs, steps_per_epoch, batches_for, objective, end_of_epoch)
    exported = export_weights(s, core, args.fsdp, args)

    test_list = _optional_list(args, "test")
    outputs = []
    if test_list is not None:
        test_set = make_dataset(args, test_list, "test")
        result = evaluate(core, test_set, args, s.device, precision, s.info)
        if s.info.is_main:
            _say_eval(s, result, names)
            outputs += write_report(result, names, s.output_dir, "test")
    if s.info.is_main:
        from videomae.train.logs import read_jsonl

        outputs += training_curves(read_jsonl(s.log.steps_path), s.output_dir)
        s.log.close()
        s.say("wrote:\n" + "\n".join(f"  {p}" for p in [*exported, *outputs]))
    distributed.shutdown()
    return s.output_dir


def _optional_list(args, split: str) -> Path | None:
    """The val/test list: official --eval_data_path when given; none for val under
    --disable_eval_during_finetuning; else DATA_PATH's own list, if it is a folder holding one."""
    if split == "val" and getattr(args, "disable_eval_during_finetuning", False):
        return None
    if getattr(args, "eval_data_path", None):
        return split_list(args.eval_data_path, split)
    data_path = args.data_path
    if Path(data_path).is_file():
        return None  # a single list file is the training set; evaluate separately
    try:
        return split_list(data_path, split)
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------- videomae evaluate


def run_evaluation(args) -> Path:
    from videomae.checkpoint import load_checkpoint, read_checkpoint, unwrap

    s = setup(args)
    test_list = split_list(args.data_path, getattr(args, "eval_split", "test"))
    dataset = make_dataset(args, test_list, "test")
    labels = [r.label for r in dataset.records]
    num_classes = args.nb_classes
    if num_classes is None:
        head = unwrap(read_checkpoint(args.checkpoint), args.checkpoint).get("head.weight")
        num_classes = head.shape[0] if head is not None else len(class_names(test_list, labels, None))
    names = class_names(test_list, labels, num_classes)
    args.drop_path, args.fc_drop_rate, args.init_scale, args.use_checkpoint = 0.0, 0.0, 0.001, False
    model = build_classifier(args, num_classes, args.checkpoint)
    report = load_checkpoint(model, args.checkpoint)
    if report.missing:
        raise ValueError(f"{args.checkpoint} does not fit {args.model}: missing {', '.join(report.missing[:4])}")
    model = model.to(s.device)
    if args.compile:
        model = torch.compile(model)
    precision = Precision(resolve_precision(args.precision, s.device), s.device)
    s.say(f"evaluating {args.checkpoint} ({args.model}, {num_classes} classes) on {test_list}")
    result = evaluate(model, dataset, args, s.device, precision, s.info)
    if s.info.is_main:
        _say_eval(s, result, names)
        js, png = write_report(result, names, s.output_dir)
        s.say(f"wrote:\n  {js}\n  {png}")
    distributed.shutdown()
    return s.output_dir
