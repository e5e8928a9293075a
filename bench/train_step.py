"""End-to-end VideoMAE pretraining step (prepare + forward + loss + backward + AdamW): the step `videomae pretrain`
runs, at the CLI's defaults, against its eager reference and its peers, in one process.

Rows (`--peers`, in this order per batch size, then the extra compile / CUDA-graph rows):
- `fast`      `videomae.train.trainer.Trainer` -> `train.step.train_step` on `videomae pretrain`'s loss with the
              CLI's `prepare` (videomae.data.feed.DeviceFeed) and the CLI's `StepConfig` defaults (CUDA: bf16
              autocast, fused ops, auto attention, fused AdamW, torch.compile); `--compile both` adds the other
              compile setting, `--cuda-graphs` a whole-step CUDA graph row.
- `eager`     the same model, prepare and step under `StepConfig.eager_reference` (ops backend torch, eager
              attention), bf16.
- `hf`        transformers VideoMAEForPreTraining, sdpa, bf16 (bench/peers.py).
- `official`  MCG-NJU/VideoMAE from the git-ignored checkout `$VIDEOMAE_OFFICIAL`, fp16 + GradScaler as its engine.

Inputs. Ours get what the GPU-augmentation loader hands the CLI's `prepare`: uint8 crops of a Kinetics clip at short
side 320 (`--source`, drawn by the official multiscale crop, zero-padded to the batch's largest; random pixels), their
boxes and TokenIds, in pinned host memory; the side-stream copy and the batched crop + resize run inside each timed
step, as in `videomae pretrain`. The peers get ImageNet-normalized fp32 clips already on the device (their input
pipeline is not timed: the comparison favours them).

Per row: clips/s and step ms (median / p20 / p80 of back-to-back steps, CUDA events at each step boundary, one
sync at the end), peak memory (per clip), FLOPs per clip counted by bench/flops.py, MFU against the bf16 matmul
rate measured at the start, the backends that actually ran and bench.common's provenance. Each row is written as
soon as it is measured (bench.common.ResultWriter: `--out DIR`, else bench/results; mirrored into $OUT).
Compiles are shared across rows: no dynamo reset between them, static shapes (one compile per batch size, as the
CLI compiles once), inductor's FX-graph and Triton caches hit for what an earlier row compiled.

    python bench/train_step.py --rehearse --out DIR        # CPU, tiny shapes: every code path and peer
    python bench/train_step.py --batch-sizes 32 --peers fast,eager,hf,official --out DIR --budget 120
    python bench/train_step.py --batch-sizes 64 128 --peers fast --compile both --cuda-graphs --out DIR
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import videomae  # noqa: E402
from bench import common, peers  # noqa: E402
from bench.common import ResultWriter, Timing, tf32  # noqa: E402
from bench.flops import MODELS, _ScalarsOnCpu, pretrain_flops, shape_of  # noqa: E402
from videomae import attention  # noqa: E402
from videomae.data.feed import DeviceFeed  # noqa: E402
from videomae.data.transforms import multiscale_crop_box  # noqa: E402
from videomae.layers.recompute import MODES as RECOMPUTE_MODES  # noqa: E402
from videomae.masking import token_ids, tube_mask  # noqa: E402
from videomae.train import step as train  # noqa: E402
from videomae.train.pretrain import pretrain_loss  # noqa: E402
from videomae.train.recipe import Options, Recipe, Schedule  # noqa: E402
from videomae.train.trainer import Trainer  # noqa: E402

PEERS = ("fast", "eager", "hf", "official")
OURS = ("fast", "eager")
SOURCE_HW = (320, 428)  # a Kinetics clip resized to short side 320, as the official lists ship them
REHEARSAL = dict(model="tiny", frames=16, size=32, ratio=0.5, batch_sizes=[2], source=(40, 52))


# --------------------------------------------------------------------------------------------- inputs


def model_kwargs(model: str, frames: int, size: int) -> tuple[str, dict]:
    if model == "tiny":
        return "pretrain_videomae_tiny_patch16_224", dict(num_frames=frames, img_size=size)
    return MODELS[model], dict(num_frames=frames, img_size=size, decoder_depth=4)


def meta_model(model: str, frames: int, size: int):
    """Our model on the meta device: its sizes for the peers and the FLOP count, no memory."""
    name, kw = model_kwargs(model, frames, size)
    with torch.device("meta"), _ScalarsOnCpu():
        return videomae.create_model(name, **kw)


def _grid(spec: dict) -> tuple[int, int, int]:
    s = peers.sizes(meta_model(spec["model"], spec["frames"], spec["size"]))
    return spec["frames"] // s["tubelet_size"], spec["size"] // s["patch_size"], spec["size"] // s["patch_size"]


def make_inputs(spec: dict, device: torch.device, hf: bool, sets: int = 2) -> list[tuple]:
    """The peers' input: `sets` resident batches (rotated between steps) of random clips made on the device (never
    zeros), tube masks made on the CPU -> (videos, ids, mask, hf_videos)."""
    batch, frames, size, ratio = spec["batch"], spec["frames"], spec["size"], spec["ratio"]
    grid = _grid(spec)
    out = []
    for _ in range(sets):
        videos = torch.randn(batch, 3, frames, size, size, device=device)  # ~ ImageNet-normalized pixels
        mask = tube_mask(batch, grid, ratio)
        ids = token_ids(mask).to(device)
        out.append((videos, ids, mask.to(device), videos.transpose(1, 2).contiguous() if hf else None))
    return out


def loader_batches(spec: dict, device: torch.device, sets: int = 2, seed: int = 0) -> list[tuple]:
    """Our input: `sets` batches (rotated between steps) as the GPU-augmentation loader hands them to the CLI's
    `prepare`, in pinned host memory -> (frames uint8 [B, T, h, w, 3], boxes int64 [B, 4], TokenIds).

    Each clip's crop is drawn by the official multiscale crop from a `spec["source"]` frame (random pixels), the
    batch zero-padded to its largest crop (what the workers ship, videomae.data.datasets._crops)."""
    batch, frames, size, ratio = spec["batch"], spec["frames"], spec["size"], spec["ratio"]
    src_h, src_w = spec["source"]
    grid = _grid(spec)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    pin = device.type == "cuda"
    out = []
    for _ in range(sets):
        crops = [multiscale_crop_box(src_h, src_w, size, rng)[2:] for _ in range(batch)]  # (h, w)
        h, w = max(c[0] for c in crops), max(c[1] for c in crops)
        data = torch.randint(0, 256, (batch, frames, h, w, 3), dtype=torch.uint8, generator=gen)
        boxes = torch.tensor([(0, 0, ch, cw) for ch, cw in crops], dtype=torch.int64)
        ids = token_ids(tube_mask(batch, grid, ratio))
        if pin:
            data, boxes, ids = data.pin_memory(), boxes.pin_memory(), ids.pin_memory()
        out.append((data, boxes, ids))
    return out


# --------------------------------------------------------------------------------------------- builders


class _OpNames(TorchDispatchMode):
    """The `videomae::` ops one forward dispatches to: the fused-op backends that actually ran."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "videomae":
            self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def build_ours(spec: dict, device: torch.device, inputs: list):
    """Our model stepped by `Trainer` on `videomae pretrain`'s loss (what the CLI builds), with the CLI's `prepare`
    (DeviceFeed) inside the step."""
    base = train.StepConfig() if spec["peer"] == "fast" else train.StepConfig.eager_reference(
        "bf16" if device.type == "cuda" else "fp32")
    config = base.replace(compile=spec["compile"], cuda_graphs=spec["cuda_graphs"],
                          compile_backend=spec["compile_backend"],
                          recompute=spec.get("recompute", "auto") if spec["peer"] == "fast" else base.recompute)
    name, kw = model_kwargs(spec["model"], spec["frames"], spec["size"])
    net = videomae.create_model(name, **kw).to(device)
    feed = DeviceFeed(device, spec["size"])
    trainer = Trainer(Recipe(net, pretrain_loss, Schedule.constant(1.5e-4), prepare=feed),
                      Options(step=config, max_skipped=0))
    config, precision = trainer.config, trainer.precision  # resolved for the device
    videos, ids = feed(inputs[0])
    names = _OpNames()
    with torch.no_grad(), train.ops_context(config), precision.autocast(), names:
        pretrain_loss(net, (videos, ids))
    backend = ",".join(sorted(names.names)) or "none"
    a = net.decoder.blocks[0].attn
    tokens = ids.visible.shape[1] + ids.decoded.shape[1]  # the decoder's sequence: what auto picks for
    q = torch.empty(spec["batch"], a.num_heads, tokens, a.proj.in_features // a.num_heads, device=device,
                    dtype=precision.dtype)
    frames, boxes, _ = inputs[0]
    extra = {"precision": config.precision, "attention": attention.select_backend(q, q, q, name=config.attention).name,
             "switches": config.as_dict(), "clip_dtype": str(videos.dtype).removeprefix("torch."),
             "input": "uint8 crops in pinned host memory -> DeviceFeed (side-stream copy, batched crop + resize), "
                      "timed inside the step",
             "frames_hw": list(frames.shape[2:4]), "copy_mb_per_step": round(frames.nbytes / 1e6, 1)}

    def step(batch):
        trainer.step([batch], flush=False)

    def losses() -> list[float | None]:
        return [r["loss"] for r in trainer.flush()]

    return step, losses, backend, extra, config.tf32


def build_peer(spec: dict, device: torch.device, args):
    reference = meta_model(spec["model"], spec["frames"], spec["size"])
    if spec["peer"] == "hf":
        net, fn = peers.build_hf(reference, spec["frames"], spec["size"], device)
        backend, precision = "transformers-sdpa", "bf16" if device.type == "cuda" else "fp32"
    else:
        net, fn = peers.build_official(reference, spec["frames"], spec["size"], device, args.official)
        backend, precision = "official-eager", "fp16+GradScaler" if device.type == "cuda" else "fp32"
    out: list[torch.Tensor] = []

    def step(batch):
        videos, _, mask, hf_videos = batch
        out.append(fn(videos, mask, hf_videos))

    def losses() -> list[float | None]:
        values = [float(x) for x in out]
        out.clear()
        return values

    return step, losses, backend, {"precision": precision, "attention": backend, "clip_dtype": "float32",
                                   "input": "fp32 clips resident on the device (not timed)"}, False


# --------------------------------------------------------------------------------------------- one row


def time_steps(step, inputs: list, device: torch.device, warmup: int, steps: int) -> Timing:
    """Back-to-back steps, a timestamp at each boundary, one wait at the end: the steady state of a training
    loop (host work overlaps the device), not isolated calls."""
    for i in range(warmup):
        step(inputs[i % len(inputs)])
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        marks = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
        marks[0].record()
    else:
        stamps = [time.perf_counter()]
    for i in range(steps):
        step(inputs[i % len(inputs)])
        if cuda:
            marks[i + 1].record()
        else:
            stamps.append(time.perf_counter())
    if cuda:
        marks[-1].synchronize()
        times = [a.elapsed_time(b) for a, b in zip(marks, marks[1:])]
    else:
        times = [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:])]
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else [times[0]] * 9
    return Timing(statistics.median(times), q[1], q[7], "cuda_events" if cuda else "perf_counter", steps)


def measure(spec: dict, device: torch.device, args, rate: float) -> tuple[dict, str]:
    """-> (row, backend that ran). A peer that cannot run is a row saying why, never a crash."""
    row = dict(spec, status="ok")
    flops = pretrain_flops(shape_of(meta_model(spec["model"], spec["frames"], spec["size"])), spec["frames"],
                           spec["size"], spec["ratio"])
    row.update(gflop_per_clip=flops["fwd_bwd"] / 1e9, visible_tokens=flops["visible"])
    backend, inputs = None, None
    try:
        ours = spec["peer"] in OURS
        if ours:  # host memory: nothing resident on the device before the step
            inputs, input_bytes = loader_batches(spec, device), 0
        else:
            inputs = make_inputs(spec, device, hf=spec["peer"] == "hf")
            input_bytes = sum(v.nbytes + (h.nbytes if h is not None else 0) for v, _, _, h in inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        step, losses, backend, extra, use_tf32 = (build_ours(spec, device, inputs) if ours
                                                  else build_peer(spec, device, args))
        row.update(extra)
        with tf32(use_tf32):
            t = time_steps(step, inputs, device, args.warmup, args.steps)
        values = losses()
        row.update(t.row(), step_ms=t.median_ms, clips_per_s=spec["batch"] / t.median_ms * 1e3,
                   last_loss=values[-1] if values else None)
        row["mfu"] = row["gflop_per_clip"] * 1e9 * row["clips_per_s"] / rate if rate else None
        if not values or any(v is None or v != v or abs(v) == float("inf") for v in values):
            row["status"] = f"non-finite loss {values[-4:]}"
        if device.type == "cuda":
            peak = (torch.cuda.max_memory_allocated(device) - input_bytes) / 2**30
            row.update(peak_mem_gib=peak, peak_mem_per_clip_gib=peak / spec["batch"])
    except torch.OutOfMemoryError:
        row["status"] = "oom"
    except Exception as e:  # noqa: BLE001  (recorded, and the next row runs)
        row["status"] = f"error: {type(e).__name__}: {str(e)[:300]}"
    del inputs
    gc.collect()  # no dynamo reset: the next row reuses what was compiled (see `share_compiles`)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row, backend or spec["peer"]


def profile_row(spec: dict, device: torch.device, args) -> dict:
    """Device (CPU: host) time per kernel category over 3 steps of the fast step, and the top kernels: where the
    time goes when a target is missed."""
    from torch.profiler import ProfilerActivity, profile

    from bench.cost_measure import classify_kernel

    inputs = loader_batches(spec, device)
    step, losses, backend, _, use_tf32 = build_ours(spec, device, inputs)
    cuda = device.type == "cuda"
    with tf32(use_tf32):
        for i in range(args.warmup):
            step(inputs[i % 2])
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            for i in range(3):
                step(inputs[i % 2])
            losses()
    totals: dict[str, float] = {}
    top = []
    for e in prof.key_averages():
        us = e.device_time_total if cuda else e.self_cpu_time_total
        if not us or (cuda and e.device_type.name != "CUDA"):
            continue
        cat = classify_kernel(e.key)
        totals[cat] = totals.get(cat, 0.0) + us / 3e3
        top.append((round(us / 3e3, 3), e.key[:100], cat))
    return dict(spec, peer="profile", status="ok", ms_per_step=totals,
                top_kernels=[dict(ms=t, name=n, category=c) for t, n, c in sorted(top, reverse=True)[:20]]), backend


def share_compiles():
    """Every row of the process on one set of compiles (a context: the settings end with the run): static shapes
    (each batch size compiles once, as the CLI compiles once for its batch, not the dynamic-batch graph automatic
    dynamic shapes would make on the second size), a recompile limit no plan reaches, and a hit of it an error
    rather than a silent eager row."""
    cfg = torch._dynamo.config
    return cfg.patch(automatic_dynamic_shapes=False, recompile_limit=max(cfg.recompile_limit, 64),
                     fail_on_recompile_limit_hit=True)


# --------------------------------------------------------------------------------------------- plan


def plan(args, device: torch.device) -> list[dict]:
    """Rows in order of value: the table at the CLI's defaults for each batch size, then the other compile
    setting, then the CUDA-graph rows, then the fast step under the other recompute switches."""
    default = train.StepConfig().resolve(device, pretraining=True).compile
    compiles = {"default": [default], "on": [True], "off": [False], "both": [default, not default]}[args.compile]
    base = dict(model=args.model, frames=args.frames, size=args.size, ratio=args.ratio, source=tuple(args.source),
                compile_backend=args.compile_backend, cuda_graphs=False, recompute=args.recompute[0])
    rows = []
    for b in args.batch_sizes:
        for p in args.peers:
            rows.append(dict(base, peer=p, batch=b, compile=compiles[0] if p == "fast" else False))
    rows += [dict(base, peer="fast", batch=b, compile=c) for c in compiles[1:] for b in args.batch_sizes]
    if args.cuda_graphs:
        rows += [dict(base, peer="fast", batch=b, compile=compiles[0], cuda_graphs=True) for b in args.batch_sizes]
    rows += [dict(base, peer="fast", batch=b, compile=compiles[0], recompute=r) for r in args.recompute[1:]
             for b in args.batch_sizes]
    return rows


def summary(rows: list[dict]) -> str:
    out = [f"{'peer':9}{'compile':>8}{'graphs':>7}{'recomp':>7}{'batch':>6}{'clips/s':>10}{'step ms':>9}"
           f"{'GiB/clip':>9}{'MFU':>7}{'vs hf':>7}{'vs off':>7}  status"]
    ok = {(r["peer"], r["batch"]): r for r in rows if r["status"] == "ok" and not r["compile"] and not r["cuda_graphs"]}
    for r in rows:
        if r["status"] != "ok":
            out.append(f"{r['peer']:9}{r['compile']!s:>8}{r['cuda_graphs']!s:>7}{r.get('recompute', '-'):>7}"
                       f"{r['batch']:6}  {r['status'][:80]}")
            continue
        vs = []
        for peer in ("hf", "official"):
            p = ok.get((peer, r["batch"]))
            vs.append(f"{r['clips_per_s'] / p['clips_per_s']:7.2f}" if p else f"{'-':>7}")
        mem = r.get("peak_mem_per_clip_gib")
        mem = f"{mem:9.3f}" if mem is not None else f"{'-':>9}"
        mfu = f"{100 * r['mfu']:6.1f}%" if r.get("mfu") else f"{'-':>7}"
        out.append(f"{r['peer']:9}{r['compile']!s:>8}{r['cuda_graphs']!s:>7}{r.get('recompute', '-'):>7}"
                   f"{r['batch']:6}{r['clips_per_s']:10.1f}"
                   f"{r['step_ms']:9.1f}{mem}{mfu}{vs[0]}{vs[1]}  ok")
    return "\n".join(out)


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rehearse", action="store_true", help="CPU, tiny shapes: every code path, peers, result writing")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32])
    ap.add_argument("--peers", default="fast,eager,hf,official", help=f"comma list of {','.join(PEERS)}")
    ap.add_argument("--compile", default="default", choices=("default", "on", "off", "both"),
                    help="the fast rows: the CLI's default (on for CUDA), on, off, or both (default first)")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--cuda-graphs", action="store_true", help="add whole-step CUDA-graph rows of the fast step")
    ap.add_argument("--recompute", nargs="+", default=["auto"], choices=RECOMPUTE_MODES,
                    help="the fast step's recompute switch (the CLI's --recompute); more than one adds fast rows")
    ap.add_argument("--model", default="B", choices=(*MODELS, "tiny"))
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--ratio", type=float, default=0.9)
    ap.add_argument("--source", type=int, nargs=2, default=list(SOURCE_HW), metavar=("H", "W"),
                    help="frame size the loader crops from (default %(default)s: Kinetics at short side 320)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--budget", type=float, default=None, help="seconds: rows not started by then are recorded as "
                    "skipped")
    ap.add_argument("--profile", action="store_true", help="after the table: kernel time per category of the fast "
                    "step at the first batch size")
    ap.add_argument("--official", default=os.environ.get("VIDEOMAE_OFFICIAL"), help="MCG-NJU/VideoMAE checkout "
                    "(default $VIDEOMAE_OFFICIAL); the official peer is skipped without one")
    ap.add_argument("--out", default=None, help="results folder (default bench/results or $BENCH_RESULTS)")
    args = ap.parse_args(argv)
    args.peers = [p for p in args.peers.split(",") if p]
    unknown = sorted(set(args.peers) - set(PEERS))
    if unknown:
        ap.error(f"--peers: unknown {unknown}; choose from {','.join(PEERS)}")
    if any(b < 1 for b in args.batch_sizes):
        ap.error(f"--batch-sizes must be positive, got {args.batch_sizes}")
    try:
        args.official = peers.official_path(args.official)
    except FileNotFoundError as e:
        ap.error(str(e))
    if args.rehearse:
        args.model, args.frames, args.size, args.ratio, args.source = (
            REHEARSAL[k] for k in ("model", "frames", "size", "ratio", "source"))
        args.batch_sizes, args.warmup, args.steps = REHEARSAL["batch_sizes"], 1, 2
    if args.official is None and "official" in args.peers:
        print("official peer skipped: no checkout ($VIDEOMAE_OFFICIAL / --official)", flush=True)
        args.peers.remove("official")
    return args


def main(argv=None) -> list[dict]:
    args = parse(argv)
    device = torch.device("cpu" if args.rehearse else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/train_step.py: no CUDA device (use --rehearse on the CPU)")
    start = time.monotonic()
    writer = ResultWriter("train_step", Path(args.out) if args.out else None)
    _, tflops = common.matmul_rate(str(device), n=8192 if device.type == "cuda" else 256)
    rate = tflops * 1e12
    print(f"{device}: bf16 matmul {rate / 1e12:.2f} TFLOP/s; writing {writer.path}", flush=True)
    with share_compiles():
        rows = []
        for spec in plan(args, device):
            spec = dict(spec, matmul_tflops=rate / 1e12)
            if spec["cuda_graphs"] and device.type != "cuda":
                row, backend = dict(spec, status="skipped: cuda_graphs needs CUDA"), None
            elif args.budget is not None and time.monotonic() - start > args.budget:
                row, backend = dict(spec, status=f"skipped: --budget {args.budget:.0f} s spent"), None
            else:
                row, backend = measure(spec, device, args, rate)
            rows.append(writer.add(row, backend=backend, device=str(device)))
            r = rows[-1]
            print(f"{r['peer']:9} compile={r['compile']!s:5} graphs={r['cuda_graphs']!s:5} "
                  f"recompute={r.get('recompute', '-'):4} batch {r['batch']:4}: "
                  + (f"{r['clips_per_s']:.1f} clips/s" if r["status"] == "ok" else r["status"]), flush=True)
        if args.profile and (args.budget is None or time.monotonic() - start < args.budget):
            spec = dict(plan(args, device)[0], peer="fast", matmul_tflops=rate / 1e12)
            try:
                row, backend = profile_row(spec, device, args)
            except Exception as e:  # noqa: BLE001  (recorded; the table above is already written)
                row, backend = dict(spec, peer="profile", status=f"error: {type(e).__name__}: {str(e)[:300]}"), None
            writer.add(row, backend=backend, device=str(device))
            print("profile ms/step:", {k: round(v, 2) for k, v in row.get("ms_per_step", {}).items()} or row["status"])
    print(summary(rows))
    return rows


if __name__ == "__main__":
    # A row that failed (error, oom, non-finite loss) fails the command, so gpu.sh records the step as failed;
    # rows skipped for lack of CUDA or budget do not.
    failed = [r for r in main() if not (r["status"] == "ok" or r["status"].startswith("skipped"))]
    raise SystemExit(1 if failed else 0)
