"""Loader throughput: ViT-B pretraining clips/s per CPU core, raw vs prepped sources, per decoder backend.

    python bench/loader.py                 # CPU: bench/results/loader-cpu.json ({"rows": [...]}) and loader-cpu.md
    python bench/loader.py --rehearse      # the same at tiny sizes, in seconds (CI; bench/gpu.sh --rehearse)
    python bench/loader.py --gpu           # GPU: NVDEC clips/s (or why not) and DeviceFeed ms per batch

Sources: `raw` = synthetic 10 s, 30 fps H.264 at 480x852 and 4.5 Mbps (x264 veryfast, GOP 250, what
ffmpeg writes by default), grain included so motion search and entropy coding work as on footage; `prepped`
= the same videos through `videomae data prep` (short side 256, GOP 16, non-reference B-frames).
Recipes: K400 (16 frames, stride 4) and SSv2 (16 frames, stride 2), `num_sample` 1 and 4 (one decode
serves every clip of a video). `aug`: `gpu` = the worker only decodes and draws crop boxes and ships uint8
frames (DeviceFeed does the rest on the GPU), `cpu` = crop/resize/normalize in the worker as well.

Per core = clips per second of process CPU time (one thread, in process): robust to the other jobs of a
shared machine; the wall-clock rate is kept beside it. Projected to 16 cores = per core x 16 (the worker
processes share nothing; the 1- and 2-worker DataLoader rows check the scaling). Each in-process row
splits the CPU time per video into open+index (demux), decode, colour conversion (yuv -> rgb), gather
(copies into clips) and, per clip, augmentation and mask.
"""
# ruff: noqa: E402  (the checkout goes on sys.path before videomae is imported)

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without installing

import numpy as np
import torch

from bench.common import ResultWriter, results_dir
from videomae.data import DeviceFeed, MaskGenerator, PretrainDataset, VideoRecord, build_loader
from videomae.data import datasets as DS
from videomae.data import decode as D
from videomae.data.loader import default_cache_dir

NUM_FRAMES, SIZE = 16, 224
GRID = (NUM_FRAMES // 2, SIZE // 16, SIZE // 16)
RECIPES = {"k400": 4, "ssv2": 2}  # name -> sampling rate
TARGET_PER_CORE = 100


# ---------------------------------------------------------------- sources


def _content(t: int, h: int, w: int, seed: int) -> np.ndarray:
    """Smooth moving colour fields plus film grain (the grain sets the bitrate a real camera would need)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        s = x + 3.0 * i + 50 * seed
        rgb = np.stack([128 + 90 * np.sin(s / 40 + c) * np.cos((y + i) / 55 - c) for c in (0.0, 2.0, 4.0)], -1)
        out[i] = np.clip(rgb + rng.normal(0, 6, (h, w, 1)), 0, 255)
    return out


def write_source(path: Path, t: int, hw: tuple[int, int], kbps: int, seed: int, gop: int = 250) -> None:
    import av

    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with av.open(str(tmp), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=30)
        stream.height, stream.width = hw
        stream.pix_fmt, stream.bit_rate = "yuv420p", kbps * 1000
        stream.options = {"preset": "veryfast", "g": str(gop), "threads": "1"}
        stream.codec_context.time_base = Fraction(1, 30)
        for i, frame in enumerate(_content(t, *hw, seed)):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, 30)
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.rename(path)


def make_sources(cache: Path, count: int, t: int, hw: tuple[int, int], kbps: int) -> list[Path]:
    folder = cache / f"raw_{hw[0]}x{hw[1]}_{t}f_{kbps}k"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"v{i:02d}.mp4" for i in range(count)]
    for i, p in enumerate(paths):
        if not p.exists():
            write_source(p, t, hw, kbps, seed=i)
    return paths


def prep_sources(raw: list[Path], out: Path, short_side: int, workers: int = 1) -> tuple[list[VideoRecord], dict]:
    """Run `videomae data prep` on the raw folder -> (prepped records, prep throughput)."""
    from videomae.data import prep
    from videomae.data.lists import load_records

    parser = argparse.ArgumentParser()
    prep.add_prep_arguments(parser)
    done = out / "list.txt"
    fresh = not done.exists()
    cpu0, t0 = time.process_time(), time.perf_counter()
    rc = prep.run_prep(parser.parse_args([str(raw[0].parent), str(out), "--short-side", str(short_side),
                                          "--workers", str(workers), "--no-progress"]))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"prep failed on the benchmark sources (see {out / 'prep_report.json'})")
    records = load_records(done)
    seconds = sum(r.num_frames for r in records) / 30
    stats = {}
    if fresh and workers == 1:  # in process: CPU time is this process's
        stats = {"source_seconds": round(seconds, 2), "prep_cpu_s": round(cpu, 2), "prep_wall_s": round(wall, 2),
                 "hours_per_core_minute": round(seconds / 3600 / (cpu / 60), 3),
                 "hours_per_core_minute_wall": round(seconds / 3600 / (wall / 60), 3)}
    return records, stats


# ---------------------------------------------------------------- in process, one thread, with a CPU-time breakdown


class Probe:
    """Accumulates CPU seconds of wrapped functions (module attributes patched for the duration)."""

    def __init__(self):
        self.t: dict[str, float] = {}
        self.undo: list[tuple[object, str, object]] = []

    def wrap(self, owner, attr: str, key: str, wrap_result=None):
        original = getattr(owner, attr)

        def timed(*a, **k):
            t0 = time.process_time()
            try:
                out = original(*a, **k)
            finally:
                self.t[key] = self.t.get(key, 0.0) + time.process_time() - t0
            return wrap_result(out) if wrap_result else out

        own = not isinstance(owner, type(sys)) and attr not in vars(owner)  # a method looked up on the class
        self.undo.append((owner, attr, None if own else original))
        setattr(owner, attr, timed)

    def restore(self):
        for owner, attr, original in reversed(self.undo):
            if original is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)


def dataset(records, rate: int, num_sample: int, backend: str, aug: str) -> PretrainDataset:
    return PretrainDataset(records, num_frames=NUM_FRAMES, sampling_rate=rate, input_size=SIZE,
                           mask_fn=MaskGenerator("tube", 0.9, GRID), num_sample=num_sample, gpu_aug=aug == "gpu",
                           backend=backend)


def _nbytes(item) -> int:
    if isinstance(item, torch.Tensor):
        return item.numel() * item.element_size()
    return sum(_nbytes(x) for x in item)


def in_process(records, rate: int, num_sample: int, backend: str, aug: str, items: int) -> dict:
    ds = dataset(records, rate, num_sample, backend, aug)
    ds[0]  # warm-up: imports, swscale context, first file open
    probe = Probe()
    backend_obj = D.DECODERS[backend if backend != "auto" else D.AUTO_ORDER[0]]

    def wrap_reader(reader):
        probe.wrap(reader, "get", "get")
        return reader

    probe.wrap(backend_obj, "open", "open", wrap_result=wrap_reader)
    probe.wrap(D, "_rgb", "rgb")
    probe.wrap(DS, "read_frames", "read")
    probe.wrap(ds, "mask_fn", "mask")
    shipped = 0
    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i in range(items):
            shipped += _nbytes(ds[(i + 1) % len(records)][:-1])  # everything but the masks (bytes of the clips)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    finally:
        probe.restore()
    t = probe.t
    clips = items * num_sample
    per_video = {k: 1e3 * v / items for k, v in t.items()}
    decode_ms = per_video.get("get", 0.0) - per_video.get("rgb", 0.0)
    split = {
        "open_index_ms_per_video": per_video.get("open", 0.0),
        "decode_ms_per_video": decode_ms,
        "rgb_ms_per_video": per_video.get("rgb", 0.0),
        "gather_ms_per_video": per_video.get("read", 0.0) - per_video.get("open", 0.0) - per_video.get("get", 0.0),
        "aug_ms_per_clip": (1e3 * cpu / items - per_video.get("read", 0.0) - per_video.get("mask", 0.0)) / num_sample,
        "mask_ms_per_clip": per_video.get("mask", 0.0) / num_sample,
    }
    per_core = clips / cpu
    return {"workers": 0, "items": items, "clips": clips, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
            "clips_per_s_per_core": round(per_core, 1), "clips_per_s_wall": round(clips / wall, 1),
            "projected_16_cores": round(16 * per_core), "bytes_per_clip": shipped // clips,
            **{k: round(v, 2) for k, v in split.items()}}


# ---------------------------------------------------------------- DataLoader (worker processes)


def through_loader(records, rate: int, num_sample: int, backend: str, aug: str, workers: int, batches: int,
                   batch_size: int) -> dict:
    ds = dataset(records, rate, num_sample, backend, aug)
    need = (batches + 3 * workers) * batch_size
    ds.records = (list(records) * (need // len(records) + 1))[:need]
    loader = build_loader(ds, batch_size, num_workers=workers, seed=0, drop_last=False)
    it = iter(loader)
    # Untimed: each worker's first batch (process start-up), then the batches prefetched meanwhile (up to
    # 2 per worker arrive at once); what follows arrives at the rate the workers make batches.
    for _ in range(3 * workers):
        next(it)
    clips, t0 = 0, time.perf_counter()
    for _ in range(batches):
        clips += next(it)[-1].visible.shape[0]  # TokenIds: one row per clip
    wall = time.perf_counter() - t0
    del it
    per_core = clips / wall / workers
    return {"workers": workers, "clips": clips, "wall_s": round(wall, 3), "clips_per_s": round(clips / wall, 1),
            "clips_per_s_per_core": round(per_core, 1), "projected_16_cores": round(16 * per_core)}


# ---------------------------------------------------------------- GPU: DeviceFeed and NVDEC


def gpu_augment_row(device: str, clips: int, hw: tuple[int, int], repeats: int) -> dict:
    """`DeviceFeed` (the training step's `prepare`: batched crop + resize to uint8 clips) on a batch of uint8 crops
    as the loader ships them (random pixels: the cost does not depend on them), with the frames already on the
    device and with the side-stream copy from pinned memory."""
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (clips, NUM_FRAMES, *hw, 3), dtype=torch.uint8, generator=g)
    rng = np.random.default_rng(0)
    from videomae.data.transforms import multiscale_crop_box

    boxes = torch.tensor([multiscale_crop_box(hw[0], hw[1], SIZE, rng) for _ in range(clips)])
    feed = DeviceFeed(device, SIZE)
    masks = torch.zeros(clips, 8, dtype=torch.bool)
    cuda = device.startswith("cuda")
    if cuda:
        frames, boxes = frames.pin_memory(), boxes.pin_memory()
    on_device = frames.to(device), boxes.to(device)

    def timed(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return float(np.median(times)) * 1e3

    ms = timed(lambda: feed((*on_device, masks)))
    ms_copy = timed(lambda: feed((frames, boxes, masks))) if cuda else ms
    return {"kind": "gpu_augment", "impl": "DeviceFeed", "clips": clips, "frame_hw": list(hw),
            "ms_per_batch": round(ms, 2),
            "ms_per_batch_with_copy": round(ms_copy, 2), "clips_per_s": round(clips / ms * 1e3, 1),
            "copy_bytes_per_clip": NUM_FRAMES * hw[0] * hw[1] * 3, "threads": torch.get_num_threads()}


# ---------------------------------------------------------------- report


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# Loader benchmark", "", meta["line"], ""]
    ip = [r for r in rows if r.get("kind") == "in_process"]
    if ip:
        lines += ["## In process, one core (CPU time), per video and per clip", "",
                  "| source | backend | recipe | num_sample | aug | clips/s/core | wall clips/s | x16 cores | "
                  "open+index ms | decode ms | rgb ms | gather ms | aug ms/clip | MB/clip |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in ip:
            lines.append(f"| {r['source']} | {r['backend']} | {r['recipe']} | {r['num_sample']} | {r['aug']} | "
                         f"**{r['clips_per_s_per_core']}** | {r['clips_per_s_wall']} | {r['projected_16_cores']} | "
                         f"{r['open_index_ms_per_video']} | {r['decode_ms_per_video']} | {r['rgb_ms_per_video']} | "
                         f"{r['gather_ms_per_video']} | {r['aug_ms_per_clip']} | {r['bytes_per_clip'] / 1e6:.2f} |")
    dl = [r for r in rows if r.get("kind") == "dataloader"]
    if dl:
        lines += ["", "## DataLoader (worker processes, wall clock)", "",
                  "| source | backend | recipe | num_sample | aug | workers | clips/s | per worker | x16 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in dl:
            lines.append(f"| {r['source']} | {r['backend']} | {r['recipe']} | {r['num_sample']} | {r['aug']} | "
                         f"{r['workers']} | {r['clips_per_s']} | {r['clips_per_s_per_core']} | "
                         f"{r['projected_16_cores']} |")
    other = [r for r in rows if r.get("kind") in ("gpu_augment", "nvdec", "prep", "cpu_decode")]
    if other:
        lines += ["", "## Prep, GPU augmentation, NVDEC", ""]
        keep = ("kind", "backend", "device", "clips", "ms_per_batch", "ms_per_batch_with_copy", "clips_per_s",
                "hours_per_core_minute", "hours_per_core_minute_wall", "source_seconds", "prep_cpu_s", "reasons",
                "status")
        for r in other:
            lines.append("- " + ", ".join(f"{k} {r[k]}" for k in keep if r.get(k) not in (None, [], "")))
    if meta.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in meta["notes"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rehearse", action="store_true", help="tiny sizes, seconds: checks every path of the script")
    p.add_argument("--gpu", action="store_true", help="NVDEC clips/s (or why not) and DeviceFeed on the GPU")
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--items", type=int, default=12, help="videos timed per in-process row")
    p.add_argument("--batches", type=int, default=4, help="timed batches per DataLoader row")
    p.add_argument("--batch-size", type=int, default=4, help="videos per batch")
    p.add_argument("--workers", default="1,2", help="DataLoader worker counts")
    p.add_argument("--cache", type=Path, default=default_cache_dir() / "bench-loader-v2")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/results or $BENCH_RESULTS)")
    p.add_argument("--note", action="append", default=[])
    args = p.parse_args()
    out = args.out or results_dir()
    torch.set_num_threads(1)  # what one loader worker gets

    if args.rehearse:
        args.videos, args.items, args.batches, args.batch_size = 2, 2, 1, 2
        hw, frames, kbps, short, cache = (96, 128), 40, 300, 64, args.cache / "rehearse"
    else:
        hw, frames, kbps, short, cache = (480, 852), 300, 4500, 256, args.cache
    device = "cuda" if args.gpu and torch.cuda.is_available() else "cpu"
    kind = "cuda" if device == "cuda" else "gpu-mode-without-cuda" if args.gpu else "cpu"
    name = f"loader-{kind}{'-rehearse' if args.rehearse else ''}"
    writer = ResultWriter(name, out)
    load = [round(x, 1) for x in os.getloadavg()]
    common = {"load_avg_start": load, "cores_on_machine": os.cpu_count()}

    def add(row: dict, backend: str | None) -> None:
        print({k: v for k, v in row.items() if not isinstance(v, dict)}, flush=True)
        writer.add(row, backend=backend, device=device, **common)

    if args.gpu:
        run_gpu(args, device, hw, frames, kbps, short, cache, add)
    elif D.av is None:
        # The GPU machines have no PyAV: the CPU rows (which encode their own sources) are recorded as not run,
        # and the rehearsal of the pinned stack still passes; decoding without av is covered by the --gpu rows.
        add({"kind": "cpu_decode", "clips_per_s_per_core": None, "status": "skipped: PyAV (av) not installed; "
             "the benchmark writes and preps its own H.264 sources with it"}, None)
    else:
        run_cpu(args, hw, frames, kbps, short, cache, add)
    run = writer.rows
    meta = {"line": f"{run[0]['date_utc'] if run else ''}, git {run[0]['git_sha'] if run else '?'}, "
                    f"{run[0]['device'] if run else device}, load average at start {load} "
                    f"(other jobs share the cores: per-core figures use CPU time), torch {torch.__version__}.",
            "notes": args.note}
    md = out / f"{name}.md"
    md.write_text(markdown(run, meta))
    print(f"wrote {writer.path} and {md}")
    return 0


def run_cpu(args, hw, frames, kbps, short, cache, add) -> None:
    t0 = time.perf_counter()
    raw = make_sources(cache, args.videos, frames, hw, kbps)
    kbps_real = round(float(np.mean([p.stat().st_size for p in raw])) * 8 / (frames / 30) / 1e3)
    print(f"raw sources ready in {time.perf_counter() - t0:.0f}s ({kbps_real} kbps)", flush=True)
    prep_dir = raw[0].parent.with_name(raw[0].parent.name + f"_prep{short}")
    if args.rehearse and prep_dir.exists():
        shutil.rmtree(prep_dir)  # the rehearsal measures prep every time
    prepped, prep_stats = prep_sources(raw, prep_dir, short)
    if prep_stats:
        add({"kind": "prep", "source": "raw", "frame_hw": list(hw), "kbps": kbps_real, "short_side": short,
             **prep_stats}, backend="pyav")
    kbps_prep = round(float(np.mean([Path(r.path).stat().st_size for r in prepped])) * 8 / (frames / 30) / 1e3)
    sources = {"raw": ([VideoRecord(str(p)) for p in raw], f"{hw[0]}x{hw[1]} {kbps_real} kbps GOP 250"),
               "prepped": (prepped, f"short side {short}, GOP 16, {kbps_prep} kbps")}
    backends = [n for n in ("pyav", "decord", "torchcodec") if not D.DECODERS[n].unavailable_reasons()]
    if args.rehearse:
        backends = backends[:1]
    for source, (records, desc) in sources.items():
        for backend in backends:
            for recipe, rate in RECIPES.items():
                for ns in (1, 4):
                    items = max(2, args.items // 3) if backend == "torchcodec" else args.items
                    row = in_process(records, rate, ns, backend, "gpu", items)
                    add({"kind": "in_process", "source": source, "source_desc": desc, "recipe": recipe,
                         "sampling_rate": rate, "num_sample": ns, "aug": "gpu", **row}, backend)
        row = in_process(records, 4, 4, "pyav", "cpu", args.items)
        add({"kind": "in_process", "source": source, "source_desc": desc, "recipe": "k400", "sampling_rate": 4,
             "num_sample": 4, "aug": "cpu", **row}, "pyav")
    for source, (records, desc) in sources.items():
        for workers in [int(w) for w in args.workers.split(",")][: 1 if args.rehearse else None]:
            for recipe, ns in (("k400", 4), ("k400", 1), ("ssv2", 4)):
                row = through_loader(records, RECIPES[recipe], ns, "auto", "gpu", workers, args.batches,
                                     args.batch_size)
                add({"kind": "dataloader", "source": source, "source_desc": desc, "recipe": recipe,
                     "sampling_rate": RECIPES[recipe], "num_sample": ns, "aug": "gpu", **row}, D.AUTO_ORDER[0])
    row = gpu_augment_row("cpu", 4 if args.rehearse else 16, (short, round(short * hw[1] / hw[0] / 2) * 2), 2)
    add({**row, "source": "prepped"}, None)


def run_gpu(args, device, hw, frames, kbps, short, cache, add) -> None:
    prepped_hw = (short, round(short * hw[1] / hw[0] / 2) * 2)
    if device == "cuda":
        torch.set_num_threads(min(16, os.cpu_count() or 1))
        for clips in (64, 128):
            add({**gpu_augment_row(device, clips, prepped_hw, 10), "source": "prepped"}, None)
    else:
        add({"kind": "gpu_augment", "clips_per_s": None, "reasons": ["no CUDA device"]}, None)
    reasons = D.DECODERS["nvdec"].unavailable_reasons()
    if reasons:  # say why, every time: whether NVDEC is reachable on the measuring machines is the question
        add({"kind": "nvdec", "clips_per_s": None, "available": False, "reasons": reasons}, "nvdec")
        return
    if D.av is None:
        add({"kind": "nvdec", "clips_per_s": None, "available": True,
             "reasons": ["PyAV missing here: no sources can be written (pass none; install av to measure)"]}, "nvdec")
        return
    raw = make_sources(cache, args.videos, frames, hw, kbps)
    prepped, _ = prep_sources(raw, raw[0].parent.with_name(raw[0].parent.name + f"_prep{short}"), short,
                              workers=os.cpu_count() or 1)
    for source, records in (("raw", [VideoRecord(str(p)) for p in raw]), ("prepped", prepped)):
        for ns in (1, 4):
            ds = dataset(records, 4, ns, "nvdec", "gpu")
            ds.read(records[0], lambda n: [np.arange(min(n, 16))])  # warm-up: decoder session
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            items = args.items
            for i in range(items):
                ds.read(records[i % len(records)], lambda n, i=i, ns=ns: [
                    np.minimum(np.arange(NUM_FRAMES) * 4 + (7 * i + 13 * j) % max(1, n - 64), n - 1)
                    for j in range(ns)])
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0
            add({"kind": "nvdec", "source": source, "recipe": "k400", "sampling_rate": 4, "num_sample": ns,
                 "available": True, "clips_per_s": round(items * ns / wall, 1),
                 "detail": D.DECODERS["nvdec"].version()}, "nvdec")


if __name__ == "__main__":
    sys.exit(main())
