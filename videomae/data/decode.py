"""Video decoders behind one interface, and `read_frames` (decode once, cut several clips).

One class per decoder library (xformers style: the class declares where it runs and says why it cannot; an
instance is one open file), in `auto` order:
- `pyav`:       PyAV from PyPI (FFmpeg bundled). Seeks to the keyframe before the first wanted frame and
                decodes forward to the last one, re-seeking across gaps longer than a GOP; never the whole video.
- `decord`:     decord's VideoReader (seeks by keyframe index itself), one thread per worker.
- `torchcodec`: torchcodec's CPU VideoDecoder (needs the FFmpeg shared libraries of the system).
- `nvdec`:      NVIDIA's hardware decoder on the GPU through PyNvVideoCodec or torchcodec's CUDA device.
                Frames come back as CUDA tensors, so it serves the training process, not CPU loader workers.
CPU frames are uint8 numpy `[T, H, W, 3]` (RGB) and stay uint8 until augmentation (DeviceFeed on the GPU).
`decoder_report()` says which backends run here and why the others do not (`videomae info` shows it).
`read_frames` turns every failure into `VideoReadError` with a short reason; a bad file never crashes a worker.
The classes mirror `videomae.dispatch.Backend` (name, devices, `unavailable_reasons()`) without its op and dtype
checks, which have no meaning for a file.

(About 500 lines on purpose: the decoders and the fallback walk over them are read together.)
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

try:  # PyAV is a dependency on every CPU machine, but the GPU machines may lack it: fail per backend, not on import.
    import av
except ImportError:  # pragma: no cover - depends on the environment
    av = None

if av is not None:
    # FFmpeg's own logger prints every damaged file's complaint ("moov atom not found") to stderr, once per
    # worker, beside our one skip line. PyAV keeps the last message in the exception it raises, so nothing is lost.
    av.logging.set_level(av.logging.PANIC)

try:  # decord is optional: `pip install decord` (wheels exist for x86-64 Linux).
    import decord
except ImportError:  # pragma: no cover - depends on the environment
    decord = None

FRAME_TEMPLATE = "img_{:05d}.jpg"  # official rawframe naming


class VideoReadError(Exception):
    """A sample that cannot be used; `reason` is the short text shown in warnings and summaries."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class DamagedVideo(ValueError):
    """The container opened but its contents are cut short or broken (reported as "truncated or corrupt")."""


# ---------------------------------------------------------------- decoders: one class per library


_PROBES: dict[str, list[str]] = {}


def _torchcodec_reasons() -> list[str]:
    # Importing torchcodec.decoders loads its FFmpeg-linked core: the only reliable test, done once per process.
    if "torchcodec" not in _PROBES:
        if importlib.util.find_spec("torchcodec") is None:
            _PROBES["torchcodec"] = ["torchcodec not installed (pip install torchcodec; needs FFmpeg 4-8 shared "
                                     "libraries, e.g. apt-get install libavcodec59 libavformat59 libavdevice59)"]
        else:
            try:
                import torchcodec.decoders  # noqa: F401
                _PROBES["torchcodec"] = []
            except Exception as err:  # noqa: BLE001 - missing FFmpeg libraries or a torch ABI mismatch
                first = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
                _PROBES["torchcodec"] = [f"torchcodec cannot load its FFmpeg core: {first[:120]}"]
    return _PROBES["torchcodec"]


class Decoder:
    """A decoder library. The class says where its frames come out (`device`) and why it cannot run here
    (`unavailable_reasons()`); `open(path)` gives an instance, one open file: `len(decoder)` frames and
    `decoder.get(sorted unique int64 indices) -> [T, H, W, 3]` (an array, or a list of `[H, W, 3]` arrays)."""

    name: str = ""
    device: str = "cpu"  # where the frames come out
    install: str = ""
    library = None  # the imported Python module (None: not installed), for the two answers below
    title: str = ""  # how `version` names it

    @classmethod
    def unavailable_reasons(cls) -> list[str]:
        """[] when `open` can work here; otherwise every reason it cannot."""
        return [] if cls.library is not None else [f"{cls.title} not installed ({cls.install})"]

    @classmethod
    def version(cls) -> str:
        return f"{cls.title} {getattr(cls.library, '__version__', '?')}" if cls.library is not None else ""

    @classmethod
    def open(cls, path: str):
        return cls(path)


class PyAV(Decoder):
    """PyAV, keyframe seeking. Opening demuxes the packet index (no decoding): presentation timestamps give
    frame i's pts and whether a decode may start there. `get` decodes from the keyframe before each run of
    wanted frames, tells the decoder to drop the non-reference frames it is not asked for (H.264 B-frames:
    nothing else depends on them), and converts only the wanted frames to RGB."""

    name, install, library, title = "pyav", "pip install av", av, "PyAV"

    @classmethod
    def version(cls) -> str:
        return super().version() + ", keyframe seeking" if cls.library is not None else ""

    def __init__(self, path: str):
        self.container = av.open(path)
        if not self.container.streams.video:
            self.container.close()
            raise ValueError("no video stream")
        stream = self.stream = self.container.streams.video[0]
        stream.thread_count = 1  # one decode thread per loader worker
        pts, key = [], []
        for packet in self.container.demux(stream):
            if packet.size:  # the final empty packet flushes the decoder
                pts.append(packet.pts)
                key.append(packet.is_keyframe)
        if not pts or (stream.frames and len(pts) < stream.frames):
            self.container.close()
            raise DamagedVideo(f"truncated: the index lists {stream.frames} frames, the file holds {len(pts)}")
        self.length, self.seekable = len(pts), bool(pts) and None not in pts
        if self.seekable:
            order = np.argsort(pts, kind="stable")
            self.pts = np.asarray(pts, dtype=np.int64)[order]
            self.index_of = {int(p): i for i, p in enumerate(self.pts)}
            keys = np.flatnonzero(np.asarray(key)[order])
            # last_key[i]: the latest keyframe at or before frame i (a decode started there reaches i)
            self.seekable = len(keys) > 0 and keys[0] == 0 and len(self.index_of) == self.length
            if self.seekable:
                self.last_key = keys[np.searchsorted(keys, np.arange(self.length), side="right") - 1]

    def __len__(self) -> int:
        return self.length

    def close(self) -> None:
        self.container.close()

    def get(self, indices: np.ndarray) -> list[np.ndarray]:
        try:
            if self.seekable:
                frames = self._seek_decode(indices)
                if frames is not None:
                    return frames
            return self._sequential(indices)
        finally:
            self.close()

    def _decode_from_here(self, wanted: set):
        ctx = self.stream.codec_context
        for packet in self.container.demux(self.stream):
            i = self.index_of.get(packet.pts)  # None for the flush packet
            ctx.skip_frame = "NONREF" if i is not None and i not in wanted else "DEFAULT"
            yield from packet.decode()

    def _seek_decode(self, indices: np.ndarray) -> list[np.ndarray] | None:
        """None when the decoded timestamps do not match the index (odd containers): the caller decodes in order."""
        got, pos, frames, wanted = {}, -1, None, set(indices.tolist())
        for want in indices.tolist():
            key = int(self.last_key[want])
            if key > pos:  # a keyframe lies between the decoder's position and `want`: jump over the gap
                self.container.seek(int(self.pts[key]), stream=self.stream, backward=True, any_frame=False)
                frames, pos = self._decode_from_here(wanted), -1
            while pos < want:
                frame = next(frames, None)
                if frame is None or frame.pts not in self.index_of:
                    return None
                i = self.index_of[frame.pts]
                if pos == -1 and i > key:  # the seek landed after the keyframe asked for
                    return None
                pos = i
                if pos in wanted:
                    got[pos] = _rgb(frame)
            if want not in got:
                return None
        return [got[i] for i in indices.tolist()]  # read_frames stacks each clip once

    def _sequential(self, indices: np.ndarray) -> list[np.ndarray]:
        wanted, last, got, i = set(indices.tolist()), int(indices.max()), {}, -1
        self.container.seek(0)
        self.stream.codec_context.skip_frame = "DEFAULT"
        for i, frame in enumerate(self.container.decode(self.stream)):
            if i in wanted:
                got[i] = _rgb(frame)
            if i >= last:
                break
        if len(got) < len(wanted):
            raise ValueError(f"truncated: frame {last} wanted, stream ended after {i + 1} of {self.length}")
        return [got[i] for i in indices.tolist()]  # read_frames stacks each clip once


_LOCAL = threading.local()


def _rgb(frame) -> np.ndarray:
    # One reformatter per thread keeps its swscale context across frames and videos (a fresh one per frame,
    # what `frame.to_ndarray(format=...)` does, costs about twice the conversion itself). threads=1: one
    # thread per loader worker, and no slice-thread pool that a forked worker would inherit dead and hang on.
    if not hasattr(_LOCAL, "rgb"):
        from av.video.reformatter import VideoReformatter

        _LOCAL.rgb = VideoReformatter()
    return _LOCAL.rgb.reformat(frame, format="rgb24", threads=1).to_ndarray()


class Decord(Decoder):
    """decord's VideoReader (seeks by keyframe index itself), one thread per worker."""

    name, install, library, title = "decord", "pip install decord (x86-64 Linux wheels)", decord, "decord"

    def __init__(self, path: str):
        with _native_stderr_silenced():
            self.reader = decord.VideoReader(path, num_threads=1, ctx=decord.cpu(0))

    def __len__(self) -> int:
        return len(self.reader)

    def get(self, indices: np.ndarray) -> np.ndarray:
        with _native_stderr_silenced():
            return self.reader.get_batch(indices.tolist()).asnumpy()


@contextlib.contextmanager
def _native_stderr_silenced():
    """decord's C++ logger writes to file descriptor 2 directly (`decord.logging` does not reach it), and the
    exception it raises already carries the reason: point fd 2 at /dev/null for the call. Python-level
    `sys.stderr` is flushed first so nothing written before is lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class TorchCodec(Decoder):
    """torchcodec's VideoDecoder on `device` ("cpu" here; NVDEC opens it on "cuda:i"), frames `[T, H, W, 3]`."""

    name = "torchcodec"

    @classmethod
    def unavailable_reasons(cls) -> list[str]:
        return _torchcodec_reasons()

    @classmethod
    def version(cls) -> str:
        if cls.unavailable_reasons():
            return ""
        import torchcodec

        return f"torchcodec {torchcodec.__version__} (CPU)"

    def __init__(self, path: str, device: str = "cpu"):
        from torchcodec.decoders import VideoDecoder

        self.cuda = device.startswith("cuda")
        kwargs = {} if self.cuda else {"num_ffmpeg_threads": 1}
        self.decoder = VideoDecoder(path, device=device, dimension_order="NHWC", seek_mode="exact", **kwargs)
        meta = self.decoder.metadata
        header, content = meta.num_frames_from_header, meta.num_frames_from_content
        if header and content is not None and content < header:  # the same cross-check as PyAV's
            raise DamagedVideo(f"truncated: the index lists {header} frames, the file holds {content}")

    def __len__(self) -> int:
        return self.decoder.metadata.num_frames

    def get(self, indices: np.ndarray):
        data = self.decoder.get_frames_at(indices=indices.tolist()).data
        return data if self.cuda else data.numpy()


class Nvdec(Decoder):
    """NVIDIA's hardware decoder, frames as CUDA uint8 `[T, H, W, 3]`: PyNvVideoCodec's SimpleDecoder (NVDEC into
    device memory, RGB interleaved) when it loads, else `open` gives torchcodec's decoder on the CUDA device."""

    name, device = "nvdec", "cuda"

    @classmethod
    def _library(cls) -> tuple[str | None, list[str]]:
        import torch

        if not torch.cuda.is_available():
            return None, ["needs a CUDA device (NVDEC is a GPU engine)"]
        reasons = []
        if importlib.util.find_spec("PyNvVideoCodec") is not None:
            try:
                import PyNvVideoCodec  # noqa: F401
                return "PyNvVideoCodec", []
            except Exception as err:  # noqa: BLE001 - driver or CUDA runtime mismatch
                reasons.append(f"PyNvVideoCodec does not load: {str(err)[:120]}")
        else:
            reasons.append("PyNvVideoCodec not installed (pip install PyNvVideoCodec)")
        tc = _torchcodec_reasons()
        if not tc:
            return "torchcodec", []
        return None, reasons + tc

    @classmethod
    def unavailable_reasons(cls) -> list[str]:
        return cls._library()[1]

    @classmethod
    def version(cls) -> str:
        library = cls._library()[0]
        return f"via {library}" if library else ""

    @classmethod
    def open(cls, path: str):
        import torch

        gpu = torch.cuda.current_device()
        return cls(path, gpu) if cls._library()[0] == "PyNvVideoCodec" else TorchCodec(path, f"cuda:{gpu}")

    def __init__(self, path: str, gpu_id: int = 0):
        import PyNvVideoCodec as nvc

        self.decoder = nvc.SimpleDecoder(path, gpu_id=gpu_id, use_device_memory=True,
                                         output_color_type=nvc.OutputColorType.RGB)

    def __len__(self) -> int:
        return len(self.decoder)

    def get(self, indices: np.ndarray):
        import torch

        frames = self.decoder.get_batch_frames_by_index(indices.tolist())
        return torch.stack([torch.from_dlpack(f) for f in frames])


class FrameFolderReader:
    """A folder of JPEG frames `template.format(start + i)`, i < total."""

    def __init__(self, folder: str, start: int, total: int, template: str = FRAME_TEMPLATE):
        if not os.path.isdir(folder):
            raise ValueError("frame folder missing")
        self.folder, self.start, self.total, self.template = folder, start, total, template

    def __len__(self) -> int:
        return self.total

    def get(self, indices: np.ndarray) -> np.ndarray:
        frames = []
        for i in indices.tolist():
            name = os.path.join(self.folder, self.template.format(self.start + i))
            with Image.open(name) as img:
                frames.append(np.asarray(img.convert("RGB")))
        return np.stack(frames)


DECODERS: dict[str, type[Decoder]] = {d.name: d for d in (PyAV, Decord, TorchCodec, Nvdec)}
AUTO_ORDER = ("pyav", "decord")  # measured fastest first (bench/results/loader-cpu.md); torchcodec only on request
BACKENDS = ("auto", *DECODERS)


def _backends(backend: str) -> list[type[Decoder]]:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        usable = [DECODERS[n] for n in AUTO_ORDER if not DECODERS[n].unavailable_reasons()]
        if not usable:
            raise ImportError("no video decoder available: " + "; ".join(
                r for n in AUTO_ORDER for r in DECODERS[n].unavailable_reasons()))
        return usable
    reasons = DECODERS[backend].unavailable_reasons()
    if reasons:
        raise ImportError(f"backend={backend!r} cannot run here: {'; '.join(reasons)}")
    return [DECODERS[backend]]


def decoder_report() -> dict[str, dict]:
    """Every decoder: `{name: {"available", "detail", "reasons"}}`; detail says which one `auto` picks."""
    usable = [n for n in AUTO_ORDER if not DECODERS[n].unavailable_reasons()]
    out = {}
    for name, backend in DECODERS.items():
        reasons = backend.unavailable_reasons()
        if reasons:
            out[f"decoder {name}"] = {"available": False, "detail": "", "reasons": reasons}
            continue
        if name in usable:
            role = "auto's choice" if usable[0] == name else f"auto fallback #{usable.index(name)}"
        else:
            role = "on request (backend='nvdec', frames on the GPU)"
        out[f"decoder {name}"] = {"available": True, "detail": f"{backend.version()}; {role}", "reasons": []}
    return out


# ---------------------------------------------------------------- reading with fallback


# dmlc's log prefix on decord's messages: "[03:49:37] /github/workspace/src/video/video_reader.cc:486: Error: "
_DMLC_PREFIX = re.compile(r"^\[\d\d:\d\d:\d\d\] \S+:\d+: (Error: |ERROR )?")


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    text = _DMLC_PREFIX.sub("", text[-1]) if text else type(err).__name__
    return text[:160]


def _take(frames, idx: np.ndarray):
    if isinstance(frames, list):  # one frame array each (PyAV): one copy per clip, no stacked union first
        return np.stack([frames[i] for i in idx.tolist()])
    if isinstance(frames, np.ndarray):
        return frames[idx]
    import torch

    return frames[torch.as_tensor(idx, device=frames.device)]


def read_frames(
    path: str,
    pick: Callable[[int], Sequence[np.ndarray]],
    *,
    backend: str = "auto",
    min_frames: int = 1,
    frame_folder: tuple[int, int] | None = None,
    template: str = FRAME_TEMPLATE,
    num_frames: int | None = None,
) -> list:
    """Decode once, cut several clips: `pick(num_video_frames) -> [idx_0, idx_1, ...]`.

    -> one uint8 `[len(idx_k), H, W, 3]` array per index array (CUDA tensors for backend='nvdec').
    `frame_folder=(start, total)` reads a JPEG folder instead of a video file. `num_frames` (from a prep
    manifest) rejects a too-short video without opening it.
    `pick` may be called again after a backend falls back, so it must not consume shared state.
    Raises VideoReadError naming the reason: missing file, empty file, too short, not a readable
    video (no decoder can open it), truncated or corrupt video (opens, then fails to decode).
    """
    if not os.path.exists(path):
        raise VideoReadError(path, "missing file")
    if frame_folder is None and os.path.getsize(path) == 0:
        raise VideoReadError(path, "empty file (0 bytes)")
    if num_frames is not None and num_frames < min_frames:
        raise VideoReadError(path, f"too short ({num_frames} frames < min_frames={min_frames})")
    # Raw uint8 `.npy` clips (`videomae data synth --style ssm`) skip the codecs: no codec noise in the targets.
    raw = frame_folder is None and path.endswith(".npy")
    kinds = [None] if frame_folder is not None or raw else _backends(backend)
    errors, opened = [], False
    for kind in kinds:
        name = ("raw" if raw else "frames") if kind is None else kind.name
        try:
            if kind is not None:
                reader = kind.open(path)
            elif raw:
                from videomae.data.synth import RawClipReader

                reader = RawClipReader(path)
            else:
                reader = FrameFolderReader(path, *frame_folder, template)
            n = len(reader)
        except Exception as err:  # noqa: BLE001 - any decoder failure means "try the next one"
            errors.append(f"{name}: {_short(err)}")
            opened = opened or isinstance(err, DamagedVideo)
            continue
        opened = True
        if n == 0:  # an index without frames (torchcodec on a cut file): damaged, let another decoder judge
            errors.append(f"{name}: no frames")
            continue
        if n < min_frames:
            getattr(reader, "close", lambda: None)()
            raise VideoReadError(path, f"too short ({n} frames < min_frames={min_frames})")
        clips = [np.asarray(idx, dtype=np.int64) for idx in pick(n)]
        union, inverse = np.unique(np.concatenate(clips), return_inverse=True)
        try:
            frames = reader.get(union)
        except Exception as err:  # noqa: BLE001
            errors.append(f"{name}: {_short(err)}")
            continue
        shape = (len(frames), *frames[0].shape) if isinstance(frames, list) else tuple(frames.shape)
        if len(shape) != 4 or shape[0] != len(union) or shape[-1] != 3:
            errors.append(f"{name}: decoded frames of shape {shape}")
            continue
        bounds = np.cumsum([0] + [len(c) for c in clips])
        return [_take(frames, inverse[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    # A container that opens but fails while decoding is cut short or damaged inside.
    what = "truncated or corrupt video" if opened else "not a readable video"
    raise VideoReadError(path, f"{what} ({'; '.join(errors)})")
