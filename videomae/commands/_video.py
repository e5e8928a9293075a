"""What `extract` and `predict` share: the videos a flag names, sliding windows over a long video, and the
model rebuilt from weights (its name and clip geometry from the arguments stored with them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from videomae.commands import _common as c
from videomae.commands import runs


def add_video_arguments(p, default_model=None) -> None:
    p.add_argument("videos_given", nargs="*", metavar="VIDEO", help="video files, folders of videos or list files "
                   "(the same as --data_path, which names one)")
    g = p.add_argument_group("model and videos")
    c.flag(g, "--checkpoint", default=None, help="weights (any supported layout, a Hugging Face folder or Hub id)")
    c.flag(g, "--model", default=default_model, help="model name (default: the one stored with the weights)")
    c.flag(g, "--data_path", "--video", dest="data_path", default=None,
           help="a video file, a folder of videos, or a list file (`path label` lines)")
    c.flag(g, "--data_root", default=None, help="prefix for relative paths in list files")
    c.flag(g, "--list_format", default="auto", choices=("auto", "video", "v2", "rawframes"), help="list format")
    c.flag(g, "--input_size", type=int, default=224, help="clip size in pixels (default: the weights', else 224)")
    c.flag(g, "--num_frames", type=int, default=16, help="frames per window (default: the weights', else 16)")
    c.flag(g, "--sampling_rate", type=int, default=4, help="temporal stride inside a window")
    c.flag(g, "--tubelet_size", type=int, default=2, help="frames per cube (default: the weights', else 2)")
    c.flag(g, "--window_stride", type=int, default=None, help="frames between window starts (default: "
           "num_frames x sampling_rate, windows side by side)")
    c.flag(g, "--max_windows", type=int, default=64, help="at most this many windows per video, evenly spread")
    c.flag(g, "--batch_size", type=int, default=8, help="windows per forward pass")
    c.flag(g, "--output_dir", default="runs/out", help="output folder")
    c.flag(g, "--device", default="auto", help="auto, cuda or cpu")
    c.flag(g, "--video_backend", default="auto", choices=("auto", "decord", "pyav"), help="video decoder")


def check_video_arguments(args) -> None:
    runs.check_weights(args, "checkpoint")
    runs.model_from_weights(args, "checkpoint", "vit")
    c.check_model(args, "vit")
    c.check_geometry(args, c.model_patch_size(args.model))
    c.check_positive(args, "sampling_rate", "window_stride", "max_windows", "batch_size")
    sources = list(args.videos_given) + ([args.data_path] if args.data_path is not None else [])
    if not sources:
        c.fail(args, "name the videos: a video file, a folder of videos or a list file (as an argument or "
               "--data_path)")
    args.videos = []
    for source in sources:
        try:
            found = videos(args, source)
        except (ValueError, FileNotFoundError) as err:
            c.fail(args, str(err).splitlines()[0])
        if not found:
            c.fail(args, f"{source}: no videos found")
        args.videos += found


def videos(args, source: str) -> list[str]:
    from videomae.data.lists import VIDEO_EXTENSIONS, load_records

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such video, folder or list file")
    if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
        return [str(path)]
    return [r.path for r in load_records(path, root=args.data_root, fmt=args.list_format)]


def window_starts(n: int, span: int, stride: int, max_windows: int) -> list[int]:
    """Start frames of windows `span` frames long every `stride` frames, covering [0, n); a video shorter
    than one window gets one window at 0 (its last frame repeated)."""
    starts = list(range(0, max(n - span, 0) + 1, stride))
    if len(starts) > max_windows:
        starts = [starts[i] for i in np.linspace(0, len(starts) - 1, max_windows).round().astype(int)]
    return starts


def read_windows(path: str, args) -> tuple[torch.Tensor, list[int]]:
    """-> ImageNet-normalized windows [W, 3, T, S, S] (short side resized, center crop) and their start frames."""
    from videomae.data import transforms as TF
    from videomae.data.decode import read_frames

    span = args.num_frames * args.sampling_rate
    stride = args.window_stride or span
    found: dict[str, list[int]] = {}

    def pick(n: int) -> list[np.ndarray]:
        found["starts"] = window_starts(n, span, stride, args.max_windows)
        offsets = np.arange(args.num_frames) * args.sampling_rate
        return [np.minimum(s + offsets, n - 1) for s in found["starts"]]

    clips = []
    for frames in read_frames(path, pick, backend=args.video_backend):
        clip = TF.as_tchw(frames)
        h, w = TF.short_side_hw(clip.shape[-2], clip.shape[-1], args.input_size)
        clip = TF.resize(clip, (h, w))
        clips.append(TF.normalize(TF.crop_resize(clip, TF.center_crop_box(h, w, args.input_size), args.input_size)))
    return torch.stack(clips), found["starts"]


def device_of(args) -> torch.device:
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(args.device)


def classifier(args, num_classes: int | None = None):
    """The classifier (`num_classes` None: the weights' head) with the weights loaded, in eval mode, and the
    raw official-layout state dict of the weights."""
    from videomae.checkpoint import load_checkpoint, read_checkpoint, unwrap
    from videomae.interop.hf import hf_to_official, is_hf_state_dict
    from videomae.interop.pretrained import build_for_weights

    sd = unwrap(read_checkpoint(args.checkpoint), str(args.checkpoint))
    if is_hf_state_dict(sd):
        sd = hf_to_official(sd)[0]
    if num_classes is None:
        head = sd.get("head.weight")
        num_classes = head.shape[0] if head is not None else 0
    model = build_for_weights(args.checkpoint, args.model, given=args._explicit, num_classes=num_classes,
                              num_frames=args.num_frames, img_size=args.input_size, tubelet_size=args.tubelet_size)
    report = load_checkpoint(model, args.checkpoint)
    c.say(f"loaded {report.source} ({report.layout} layout, {len(report.loaded)} tensors)")
    return model.to(device_of(args)).eval(), sd
