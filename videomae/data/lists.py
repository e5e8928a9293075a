"""Dataset index files of the official VideoMAE / VideoMAE V2 repositories, and video directories.

Formats (one sample per line, space separated, the path may itself contain spaces):
- `video`:     `path label`             (V1 Kinetics/UCF/HMDB/SSv2 video lists)
- `v2`:        `path start total`       (V2 pretraining lists: `path 0 -1` is a video file,
                                          `total >= 0` a folder of `total` frames from index `start`)
- `rawframes`: `folder total label`     (V1 SSv2 rawframe lists; frames counted from 1)
A directory is scanned recursively for video files (unlabeled, label -1).
A `manifest.jsonl` beside the list file (or in the directory), as `videomae data prep` writes, gives each
listed video its frame count, so a too-short video is rejected without opening it.

Relative paths are joined to `root` (the official `--data_root` prefix); with `root=None`
they are resolved against the list file's own folder, so a dataset directory can be moved.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

LIST_FORMATS = ("auto", "video", "v2", "rawframes")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")


class ListSyntaxError(ValueError):
    """A malformed line in a list file; the message names `file:line`."""


@dataclass(frozen=True)
class VideoRecord:
    """One sample: a video file (`total is None`) or a folder of `total` frames numbered from `start`.
    `num_frames`: the video's frame count from a prep manifest, None when unknown."""

    path: str
    label: int = -1
    start: int = 0
    total: int | None = None
    num_frames: int | None = None

    @property
    def is_frame_folder(self) -> bool:
        return self.total is not None


def _ints(tokens: list[str]) -> list[int] | None:
    try:
        return [int(t) for t in tokens]
    except ValueError:
        return None


def _detect(first: str) -> str:
    # Three trailing integers cannot be told apart (V2 `path start total` vs rawframe
    # `folder total label`); V2 is the more common list, rawframes must be asked for.
    tokens = first.split()
    if len(tokens) >= 3 and _ints(tokens[-2:]) is not None:
        return "v2"
    return "video"


def _parse_line(line: str, fmt: str, where: str) -> tuple[str, int, int, int | None]:
    """-> (path, label, start, total)"""
    expected = {"video": "path label", "v2": "path start total", "rawframes": "folder total label"}[fmt]
    n_ints = 1 if fmt == "video" else 2
    tokens = line.rsplit(maxsplit=n_ints)
    values = _ints(tokens[1:]) if len(tokens) == n_ints + 1 else None
    if values is None:
        raise ListSyntaxError(f"{where}: expected '{expected}' ({fmt} list), got {line!r}")
    path = tokens[0]
    if fmt == "video":
        return path, values[0], 0, None
    if fmt == "v2":
        start, total = values
        if start < 0:
            raise ListSyntaxError(f"{where}: start index must be >= 0, got {line!r}")
        return path, -1, start, (total if total >= 0 else None)
    total, label = values
    if total < 0:
        raise ListSyntaxError(f"{where}: frame count must be >= 0, got {line!r}")
    return path, label, 1, total


def read_list(
    list_file: str | os.PathLike, root: str | os.PathLike | None = None, fmt: str = "auto"
) -> list[VideoRecord]:
    """Parse a list file -> records with resolved paths. Blank lines and `#` comments are skipped."""
    if fmt not in LIST_FORMATS:
        raise ValueError(f"fmt must be one of {LIST_FORMATS}, got {fmt!r}")
    list_file = Path(list_file)
    base = Path(root) if root is not None else list_file.parent
    records = []
    for lineno, raw in enumerate(list_file.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if fmt == "auto":
            fmt = _detect(line)
        path, label, start, total = _parse_line(line, fmt, f"{list_file}:{lineno}")
        records.append(VideoRecord(os.path.join(base, path), label, start, total))
    if not records:
        raise ValueError(f"{list_file}: no samples listed")
    return records


def scan_directory(directory: str | os.PathLike, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[VideoRecord]:
    """Every video file under `directory` (recursive, sorted) -> unlabeled records."""
    directory = Path(directory)
    paths = sorted(p for p in directory.rglob("*") if p.suffix.lower() in extensions and p.is_file())
    if not paths:
        raise ValueError(f"{directory}: no video files ({', '.join(extensions)}) found")
    return [VideoRecord(str(p)) for p in paths]


MANIFEST = "manifest.jsonl"


def read_manifest(folder: str | os.PathLike) -> dict[str, dict]:
    """`folder/manifest.jsonl` -> {absolute normalized path: entry}; {} when there is none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    out = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            out[os.path.normpath(os.path.join(folder, entry["path"]))] = entry
        except (ValueError, KeyError, TypeError) as err:
            raise ListSyntaxError(f"{path}:{lineno}: expected a JSON object with a 'path', got {line!r}") from err
    return out


def with_manifest(records: list[VideoRecord], folder: str | os.PathLike) -> list[VideoRecord]:
    manifest = read_manifest(folder)
    if not manifest:
        return records
    out = []
    for r in records:
        entry = manifest.get(os.path.normpath(r.path))
        out.append(replace(r, num_frames=int(entry["frames"])) if entry and not r.is_frame_folder else r)
    return out


def load_records(
    data_path: str | os.PathLike, root: str | os.PathLike | None = None, fmt: str = "auto"
) -> list[VideoRecord]:
    """A list file or a directory of videos -> records."""
    data_path = Path(data_path)
    if data_path.is_dir():
        return with_manifest(scan_directory(data_path), data_path)
    if not data_path.is_file():
        raise FileNotFoundError(f"data_path {str(data_path)!r} is neither a list file nor a directory")
    return with_manifest(read_list(data_path, root=root, fmt=fmt), data_path.parent)
