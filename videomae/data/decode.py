"""Frame readers: decord (primary, one thread per worker), PyAV (fallback), JPEG frame folders.

Frames come out as uint8 numpy `[T, H, W, 3]` (RGB) and stay uint8 until augmentation.
`read_frames` decodes a video once for several index arrays (repeated sampling) and turns every
failure into `VideoReadError` with a short human reason; it never lets a bad file crash a worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import av
import numpy as np
from PIL import Image

try:  # decord is optional: `pip install decord` (wheels exist for x86-64 Linux).
    import decord
except ImportError:  # pragma: no cover - depends on the environment
    decord = None

BACKENDS = ("auto", "decord", "pyav")
FRAME_TEMPLATE = "img_{:05d}.jpg"  # official rawframe naming


class VideoReadError(Exception):
    """A sample that cannot be used; `reason` is the short text shown in warnings and summaries."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


# ---------------------------------------------------------------- readers


class DecordReader:
    def __init__(self, path: str):
        self.reader = decord.VideoReader(path, num_threads=1, ctx=decord.cpu(0))

    def __len__(self) -> int:
        return len(self.reader)

    def get(self, indices: np.ndarray) -> np.ndarray:
        return self.reader.get_batch(indices.tolist()).asnumpy()


class PyAVReader:
    """Sequential decode up to the last wanted frame; converts only the wanted frames to RGB."""

    def __init__(self, path: str):
        self.path = path
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            # Container metadata when present; otherwise count packets (demux only, no decode).
            self.length = stream.frames or sum(1 for p in container.demux(stream) if p.size)

    def __len__(self) -> int:
        return self.length

    def get(self, indices: np.ndarray) -> np.ndarray:
        wanted = set(indices.tolist())
        last = max(wanted)
        got: dict[int, np.ndarray] = {}
        i = -1
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1  # one decode thread per loader worker
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    got[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
        if len(got) < len(wanted):
            raise ValueError(f"truncated: frame {last} wanted, stream ended after {i + 1} of {self.length}")
        return np.stack([got[i] for i in indices.tolist()])


class FrameFolderReader:
    """A folder of JPEG frames `template.format(start + i)`, i < total."""

    def __init__(self, folder: str, start: int, total: int, template: str = FRAME_TEMPLATE):
        if not os.path.isdir(folder):
            raise ValueError("frame folder missing")
        self.folder, self.start, self.total, self.template = folder, start, total, template

    def __len__(self) -> int:
        return self.total

    def get(self, indices: np.ndarray) -> np.ndarray:
        frames = {}
        for i in dict.fromkeys(indices.tolist()):
            name = os.path.join(self.folder, self.template.format(self.start + i))
            with Image.open(name) as img:
                frames[i] = np.asarray(img.convert("RGB"))
        return np.stack([frames[i] for i in indices.tolist()])


# ---------------------------------------------------------------- reading with fallback


def _backends(backend: str) -> list[str]:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return ["decord", "pyav"] if decord is not None else ["pyav"]
    if backend == "decord" and decord is None:
        raise ImportError("backend='decord' needs `pip install decord`")
    return [backend]


def _open(kind: str, path: str):
    return DecordReader(path) if kind == "decord" else PyAVReader(path)


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    text = text[-1] if text else type(err).__name__
    return text[:160]


def read_frames(
    path: str,
    pick: Callable[[int], Sequence[np.ndarray]],
    *,
    backend: str = "auto",
    min_frames: int = 1,
    frame_folder: tuple[int, int] | None = None,
    template: str = FRAME_TEMPLATE,
) -> list[np.ndarray]:
    """Decode once, cut several clips: `pick(num_video_frames) -> [idx_0, idx_1, ...]`.

    -> one uint8 `[len(idx_k), H, W, 3]` array per index array.
    `frame_folder=(start, total)` reads a JPEG folder instead of a video file.
    `pick` may be called again after a backend falls back, so it must not consume shared state.
    Raises VideoReadError naming the reason: missing file, empty file, too short, not a readable
    video (no decoder can open it), truncated or corrupt video (opens, then fails to decode).
    """
    if not os.path.exists(path):
        raise VideoReadError(path, "missing file")
    if frame_folder is None and os.path.getsize(path) == 0:
        raise VideoReadError(path, "empty file (0 bytes)")
    kinds = ["frames"] if frame_folder is not None else _backends(backend)
    errors, opened = [], False
    for kind in kinds:
        try:
            reader = FrameFolderReader(path, *frame_folder, template) if kind == "frames" else _open(kind, path)
            n = len(reader)
        except Exception as err:  # noqa: BLE001 - any decoder failure means "try the next one"
            errors.append(f"{kind}: {_short(err)}")
            continue
        opened = True
        if n < min_frames:
            raise VideoReadError(path, f"too short ({n} frames < min_frames={min_frames})")
        clips = [np.asarray(idx, dtype=np.int64) for idx in pick(n)]
        union, inverse = np.unique(np.concatenate(clips), return_inverse=True)
        try:
            frames = reader.get(union)
        except Exception as err:  # noqa: BLE001
            errors.append(f"{kind}: {_short(err)}")
            continue
        if frames.ndim != 4 or frames.shape[0] != len(union) or frames.shape[-1] != 3:
            errors.append(f"{kind}: decoded frames of shape {tuple(frames.shape)}")
            continue
        bounds = np.cumsum([0] + [len(c) for c in clips])
        return [frames[inverse[a:b]] for a, b in zip(bounds[:-1], bounds[1:])]
    # A container that opens but fails while decoding is cut short or damaged inside.
    what = "truncated or corrupt video" if opened else "not a readable video"
    raise VideoReadError(path, f"{what} ({'; '.join(errors)})")
