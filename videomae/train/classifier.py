"""What fine-tuning and evaluation share: the labeled lists of a data folder, their datasets, the class names and
the classifier."""

from __future__ import annotations

from pathlib import Path

from torch import nn

SPLITS = {"train": ("train",), "val": ("val",), "test": ("test", "val")}


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


def optional_list(args, split: str) -> Path | None:
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
    from videomae.data.loader import build_finetune_dataset

    train = mode == "train"
    return build_finetune_dataset(
        list_file, mode=mode, root=args.data_root, list_format=args.list_format, num_frames=args.num_frames,
        sampling_rate=args.sampling_rate, sampling=args.sampling, input_size=args.input_size,
        short_side_size=args.short_side_size, test_num_segment=args.test_num_segment,
        test_num_crop=args.test_num_crop, flip=args.flip if train else True,
        rand_augment=None if not train or args.aa in ("none", "") else args.aa,
        reprob=args.reprob if train else 0.0, seed=args.seed, backend=args.video_backend,
    )


def build_classifier(args, num_classes: int, weights=None) -> nn.Module:
    """The classifier the flags name; given `weights` that are an HF folder or Hub id, its config.json's architecture
    (flags that disagree with it: one line naming both)."""
    from videomae.interop.pretrained import build_for_weights

    return build_for_weights(
        weights, args.model, given=getattr(args, "_explicit", None), num_classes=num_classes,
        num_frames=args.num_frames, img_size=args.input_size,
        tubelet_size=args.tubelet_size, drop_path_rate=args.drop_path, fc_drop_rate=args.fc_drop_rate,
        init_scale=args.init_scale, use_checkpoint=args.use_checkpoint,
        drop_rate=getattr(args, "drop_rate", 0.0), attn_drop_rate=getattr(args, "attn_drop_rate", 0.0),
    )
