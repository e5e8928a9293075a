"""Loader throughput: clips/s for 1..N workers, with and without repeated sampling, decode vs augmentation.

Sources: synthetic 320p H.264 clips (`videomae.data.synth`, 10 s at 30 fps, x264 GOP 250 like
ffmpeg's default, with grain so the bitrate is near real 320p footage; the measured bitrate is
reported). Clips: 16 frames x sampling rate 4 at 224x224, pretraining augmentation, tube masks.

    python bench/loader.py                    # writes bench/results/loader-<device>.json and .md
    python bench/loader.py --quick            # fewer videos and batches (smoke)
"""
# ruff: noqa: E402  (the checkout goes on sys.path before videomae is imported)

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without installing

import numpy as np
import torch

from videomae.data import GpuAugment, MaskGenerator, PretrainDataset, VideoRecord, build_loader, pad_frames
from videomae.data import decode as D
from videomae.data import sampling as S
from videomae.data import transforms as TF
from videomae.data.loader import default_cache_dir
from videomae.data.synth import render_clip, write_mp4

NUM_FRAMES, RATE, SIZE = 16, 4, 224
GRID = (NUM_FRAMES // 2, SIZE // 16, SIZE // 16)


# ---------------------------------------------------------------- sources


def make_sources(folder: Path, count: int, frames: int, hw: tuple[int, int], grain: float, crf: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"src_{hw[0]}p_{frames}f_g{grain}_crf{crf}_{i:03d}.mp4"
        if not path.exists():
            rng = np.random.default_rng(i)
            clip = render_clip(i % 8, frames, hw, rng)
            if grain > 0:  # film grain: the synthetic shapes alone compress 10x better than real footage
                clip = np.clip(clip + rng.normal(0, grain, clip.shape), 0, 255).astype(np.uint8)
            tmp = path.with_suffix(".tmp.mp4")
            write_mp4(tmp, clip, fps=30, crf=crf, gop=250)
            tmp.rename(path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- in-process breakdown (one thread)


def breakdown(paths: list[Path], backend: str, num_sample: int, repeats: int) -> dict:
    """Median ms per video for decode, and per clip for crop+resize+normalize and for the mask."""
    rng = np.random.default_rng(0)
    masker = MaskGenerator("tube", 0.9, GRID)
    decode_ms, aug_ms, mask_ms = [], [], []
    for r in range(repeats):
        path = str(paths[r % len(paths)])
        seeds = rng.integers(2**62, size=num_sample)
        t0 = time.perf_counter()
        clips = D.read_frames(path, lambda n, seeds=seeds: [
            S.kinetics_pretrain(n, NUM_FRAMES, RATE, np.random.default_rng(s)) for s in seeds], backend=backend)
        decode_ms.append((time.perf_counter() - t0) * 1e3)
        for frames in clips:
            t1 = time.perf_counter()
            box = TF.multiscale_crop_box(frames.shape[1], frames.shape[2], SIZE, rng)
            TF.normalize(TF.crop_resize(TF.as_tchw(frames), box, SIZE))
            t2 = time.perf_counter()
            masker(torch.Generator().manual_seed(r))
            mask_ms.append((time.perf_counter() - t2) * 1e3)
            aug_ms.append((t2 - t1) * 1e3)
    dec, aug, msk = (float(np.median(x)) for x in (decode_ms, aug_ms, mask_ms))
    per_video = dec + num_sample * (aug + msk)
    return {"backend": backend, "num_sample": num_sample, "decode_ms_per_video": round(dec, 1),
            "aug_ms_per_clip": round(aug, 1), "mask_ms_per_clip": round(msk, 2),
            "clips_per_s_one_core": round(1e3 * num_sample / per_video, 1)}


# ---------------------------------------------------------------- DataLoader throughput


def loader_throughput(paths, workers: int, num_sample: int, batch_size: int, batches: int, backend: str,
                      trials: int, gpu_aug: bool = False) -> dict:
    """clips/s through a VideoLoader, `trials` times: the median is typical on shared cores, the best is
    the closest to an idle machine."""
    records = [VideoRecord(str(p)) for p in paths]
    ds = PretrainDataset(records, num_frames=NUM_FRAMES, sampling_rate=RATE, input_size=SIZE,
                         mask_fn=MaskGenerator("tube", 0.9, GRID), num_sample=num_sample, gpu_aug=gpu_aug,
                         backend=backend)
    # Repeat the source list so one epoch holds enough batches (and never runs dry mid-measure).
    need = (batches + workers) * batch_size
    ds.records = (records * (need // len(records) + 1))[:need]
    rates = []
    for trial in range(trials):
        loader = build_loader(ds, batch_size, num_workers=workers, seed=trial, drop_last=False)
        it = iter(loader)
        for _ in range(workers):  # warm-up: each worker's first batch includes process start and imports
            next(it)
        clips, t0 = 0, time.perf_counter()
        for _ in range(batches):
            clips += next(it)[0].shape[0]
        rates.append(clips / (time.perf_counter() - t0))
        del it
    median, best = float(np.median(rates)), max(rates)
    return {"backend": backend, "workers": workers, "num_sample": num_sample, "gpu_aug": gpu_aug,
            "clips_per_trial": clips, "trials": trials, "clips_per_s": round(median, 1),
            "clips_per_s_best": round(best, 1), "clips_per_s_per_worker": round(median / workers, 1),
            "clips_per_s_per_worker_best": round(best / workers, 1)}


def gpu_aug_rate(paths, device: str, num_sample: int, batch_size: int, repeats: int) -> dict:
    """GpuAugment alone on a batch of uint8 clips, on `device` (CPU here when there is no GPU)."""
    ds = PretrainDataset([VideoRecord(str(p)) for p in paths], num_frames=NUM_FRAMES, sampling_rate=RATE,
                         input_size=SIZE, num_sample=num_sample, gpu_aug=True, backend="pyav")
    items = [ds[i % len(paths)] for i in range(batch_size)]
    frames = pad_frames([f for it in items for f in it[0]])
    boxes = torch.cat([it[1] for it in items])
    aug = GpuAugment(SIZE)
    aug(frames, boxes, device=device)  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        aug(frames, boxes, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    t = float(np.median(times))
    return {"device": device, "clips": frames.shape[0], "ms_per_batch": round(t * 1e3, 1),
            "clips_per_s": round(frames.shape[0] / t, 1), "threads": torch.get_num_threads(),
            "includes_host_to_device_copy": device != "cpu"}


# ---------------------------------------------------------------- report


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).parent)
        return out.stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "no-commit-yet"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def meta(paths, args) -> dict:
    sizes = [p.stat().st_size for p in paths]
    return {
        "git_sha": git_sha(), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_name(),
        "cpu": cpu_name(), "cpu_cores": os.cpu_count(), "load_avg_at_start": os.getloadavg(),
        "python": platform.python_version(), "torch": torch.__version__, "av": D.av.__version__,
        "decord": getattr(D.decord, "__version__", None), "numpy": np.__version__,
        "sources": {"count": len(paths), "frames": args.frames, "height": args.height, "width": args.width,
                    "fps": 30, "codec": "h264 (libx264, yuv420p, GOP 250)", "crf": args.crf, "grain": args.grain,
                    "kbps_mean": round(float(np.mean(sizes)) * 8 / (args.frames / 30) / 1e3)},
        "clip": {"num_frames": NUM_FRAMES, "sampling_rate": RATE, "size": SIZE, "mask": "tube 0.9"},
        "batch_size_videos": args.batch_size,
    }


def markdown(result: dict) -> str:
    m = result["meta"]
    lines = [
        "# Loader benchmark", "",
        f"{m['date_utc']}, git {m['git_sha']}, {m['device']}, {m['cpu_cores']} cores "
        f"(load average at start {', '.join(f'{x:.1f}' for x in m['load_avg_at_start'])}), "
        f"torch {m['torch']}, PyAV {m['av']}, decord {m['decord']}.", "",
        f"Sources: {m['sources']['count']} synthetic {m['sources']['height']}x{m['sources']['width']} H.264 clips, "
        f"{m['sources']['frames']} frames at 30 fps, GOP 250, {m['sources']['kbps_mean']} kbps. "
        f"Clips {NUM_FRAMES}x{SIZE}x{SIZE}, sampling rate {RATE}, tube masks 0.9.", "",
        "## Per clip, one core (in process, 1 thread)", "",
        "| backend | num_sample | decode ms/video | aug ms/clip | mask ms/clip | clips/s/core |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["breakdown"]:
        lines.append(f"| {r['backend']} | {r['num_sample']} | {r['decode_ms_per_video']} | {r['aug_ms_per_clip']} | "
                     f"{r['mask_ms_per_clip']} | {r['clips_per_s_one_core']} |")
    lines += ["", "## DataLoader (worker processes)", "",
              f"Median (best) of {result['loader'][0]['trials']} trials; `aug in main` = workers only decode "
              "and draw boxes, GpuAugment runs in the training process (not included here).", "",
              "| backend | aug in | workers | num_sample | clips/s | clips/s per worker |", "|---|---|---|---|---|---|"]
    for r in result["loader"]:
        where = "main (GpuAugment)" if r["gpu_aug"] else "workers"
        lines.append(f"| {r['backend']} | {where} | {r['workers']} | {r['num_sample']} | {r['clips_per_s']} "
                     f"({r['clips_per_s_best']}) | {r['clips_per_s_per_worker']} "
                     f"({r['clips_per_s_per_worker_best']}) |")
    lines += ["", "## GpuAugment alone (crop + resize + normalize of a uint8 batch)", "",
              "| device | clips | ms/batch | clips/s | threads |", "|---|---|---|---|---|"]
    for r in result["gpu_aug"]:
        lines.append(f"| {r['device']} | {r['clips']} | {r['ms_per_batch']} | {r['clips_per_s']} | {r['threads']} |")
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--width", type=int, default=428)
    p.add_argument("--grain", type=float, default=5.0)
    p.add_argument("--crf", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=4, help="videos per batch")
    p.add_argument("--batches", type=int, default=6, help="timed batches per worker count")
    p.add_argument("--repeats", type=int, default=12, help="videos timed in the in-process breakdown")
    p.add_argument("--trials", type=int, default=3, help="loader measurements per setting")
    p.add_argument("--max-workers", type=int, default=os.cpu_count())
    p.add_argument("--cache", type=Path, default=default_cache_dir() / "bench-loader")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tag", default="", help="suffix of the results file name, e.g. a source variant")
    p.add_argument("--note", action="append", default=[], help="free-text note stored with the results")
    args = p.parse_args()
    if args.quick:
        args.videos, args.frames, args.batches, args.repeats, args.trials = 2, 90, 2, 2, 1

    t0 = time.perf_counter()
    paths = make_sources(args.cache, args.videos, args.frames, (args.height, args.width), args.grain, args.crf)
    print(f"sources ready in {time.perf_counter() - t0:.1f}s: {args.cache}")
    result = {"meta": meta(paths, args), "breakdown": [], "loader": [], "gpu_aug": [], "notes": args.note}

    torch.set_num_threads(1)  # what one loader worker gets
    backends = ["decord", "pyav"] if D.decord is not None else ["pyav"]
    for backend in backends:
        for ns in (1, 4):
            row = breakdown(paths, backend, ns, args.repeats)
            print("breakdown", row)
            result["breakdown"].append(row)
    best = max(backends, key=lambda b: next(r["clips_per_s_one_core"] for r in result["breakdown"]
                                            if r["backend"] == b and r["num_sample"] == 4))
    for backend in dict.fromkeys(["auto", best]):
        for workers in range(1, args.max_workers + 1):
            for ns in (1, 4):
                row = loader_throughput(paths, workers, ns, args.batch_size, args.batches, backend, args.trials)
                print("loader", row)
                result["loader"].append(row)
    for workers in range(1, args.max_workers + 1):
        row = loader_throughput(paths, workers, 4, args.batch_size, args.batches, best, args.trials, gpu_aug=True)
        print("loader", row)
        result["loader"].append(row)
    torch.set_num_threads(os.cpu_count())
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        row = gpu_aug_rate(paths, device, 4, args.batch_size, args.repeats)
        print("gpu_aug", row)
        result["gpu_aug"].append(row)

    args.out.mkdir(parents=True, exist_ok=True)
    tag = "cuda" if torch.cuda.is_available() else "cpu"
    stem = args.out / "-".join(x for x in ("loader", tag, args.tag, "quick" if args.quick else "") if x)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
