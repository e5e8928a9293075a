"""One video re-encoded for fast seeking (what `videomae data prep` runs per video): decoded with PyAV, resized to
the short side (never up, area average), optionally re-timed to a fixed fps (nearest source frame), written as
H.264 yuv420p with a keyframe every `gop` frames and non-reference B-frames, atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path


@dataclass(frozen=True)
class PrepSettings:
    short_side: int = 256
    fps: float | None = None
    gop: int = 16
    crf: int = 23
    preset: str = "veryfast"
    bframes: int = 3



def _out_size(h: int, w: int, short: int) -> tuple[int, int]:
    scale = min(1.0, short / min(h, w))
    return max(2, round(h * scale / 2) * 2), max(2, round(w * scale / 2) * 2)  # yuv420p needs even sides


def encode_one(job, out_dir: str, settings: PrepSettings) -> dict:
    """Re-encode `job.source` into `out_dir/videos/job.name` (atomically) -> its manifest entry. `job`: a
    `videomae.data.prep.Job` (source, name, label, frame_folder)."""
    import logging

    import av

    # `movflags=+faststart` acts when the file is closed (the moov atom moves first), after PyAV's check of which
    # options the header used: its "Some options were not used" would be printed for every video, wrongly.
    logging.getLogger("av.container.output").setLevel(logging.ERROR)
    if job.frame_folder:
        raise ValueError("a frame folder, not a video file")
    if not os.path.isfile(job.source):
        raise ValueError("missing file")
    if os.path.getsize(job.source) == 0:
        raise ValueError("empty file (0 bytes)")
    dst = Path(out_dir) / "videos" / job.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp.mp4")
    written = 0
    try:
        with av.open(job.source) as src:
            if not src.streams.video:
                raise ValueError("no video stream")
            vin = src.streams.video[0]
            vin.thread_count = 1  # parallel over processes, one thread each
            src_fps = float(vin.average_rate or vin.guessed_rate or 0) or 30.0
            fps = Fraction(settings.fps).limit_denominator(1001) if settings.fps else \
                Fraction(vin.average_rate or src_fps).limit_denominator(1001)
            with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
                vout, size = None, None
                for frame, repeat in _retimed(src.decode(vin), vin, src_fps, settings.fps):
                    if vout is None:
                        size = _out_size(frame.height, frame.width, settings.short_side)
                        vout = out.add_stream("libx264", rate=fps)
                        vout.height, vout.width = size
                        vout.pix_fmt = "yuv420p"
                        vout.options = {"crf": str(settings.crf), "preset": settings.preset, "g": str(settings.gop),
                                        "bf": str(settings.bframes), "threads": "1",
                                        # non-reference B-frames: the reader can skip the ones no clip needs
                                        "x264-params": "b-pyramid=none"}
                        vout.codec_context.time_base = 1 / fps
                    small = frame.reformat(width=size[1], height=size[0], format="yuv420p", interpolation="AREA",
                                           threads=1)
                    for _ in range(repeat):
                        small.pts, small.time_base = written, 1 / fps
                        for packet in vout.encode(small):
                            out.mux(packet)
                        written += 1
                if vout is None:
                    raise ValueError("no decodable frames")
                for packet in vout.encode():
                    out.mux(packet)
        os.replace(tmp, dst)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    return {"path": str(Path("videos") / job.name), "frames": written, "fps": float(fps), "width": size[1],
            "height": size[0], "duration": round(written / float(fps), 6), "bytes": dst.stat().st_size,
            "label": job.label, "source": job.source}


def _retimed(frames, stream, src_fps: float, fps: float | None):
    """-> (frame, times to write it). Without `fps` every frame once; with it, output frame j (time j/fps)
    is the source frame nearest in time (ties to the earlier), like FFmpeg's fps filter."""
    if fps is None:
        for f in frames:
            yield f, 1
        return
    tb = float(stream.time_base) if stream.time_base else 1 / src_fps
    prev, t_prev, t0, j = None, 0.0, None, 0
    for f in frames:
        t = (f.pts * tb if f.pts is not None else (j + 1) / src_fps)
        t0 = t if t0 is None else t0
        t -= t0
        if prev is not None:
            n = 0
            while j / fps <= (t_prev + t) / 2 + 1e-9:
                n, j = n + 1, j + 1
            if n:
                yield prev, n
        prev, t_prev = f, t
    if prev is not None:  # the last frame lasts one source frame period
        n = 0
        while j / fps < t_prev + 1 / src_fps / 2 - 1e-9:
            n, j = n + 1, j + 1
        if n or j == 0:
            yield prev, max(n, 1)
