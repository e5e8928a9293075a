"""`videomae data prep`: re-encode a dataset into a training-ready copy that decodes fast.

    videomae data prep k400_train.txt /data/k400-256 --short-side 256 --workers 16

Each video is decoded with PyAV (FFmpeg from PyPI, no system ffmpeg), resized to the short side (never
up), optionally re-timed to a fixed fps, and written as H.264 (yuv420p, keyframe every `--gop` frames,
B-frames the seeking reader can drop, no audio, moov atom first). Output in `OUTPUT`:
- `videos/<name>.mp4`: the copies, under the same relative paths as their sources;
- `list.txt`: the new list (`path label` for labeled lists, `path 0 -1` otherwise), relative paths;
- `manifest.jsonl`: one line per video, `{path, frames, fps, width, height, duration, bytes, source}`;
  `videomae.data.lists` reads it, so training knows every length without probing a file;
- `prep_report.json`: the settings, counts and every input that failed, with its reason.
Resumable: a video is done once its `.done/<name>.json` exists (written after the copy is renamed into
place), so an interrupted run picks up where it stopped; a bad input is named and skipped, never fatal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from videomae.data.lists import LIST_FORMATS, MANIFEST, load_records


@dataclass(frozen=True)
class PrepSettings:
    short_side: int = 256
    fps: float | None = None
    gop: int = 16
    crf: int = 23
    preset: str = "veryfast"
    bframes: int = 3


@dataclass(frozen=True)
class Job:
    source: str
    name: str  # relative output path, ends in .mp4
    label: int
    frame_folder: bool = False


def add_prep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="a list file (official formats) or a folder of videos")
    parser.add_argument("output", help="output folder (created; rerun with the same one to resume)")
    parser.add_argument("--short-side", type=int, default=256,
                        help="resize so the shorter side is this many pixels (never upscaled; 256 or 320 usual)")
    parser.add_argument("--fps", type=float, default=None,
                        help="re-time to this frame rate (nearest source frame); default keeps every frame")
    parser.add_argument("--gop", type=int, default=16,
                        help="keyframe interval in frames: a clip decodes from at most gop-1 frames before it")
    parser.add_argument("--crf", type=int, default=23, help="x264 quality (lower is better and larger)")
    parser.add_argument("--preset", default="veryfast", help="x264 preset")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument("--root", default=None, help="prefix of relative paths in the list (official --data_root)")
    parser.add_argument("--list-format", default="auto", choices=LIST_FORMATS)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _validate(args) -> list[str]:
    problems = []
    if not Path(args.input).exists():
        problems.append(f"input {args.input!r}: no such list file or folder")
    if args.short_side < 16 or args.short_side % 2:
        problems.append(f"--short-side must be an even number >= 16, got {args.short_side}")
    if args.fps is not None and not 0 < args.fps <= 240:
        problems.append(f"--fps must be in (0, 240], got {args.fps}")
    if args.gop < 1:
        problems.append(f"--gop must be >= 1, got {args.gop}")
    if not 0 <= args.crf <= 51:
        problems.append(f"--crf must be in [0, 51], got {args.crf}")
    if args.workers < 1:
        problems.append(f"--workers must be >= 1, got {args.workers}")
    return problems


def _jobs(args) -> tuple[list[Job], bool]:
    """-> jobs with unique output names, and whether the input carries labels."""
    records = load_records(args.input, root=args.root, fmt=args.list_format)
    base = Path(args.input) if Path(args.input).is_dir() else Path(args.root or Path(args.input).parent)
    jobs, seen = [], set()
    for rec in records:
        src = Path(rec.path)
        try:
            rel = src.resolve().relative_to(base.resolve())
        except ValueError:  # outside the list's folder: a flat name, disambiguated by the full path
            rel = Path(f"{hashlib.sha1(str(src).encode()).hexdigest()[:8]}_{src.name}")
        name = str(rel.with_suffix(".mp4"))
        if name in seen:  # a.avi and a.mkv in one folder
            name = str(rel) + ".mp4"
        seen.add(name)
        jobs.append(Job(rec.path, name, rec.label, rec.is_frame_folder))
    return jobs, any(r.label >= 0 for r in records)


def _out_size(h: int, w: int, short: int) -> tuple[int, int]:
    scale = min(1.0, short / min(h, w))
    return max(2, round(h * scale / 2) * 2), max(2, round(w * scale / 2) * 2)  # yuv420p needs even sides


def encode_one(job: Job, out_dir: str, settings: PrepSettings) -> dict:
    """Re-encode `job.source` into `out_dir/videos/job.name` (atomically) -> its manifest entry."""
    import av

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


def _done_path(out_dir: Path, job: Job) -> Path:
    return out_dir / ".done" / (job.name + ".json")


def _work(task: tuple[Job, str, PrepSettings]) -> tuple[Job, dict | None, str | None]:
    job, out_dir, settings = task
    try:
        entry = encode_one(job, out_dir, settings)
    except Exception as err:  # noqa: BLE001 - a bad input is reported, never fatal
        text = str(err).strip().splitlines()
        return job, None, (text[-1] if text else type(err).__name__)[:200]
    entry["settings"] = asdict(settings)
    done = _done_path(Path(out_dir), job)
    done.parent.mkdir(parents=True, exist_ok=True)
    tmp = done.with_name(done.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, done)
    return job, entry, None


def _finished(out_dir: Path, job: Job, settings: PrepSettings) -> dict | None:
    try:
        entry = json.loads(_done_path(out_dir, job).read_text())
    except (OSError, ValueError):
        return None
    if entry.get("settings") != asdict(settings) or not (out_dir / entry["path"]).is_file():
        return None  # other settings, or the copy was deleted: redo
    return entry


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_prep(args) -> int:
    """0: every input prepared; 1: some inputs failed (named in prep_report.json); 2: bad arguments."""
    problems = _validate(args)
    if problems:
        for p in problems:
            print(f"videomae data prep: {p}", file=sys.stderr)
        return 2
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / "videos").rglob(".*.tmp.mp4"):  # a killed run's partial copies (one run per folder)
        stale.unlink(missing_ok=True)
    settings = PrepSettings(args.short_side, args.fps, args.gop, args.crf, args.preset)
    jobs, labeled = _jobs(args)
    entries: dict[str, dict] = {}
    todo = []
    for job in jobs:
        entry = _finished(out_dir, job, settings)
        if entry is not None:
            entries[job.name] = entry
        else:
            todo.append(job)
    failures: dict[str, str] = {}
    t0 = time.perf_counter()
    bar = _progress(len(jobs), len(entries), args.no_progress)
    tasks = [(job, str(out_dir), settings) for job in todo]
    if args.workers == 1 or len(tasks) <= 1:
        results = map(_work, tasks)
    else:
        pool = mp.get_context("spawn").Pool(min(args.workers, len(tasks)))
        results = pool.imap_unordered(_work, tasks)
    for job, entry, reason in results:
        if entry is not None:
            entries[job.name] = entry
        else:
            failures[job.source] = reason
        bar(len(failures))
    if args.workers > 1 and len(tasks) > 1:
        pool.close()
        pool.join()
    bar(len(failures), final=True)
    ordered = [entries[j.name] for j in jobs if j.name in entries]
    _atomic_write(out_dir / "list.txt", "".join(
        f"{e['path']} {e['label']}\n" if labeled else f"{e['path']} 0 -1\n" for e in ordered))
    _atomic_write(out_dir / MANIFEST, "".join(json.dumps({k: e[k] for k in (
        "path", "frames", "fps", "width", "height", "duration", "bytes", "source")}) + "\n" for e in ordered))
    report = {"input": str(args.input), "settings": asdict(settings), "videos": len(jobs), "prepared": len(ordered),
              "skipped_as_done": len(jobs) - len(todo), "failed": failures,
              "seconds": round(time.perf_counter() - t0, 2), "workers": args.workers}
    _atomic_write(out_dir / "prep_report.json", json.dumps(report, indent=1) + "\n")
    for path, reason in failures.items():
        print(f"videomae data prep: skipped {path}: {reason}", file=sys.stderr)
    print(f"prepared {len(ordered)} of {len(jobs)} videos ({len(jobs) - len(todo)} already done, "
          f"{len(failures)} failed) -> {out_dir / 'list.txt'}")
    return 1 if failures else 0


def _progress(total: int, done: int, quiet: bool):
    from tqdm import tqdm

    bar = tqdm(total=total, initial=done, unit="video", desc="prep", disable=quiet)

    def update(failed: int, final: bool = False) -> None:
        if final:
            bar.close()
            return
        bar.update(1)
        bar.set_postfix(failed=failed)

    return update


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="videomae data prep", description=__doc__.splitlines()[0])
    add_prep_arguments(parser)
    return run_prep(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
