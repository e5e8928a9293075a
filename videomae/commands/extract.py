"""`videomae extract`: frozen features of a list of videos, one vector per sliding window, to .npy or
.safetensors (with index.json saying which windows each video got)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from videomae.commands import _common as c
from videomae.commands import _video

NAME = "extract"
USAGE = "%(prog)s VIDEO [VIDEO ...] --checkpoint WEIGHTS [flags]"
HELP = "features of videos (sliding windows) to .npy or .safetensors"
DESCRIPTION = ("Frozen features: each window of num_frames frames (every sampling_rate) goes through the encoder; "
               "its tokens are mean-pooled (after the encoder's final norm for pretraining weights, through fc_norm "
               "for fine-tuned ones, as each model pools). Writes NAME.npy per video [windows, D] or one "
               "features.safetensors, plus index.json.")


def add_arguments(p) -> None:
    _video.add_video_arguments(p)
    g = p.add_argument_group("output")
    c.flag(g, "--format", default="npy", choices=("npy", "safetensors"), help="one NAME.npy per video, or one "
           "features.safetensors keyed by video name")
    c.flag(g, "--tokens", action="store_true", help="keep every token: [windows, tokens, D] instead of the pooled "
           "[windows, D]")


def check(args) -> None:
    _video.check_video_arguments(args)


def _keys(paths: list[str]) -> list[str]:
    """A file-name key per video; repeated names get their list position appended."""
    stems = [Path(p).stem for p in paths]
    return [s if stems.count(s) == 1 else f"{s}_{i}" for i, s in enumerate(stems)]


@torch.no_grad()
def features(model, sd: dict, clips: torch.Tensor, batch_size: int, tokens: bool) -> torch.Tensor:
    """clips [W, 3, T, S, S] -> [W, D] pooled (or [W, N, D] tokens), fp32 on the CPU."""
    device = next(model.parameters()).device
    norm = None
    if "encoder.norm.weight" in sd or "norm.weight" in sd:  # pretraining weights: the encoder's own final norm
        prefix = "encoder.norm." if "encoder.norm.weight" in sd else "norm."
        norm = torch.nn.LayerNorm(sd[prefix + "weight"].shape[0], eps=model.fc_norm.eps).to(device)
        norm.load_state_dict({"weight": sd[prefix + "weight"], "bias": sd[prefix + "bias"]})
    out = []
    for i in range(0, len(clips), batch_size):
        x = model.forward_tokens(clips[i:i + batch_size].to(device))
        if norm is not None:
            x = norm(x)
        if not tokens:
            x = x.mean(dim=1) if norm is not None else model.fc_norm(x.mean(dim=1))
        out.append(x.float().cpu())
    return torch.cat(out)


def run(args) -> int:
    from videomae.data.decode import VideoReadError

    model, sd = _video.classifier(args, num_classes=0)
    out = Path(args.output_dir)
    index, tensors, skipped = {}, {}, 0
    for key, path in zip(_keys(args.videos), args.videos):
        try:
            clips, starts = _video.read_windows(path, args)
        except VideoReadError as err:
            print(f"skipped {path}: {err.reason}")
            skipped += 1
            continue
        feats = features(model, sd, clips, args.batch_size, args.tokens)
        index[key] = {"path": path, "window_starts": starts, "shape": list(feats.shape)}
        if args.format == "npy":
            import numpy as np

            out.mkdir(parents=True, exist_ok=True)  # made by the first result: a run with none leaves no folder
            np.save(out / f"{key}.npy", feats.numpy())
        else:
            tensors[key] = feats.contiguous()
    if not index:
        print(f"no features: none of the {len(args.videos)} videos could be read", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    if tensors:
        from safetensors.torch import save

        from videomae.integrity import write_atomic

        data = save(tensors, metadata={"model": args.model})
        write_atomic(out / "features.safetensors", lambda f: f.write(data), sidecar_too=False)
    (out / "index.json").write_text(json.dumps({"model": args.model, "checkpoint": str(args.checkpoint),
                                                "num_frames": args.num_frames, "sampling_rate": args.sampling_rate,
                                                "videos": index}, indent=1))
    print(f"features of {len(index)} videos ({skipped} skipped) in {out}")
    return 0 if index else 1
