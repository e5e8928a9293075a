"""`videomae data prep`: re-encode a dataset into a training-ready copy that decodes fast.

Each video is decoded with PyAV (FFmpeg from PyPI, no system ffmpeg), resized to the short side (never up),
optionally re-timed to a fixed fps, and written as H.264 (yuv420p, keyframe every `--gop` frames, B-frames the
seeking reader can drop, no audio, moov atom first). Several lists (or one call per list) fill one folder in the
layout `videomae finetune --data_path DIR` reads:

- `videos/<name>.mp4`: the copies, under the sources' relative paths; two sources that would get one name are
  told apart deterministically (`a.avi.mp4`, then `a~2.mp4`, ...) and the manifest records it (`renamed_from`);
- `train.txt`, `val.txt`, `test.txt`: one list per input, named by the split its file name says (`--split` for
  another name; `list.txt` when it says none), `path label` lines (`path 0 -1` when unlabeled);
- `manifest.jsonl`: one line per video, `{path, frames, fps, width, height, duration, bytes, source}`, merged
  across calls; `videomae.data.lists` reads it, so training knows every length without probing a file;
- `prep_report.json`: per split, the input, settings, counts and every input that failed, with its reason.

A list another input wrote is never replaced; the output folder is never read as input (an output inside the input
folder is skipped). Resumable: a video is done once its `.done/<name>.json` exists, so an interrupted run picks up
where it stopped; a bad input is named and skipped, never fatal. A full disk or a read-only folder stops the run in
one line naming the path, and what was done is kept.

Examples:

    videomae data prep k400/train.csv k400/val.csv k400/test.csv --output_dir /data/k400-256 --workers 16
    videomae data prep ssv2/train.txt --output_dir /data/ssv2-256 --root /data/ssv2 --fps 12
    videomae data prep my_videos/ --output_dir my_videos/prepped --split train
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import multiprocessing as mp
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from videomae.data.lists import LIST_FORMATS, MANIFEST, load_records
from videomae.data.reencode import PrepSettings, encode_one

SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
REPORT = "prep_report.json"


@dataclass(frozen=True)
class Job:
    source: str
    name: str  # relative output path, ends in .mp4
    label: int
    frame_folder: bool = False
    renamed_from: str | None = None  # the name it would have had, taken by another source


@dataclass
class Split:
    """One input and the list it becomes."""

    input: str
    name: str  # train / val / test / ...
    jobs: list[Job] = field(default_factory=list)
    labeled: bool = False
    excluded: int = 0  # files inside the output folder, not read


class PrepError(ValueError):
    """A bad argument or input: one line, nothing written."""


def add_prep_arguments(parser: argparse.ArgumentParser) -> None:
    def flag(*names, **kw):
        spelled = [v for n in names for v in ([n, n.replace("_", "-")] if "_" in n else [n])]
        parser.add_argument(*dict.fromkeys(spelled), **kw)

    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="list files (official formats) or folders of "
                        "videos, one per split; without --output_dir the last one is the output folder")
    flag("--output_dir", default=None, help="output folder (created; rerun with the same one to resume or to add "
         "another split)")
    flag("--split", default=None, help="list name for a single input (default: train, val or test as its file "
         "name says, else 'list')")
    flag("--short_side", type=int, default=256,
         help="resize so the shorter side is this many pixels (never upscaled; 256 or 320 usual)")
    flag("--fps", type=float, default=None,
         help="re-time to this frame rate (nearest source frame); without it every frame is kept")
    flag("--gop", type=int, default=16,
         help="keyframe interval in frames: a clip decodes from at most gop-1 frames before it")
    flag("--crf", type=int, default=23, help="x264 quality (lower is better and larger)")
    flag("--preset", default="veryfast", help="x264 preset")
    flag("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    flag("--root", "--data_root", dest="root", default=None,
         help="prefix of relative paths in the lists (official --data_root)")
    flag("--list_format", default="auto", choices=LIST_FORMATS, help="list file format")
    flag("--no_progress", action="store_true", help="no progress bar")


def split_name(path: str) -> str | None:
    """'k400_val.csv' -> 'val'; None when the file name names no split."""
    words = re.split(r"[^a-z]+", Path(path).stem.lower())
    return next((SPLIT_WORDS[w] for w in words if w in SPLIT_WORDS), None)


def resolve(args) -> list[Split]:
    """Every check before anything is written: sets `args.output_dir` and returns the splits. PrepError: one line."""
    inputs = list(args.inputs)
    if getattr(args, "output_dir", None) is None:
        if len(inputs) < 2:
            raise PrepError("--output_dir is required (or give the output folder after the inputs)")
        args.output_dir = inputs.pop()
    args.inputs = inputs
    problems = [f"input {p!r}: no such list file or folder" for p in inputs if not Path(p).exists()]
    if args.short_side < 16 or args.short_side % 2:
        problems.append(f"--short_side must be an even number >= 16, got {args.short_side}")
    if args.fps is not None and not 0 < args.fps <= 240:
        problems.append(f"--fps must be in (0, 240], got {args.fps}")
    if args.gop < 1:
        problems.append(f"--gop must be >= 1, got {args.gop}")
    if not 0 <= args.crf <= 51:
        problems.append(f"--crf must be in [0, 51], got {args.crf}")
    if args.workers < 1:
        problems.append(f"--workers must be >= 1, got {args.workers}")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        problems.append(f"--output_dir {out} exists and is not a folder")
    if args.split is not None and len(inputs) > 1:
        problems.append("--split names the list of a single input; with several, each file name says its split")
    if problems:
        raise PrepError("; ".join(problems))
    splits, names = [], {}
    for path in inputs:
        name = args.split or split_name(path) or "list"
        if name in names:
            raise PrepError(f"inputs {names[name]} and {path} both become {name}.txt: give one call each with --split")
        names[name] = path
        splits.append(Split(path, name))
    earlier = _read_json(out / REPORT).get("splits", {})
    for sp in splits:
        wrote = earlier.get(sp.name, {}).get("input")
        if wrote is not None and os.path.abspath(wrote) != os.path.abspath(sp.input):
            raise PrepError(f"{out / (sp.name + '.txt')} was written from {wrote}, not {sp.input}: choose another "
                            "--split or --output_dir (a list is never replaced by another input's)")
    _plan(args, splits, out)
    return splits


def _plan(args, splits: list[Split], out: Path) -> None:
    """Each split's jobs, with one output name per source, unique across this call and the folder's manifest."""
    taken = {}  # casefolded name -> source (file systems that ignore case would merge them)
    for entry in read_manifest_entries(out):
        taken[entry["path"].removeprefix("videos/").casefold()] = entry.get("source")
    by_source: dict[str, Job] = {}
    out_abs = out.resolve()
    for sp in splits:
        try:
            records = load_records(sp.input, root=args.root, fmt=args.list_format)
        except (ValueError, FileNotFoundError) as err:
            raise PrepError(str(err).splitlines()[0]) from None
        base = Path(sp.input) if Path(sp.input).is_dir() else Path(args.root or Path(sp.input).parent)
        for rec in records:
            src = Path(rec.path).resolve()
            if out_abs in src.parents:  # our own output, inside the input folder
                sp.excluded += 1
                continue
            key = str(src)
            if key not in by_source:
                by_source[key] = _job(rec, src, base, taken)
            sp.jobs.append(Job(rec.path, by_source[key].name, rec.label, rec.is_frame_folder,
                               by_source[key].renamed_from))
        sp.labeled = any(j.label >= 0 for j in sp.jobs)
        if not sp.jobs:
            raise PrepError(f"{sp.input}: no videos to prepare" + (f" ({sp.excluded} inside --output_dir skipped)"
                                                                    if sp.excluded else ""))


def _job(rec, src: Path, base: Path, taken: dict) -> Job:
    try:
        rel = src.relative_to(base.resolve())
    except ValueError:  # outside the list's folder: a flat name, disambiguated by the full path
        rel = Path(f"{hashlib.sha1(str(src).encode()).hexdigest()[:8]}_{src.name}")
    wanted = rel.with_suffix(".mp4").as_posix()
    candidates = [wanted, rel.as_posix() + ".mp4"] + [f"{rel.with_suffix('').as_posix()}~{i}.mp4" for i in
                                                      range(2, 10_000)]
    for name in dict.fromkeys(candidates):
        owner = taken.get(name.casefold())
        if owner is None or owner == str(src):
            taken[name.casefold()] = str(src)
            return Job(str(src), name, rec.label, rec.is_frame_folder, None if name == wanted else wanted)
    raise PrepError(f"{src}: no free output name")  # 10,000 sources sharing one name


def _done_path(out_dir: Path, job: Job) -> Path:
    return out_dir / ".done" / (job.name + ".json")


# Errors of the output folder: they stop the run (the next video would fail the same way), unlike a bad input.
_FATAL = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def _storage_problem(err: BaseException, out_dir: str) -> str | None:
    """One line when `err` is the output folder refusing a write, else None (the input's fault)."""
    from videomae.integrity import storage_error

    cause = storage_error(err)
    if cause is None:
        return None
    where = str(cause.filename or out_dir)
    ours = os.path.abspath(where).startswith(os.path.abspath(out_dir))
    if cause.errno in _FATAL or (cause.errno in (errno.EACCES, errno.EPERM) and ours):
        return f"cannot write {where}: {cause.strerror or os.strerror(cause.errno)}"
    return None


def _work(task: tuple[Job, str, PrepSettings]) -> tuple[Job, dict | None, str | None, str | None]:
    """-> (job, manifest entry, why it failed, why the run must stop)."""
    job, out_dir, settings = task
    try:
        entry = encode_one(job, out_dir, settings)
        entry["settings"] = asdict(settings)
        done = _done_path(Path(out_dir), job)
        done.parent.mkdir(parents=True, exist_ok=True)
        tmp = done.with_name(done.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, done)
    except Exception as err:  # noqa: BLE001 - a bad input is reported, never fatal
        fatal = _storage_problem(err, out_dir)
        text = str(err).strip().splitlines()
        return job, None, (text[-1] if text else type(err).__name__)[:200], fatal
    return job, entry, None, None


def _finished(out_dir: Path, job: Job, settings: PrepSettings) -> dict | None:
    try:
        entry = json.loads(_done_path(out_dir, job).read_text())
    except (OSError, ValueError):
        return None
    if entry.get("settings") != asdict(settings) or not (out_dir / entry["path"]).is_file():
        return None  # other settings, or the copy was deleted: redo
    if os.path.abspath(entry.get("source", "")) != os.path.abspath(job.source):
        return None  # another source held this name in an earlier run
    return entry


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_manifest_entries(out_dir: Path) -> list[dict]:
    entries = []
    try:
        lines = (out_dir / MANIFEST).read_text().splitlines()
    except OSError:
        return entries
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            entries.append(entry)
    return entries


def _write(path: Path, text: str) -> None:
    from videomae.integrity import write_atomic

    write_atomic(path, lambda f: f.write(text.encode()), sidecar_too=False)


MANIFEST_KEYS = ("path", "frames", "fps", "width", "height", "duration", "bytes", "source")


def run_prep(args, splits: list[Split] | None = None) -> int:
    """0: every input prepared; 1: some inputs failed (named in prep_report.json) or the output folder refused a
    write (one line); 2: bad arguments (one line)."""
    if splits is None:
        try:
            splits = resolve(args)
        except PrepError as err:
            print(f"videomae data prep: error: {err}", file=sys.stderr)
            return 2
    from videomae.integrity import WriteFailed

    out_dir = Path(args.output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in (out_dir / "videos").rglob(".*.tmp.mp4"):  # a killed run's partial copies (one run per folder)
            stale.unlink(missing_ok=True)
    except OSError as err:
        print(f"videomae data prep: error: cannot write {err.filename or out_dir}: {err.strerror}", file=sys.stderr)
        return 1
    settings = PrepSettings(args.short_side, args.fps, args.gop, args.crf, args.preset)
    unique = list({j.name: j for sp in splits for j in sp.jobs}.values())
    entries: dict[str, dict] = {}
    todo = []
    for job in unique:
        entry = _finished(out_dir, job, settings)
        if entry is not None:
            entries[job.name] = entry
        else:
            todo.append(job)
    failures: dict[str, str] = {}
    t0 = time.perf_counter()
    bar = _progress(len(unique), len(entries), args.no_progress)
    tasks = [(job, str(out_dir), settings) for job in todo]
    pool = None
    if args.workers == 1 or len(tasks) <= 1:
        results = map(_work, tasks)
    else:
        pool = mp.get_context("spawn").Pool(min(args.workers, len(tasks)))
        results = pool.imap_unordered(_work, tasks)
    stop = None
    try:
        for job, entry, reason, fatal in results:
            if fatal is not None:
                stop = fatal
                break
            if entry is not None:
                entries[job.name] = entry
            else:
                failures[job.source] = reason
            bar(len(failures))
    finally:
        if pool is not None:
            pool.terminate() if stop else pool.close()
            pool.join()
    bar(len(failures), final=True)
    if stop is not None:
        print(f"videomae data prep: error: {stop}; the {len(entries)} videos done are kept (rerun to continue)",
              file=sys.stderr)
        return 1
    try:
        _write_outputs(args, splits, out_dir, settings, entries, failures, todo, time.perf_counter() - t0)
    except WriteFailed as err:
        print(f"videomae data prep: error: {err}", file=sys.stderr)
        return 1
    for path, reason in failures.items():
        print(f"videomae data prep: skipped {path}: {reason}", file=sys.stderr)
    for sp in splits:
        done = sum(j.name in entries for j in sp.jobs)
        skipped = f", {sp.excluded} inside the output folder not read" if sp.excluded else ""
        files = len({j.name for j in sp.jobs})
        print(f"prepared {done} of {len(sp.jobs)} videos ({files} files, {sum(j.source in failures for j in sp.jobs)}"
              f" failed{skipped}) -> {out_dir / (sp.name + '.txt')}")
    return 1 if failures else 0


def _write_outputs(args, splits, out_dir: Path, settings, entries, failures, todo, seconds: float) -> None:
    """The lists, the merged manifest and the report: each written whole (temporary file, then renamed)."""
    done_names = {j.name for j in todo}
    for sp in splits:
        lines = [f"{entries[j.name]['path']} {j.label}" if sp.labeled else f"{entries[j.name]['path']} 0 -1"
                 for j in sp.jobs if j.name in entries]
        _write(out_dir / f"{sp.name}.txt", "".join(line + "\n" for line in lines))
    manifest = {e["path"]: e for e in read_manifest_entries(out_dir)}
    renamed = {j.name: j.renamed_from for sp in splits for j in sp.jobs if j.renamed_from}
    for name, e in entries.items():
        row = {k: e[k] for k in MANIFEST_KEYS}
        if name in renamed:
            row["renamed_from"] = "videos/" + renamed[name]
        manifest[e["path"]] = row
    _write(out_dir / MANIFEST, "".join(json.dumps(e) + "\n" for e in manifest.values()))
    report = _read_json(out_dir / REPORT)
    report.setdefault("splits", {})
    for sp in splits:
        report["splits"][sp.name] = {
            "input": str(sp.input), "list": f"{sp.name}.txt", "settings": asdict(settings), "videos": len(sp.jobs),
            "prepared": sum(j.name in entries for j in sp.jobs),
            "skipped_as_done": sum(j.name in entries and j.name not in done_names for j in sp.jobs),
            "inside_output_not_read": sp.excluded,
            "failed": {j.source: failures[j.source] for j in sp.jobs if j.source in failures},
            "renamed": {j.source: j.name for j in sp.jobs if j.renamed_from},
            "seconds": round(seconds, 2), "workers": args.workers,
        }
    _write(out_dir / REPORT, json.dumps(report, indent=1) + "\n")


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
