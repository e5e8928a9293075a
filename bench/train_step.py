"""End-to-end VideoMAE pretraining step (forward + backward + AdamW), our fast path against real peers.

Implementations, each run in this process on the same resident random clips and masks:
- `videomae-fast`     this library: `videomae.fastpath` defaults (bf16 autocast, fused ops, auto attention,
                      fused AdamW); `videomae-compile` adds `torch.compile` of forward+loss.
- `videomae-eager`    this library with every switch off (fused=False, eager attention, foreach AdamW),
                      run like the official engine: fp16 autocast + GradScaler.
- `hf-sdpa`           transformers `VideoMAEForPreTraining`, `attn_implementation="sdpa"`, bf16 autocast,
                      fused AdamW; input [B, T, C, H, W] (a permuted copy made up front, outside the timing).
- `official`          MCG-NJU/VideoMAE `modeling_pretrain.py` from `--official PATH`, run as its engine does:
                      targets in fp32, fp16 autocast, `loss.item()`, GradScaler with unscale + grad norm,
                      `torch.cuda.synchronize()` each step; 16 frames only (its PatchEmbed fixes them).

Per row: clips/s, step_ms (median of CUDA-event-timed steps after warm-up), peak memory of the step
(max allocated minus the resident clips; per clip too), MFU = analytic FLOPs per clip (bench/flops.py,
fwd+bwd, official convention) x clips/s / the bf16 matmul rate measured at the start of the same run.

    python bench/train_step.py --quick [--official PATH]   # ViT-B batch sweep, every impl (~3-5 min on H100)
    python bench/train_step.py --parts compare --models S,B  # full mode, in pieces that fit 10 minutes each:
    python bench/train_step.py --parts compare --models L    #   S/B/L sweeps of every impl, then
    python bench/train_step.py --parts scaling               #   mask ratio / frames / size / model scaling
    python bench/train_step.py --smoke                     # tiny sizes on CPU: exercises every code path
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import videomae  # noqa: E402
from bench.flops import MODELS, pretrain_flops, shape_of  # noqa: E402
from videomae import attention, fastpath  # noqa: E402
from videomae.loss import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

IMPLS = ("videomae-fast", "videomae-compile", "videomae-eager", "hf-sdpa", "official")
OPT_IN = ("videomae-graphs",)  # whole-step CUDA graph: only with --impls, until the fused ops are shown sync-free
TINY = dict(encoder_embed_dim=192, encoder_depth=2, encoder_num_heads=3, decoder_embed_dim=96,
            decoder_num_heads=3, decoder_depth=1)

# --------------------------------------------------------------------------
# environment


def device_info(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": name, "torch": torch.__version__, "git_sha": git_sha(),
            "transformers": _version("transformers"), "cuda": torch.version.cuda}


def _version(pkg: str) -> str | None:
    try:
        return __import__(pkg).__version__
    except Exception:  # noqa: BLE001
        return None


def git_sha() -> str:
    """HEAD (+dirty), or why there is none (a fresh repository, a copy without .git)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode:
            return "no-commits" if git("rev-parse", "--git-dir").returncode == 0 else "no-git"
        return head.stdout.strip() + ("+dirty" if git("status", "--porcelain", "-uno").stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "no-git"


def slug(name: str) -> str:
    s = "".join(c if c.isalnum() else "-" for c in name.lower().removeprefix("nvidia "))
    return "-".join(p for p in s.split("-") if p)


class Timer:
    """CUDA events on the GPU (the step is asynchronous), the host clock on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            self.start, self.end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            self.start.record()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.end.record()
            self.end.synchronize()
            self.ms = self.start.elapsed_time(self.end)
        else:
            self.ms = (time.perf_counter() - self.t0) * 1e3


def matmul_rate(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """FLOP/s of a large bf16 matrix product on random data (median of `reps` after 3 warm-ups)."""
    dtype = torch.bfloat16
    if device.type == "cpu":
        n, reps = 512, 3
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    times = []
    for i in range(reps + 3):
        with Timer(device) as t:
            a @ b
        if i >= 3:
            times.append(t.ms)
    return 2 * n**3 / (statistics.median(times) / 1e3)


# --------------------------------------------------------------------------
# inputs: resident random clips (never zeros) and tube masks, rotated between steps


def make_inputs(batch, frames, size, ratio, device, sets=2, patch=16, tubelet=2):
    grid = (frames // tubelet, size // patch, size // patch)
    out = []
    for _ in range(sets):
        videos = torch.randn(batch, 3, frames, size, size, device=device)  # ~ ImageNet-normalized pixels
        out.append((videos, videomae.masking.tube_mask(batch, grid, ratio).to(device)))
    return out


# --------------------------------------------------------------------------
# implementations: each builder returns step(videos, mask, hf_videos) -> loss tensor


def _model_kwargs(model: str, frames: int, size: int) -> tuple[str, dict]:
    if model == "tiny":
        return MODELS["B"], dict(TINY, num_frames=frames, img_size=size)
    return MODELS[model], dict(num_frames=frames, img_size=size, decoder_depth=4)


def build_videomae(model, frames, size, device, config: fastpath.FastPathConfig):
    name, kw = _model_kwargs(model, frames, size)
    net = videomae.create_model(name, **kw).to(device)
    opt = fastpath.make_optimizer(net, lr=1.5e-4, config=config)
    step = fastpath.build_train_step(net, opt, config)
    return net, lambda v, m, hv: step(v, m)


def _sizes(net) -> dict:
    s = shape_of(net)
    heads = (net.encoder.blocks[0].attn.num_heads, net.decoder.blocks[0].attn.num_heads)
    return dict(s.__dict__, heads=heads[0], decoder_heads=heads[1])


def build_hf(model, frames, size, device, reference):
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    s = _sizes(reference)
    cfg = VideoMAEConfig(
        image_size=size, patch_size=s["patch_size"], num_channels=3, num_frames=frames,
        tubelet_size=s["tubelet_size"], hidden_size=s["embed_dim"], num_hidden_layers=s["depth"],
        num_attention_heads=s["heads"], intermediate_size=s["mlp_hidden"], hidden_act="gelu", qv_bias=True,
        layer_norm_eps=1e-6, use_mean_pooling=False, decoder_num_attention_heads=s["decoder_heads"],
        decoder_hidden_size=s["decoder_dim"], decoder_num_hidden_layers=s["decoder_depth"],
        decoder_intermediate_size=s["decoder_mlp_hidden"], norm_pix_loss=True,
    )
    cfg._attn_implementation = "sdpa"
    net = VideoMAEForPreTraining(cfg).to(device).train()
    if net.config._attn_implementation != "sdpa":
        raise RuntimeError(f"transformers picked attention {net.config._attn_implementation!r}, not sdpa")
    from videomae.train.optim import param_groups

    groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups(net, 0.05)]
    opt = torch.optim.AdamW(groups, lr=1.5e-4, betas=(0.9, 0.95), fused=True)

    def step(v, m, hv):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(hv.device.type, dtype=torch.bfloat16):
            loss = net(pixel_values=hv, bool_masked_pos=m).loss
        loss.backward()
        opt.step()
        return loss.detach()

    return net, step


def load_official(path: str):
    """Import `modeling_pretrain` from an MCG-NJU/VideoMAE checkout (it needs timm and einops)."""
    path = str(Path(path).resolve())
    if not (Path(path) / "modeling_pretrain.py").exists():
        raise FileNotFoundError(f"{path}/modeling_pretrain.py not found (pass a MCG-NJU/VideoMAE checkout)")
    sys.path.insert(0, path)
    try:
        import modeling_pretrain  # noqa: PLC0415  (the checkout's module, by design)
    finally:
        sys.path.remove(path)
    return modeling_pretrain


def build_official(model, frames, size, device, reference, path):
    from functools import partial

    if frames != 16:
        raise ValueError("the official PatchEmbed fixes num_frames=16")
    mp = load_official(path)
    s = _sizes(reference)
    p, t = s["patch_size"], s["tubelet_size"]
    net = mp.PretrainVisionTransformer(
        img_size=size, patch_size=p, encoder_embed_dim=s["embed_dim"], encoder_depth=s["depth"],
        encoder_num_heads=s["heads"], encoder_num_classes=0, decoder_num_classes=3 * t * p * p,
        decoder_embed_dim=s["decoder_dim"], decoder_depth=s["decoder_depth"], decoder_num_heads=s["decoder_heads"],
        mlp_ratio=s["mlp_hidden"] / s["embed_dim"], qkv_bias=True, tubelet_size=t,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    ).to(device)
    from videomae.train.optim import param_groups

    groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups(net, 0.05)]
    opt = torch.optim.AdamW(groups, lr=1.5e-4, betas=(0.9, 0.95))  # optim_factory: plain torch AdamW
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    mean = torch.as_tensor(IMAGENET_MEAN, device=device)[None, :, None, None, None]
    std = torch.as_tensor(IMAGENET_STD, device=device)[None, :, None, None, None]
    from einops import rearrange

    def step(v, m, hv):  # engine_for_pretraining.train_one_epoch, one iteration
        with torch.no_grad():
            unnorm = v * std + mean
            sq = rearrange(unnorm, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=t, p1=p, p2=p)
            norm = (sq - sq.mean(dim=-2, keepdim=True)) / (sq.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
            patch = rearrange(norm, "b n p c -> b n (p c)")
            labels = patch[m].reshape(v.shape[0], -1, patch.shape[-1])
        with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
            loss = torch.nn.functional.mse_loss(net(v, m), labels)
        loss.item()
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.norm(torch.stack([torch.norm(q.grad.detach(), 2.0) for q in net.parameters() if q.grad is not None]))
        scaler.step(opt)
        scaler.update()
        if cuda:
            torch.cuda.synchronize()
        return loss.detach()

    return net, step


def build(impl, model, frames, size, device, args):
    fast = fastpath.FastPathConfig(precision="bf16" if device.type == "cuda" else "fp32")
    if impl == "videomae-fast":
        return build_videomae(model, frames, size, device, fast)
    if impl == "videomae-compile":
        return build_videomae(model, frames, size, device, fast.replace(compile=True))
    if impl == "videomae-graphs":
        return build_videomae(model, frames, size, device, fast.replace(cuda_graphs=True))
    if impl == "videomae-eager":
        ref = fastpath.FastPathConfig.eager_reference("fp16" if device.type == "cuda" else "fp32")
        return build_videomae(model, frames, size, device, ref)
    name, kw = _model_kwargs(model, frames, size)
    with torch.device("meta"):  # only its sizes are read
        reference = _meta_model(name, kw)
    if impl == "hf-sdpa":
        return build_hf(model, frames, size, device, reference)
    if impl == "official":
        return build_official(model, frames, size, device, reference, args.official)
    raise ValueError(impl)


def _meta_model(name, kw):
    from bench.flops import _ScalarsOnCpu

    with _ScalarsOnCpu():
        return videomae.create_model(name, **kw)


PRECISION = {"videomae-fast": "bf16-autocast", "videomae-compile": "bf16-autocast", "videomae-graphs": "bf16-autocast",
             "videomae-eager": "fp16-autocast+GradScaler", "hf-sdpa": "bf16-autocast",
             "official": "fp16-autocast+GradScaler"}

# --------------------------------------------------------------------------
# one measurement


def measure(impl, model, batch, frames, size, ratio, device, args, base: dict) -> dict:
    row = dict(base, impl=impl, model=model, batch=batch, frames=frames, size=size, ratio=ratio,
               precision=PRECISION[impl] if device.type == "cuda" else "fp32", attention=None)
    name, kw = _model_kwargs(model, frames, size)
    flops = pretrain_flops(shape_of(_meta_model_on(name, kw)), frames, size, ratio)
    row.update(gflop_per_clip=flops["fwd_bwd"] / 1e9, visible_tokens=flops["visible"])
    inputs = make_inputs(batch, frames, size, ratio, device)
    inputs = [(v, m, v.transpose(1, 2).contiguous() if impl == "hf-sdpa" else None) for v, m in inputs]
    input_bytes = sum(v.nbytes + m.nbytes + (h.nbytes if h is not None else 0) for v, m, h in inputs)
    net = step = None
    status = "ok"
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base_mem = torch.cuda.memory_allocated(device)
        net, step = build(impl, model, frames, size, device, args)
        if impl.startswith("videomae"):
            v, m, _ = inputs[0]
            a = net.decoder.blocks[0].attn
            q = torch.empty(batch, a.num_heads, m.shape[1], a.proj.in_features // a.num_heads, device=device,
                            dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
            row["attention"] = attention.select_backend(q, q, q).name  # what auto runs in the decoder
        losses, times = [], []
        for i in range(args.warmup + args.steps):
            v, m, hv = inputs[i % len(inputs)]
            with Timer(device) as t:
                loss = step(v, m, hv)
            if i >= args.warmup:
                times.append(t.ms)
            losses.append(loss)
        losses = [float(x) for x in losses]
        if not all(map(_finite, losses)):
            status = f"non-finite loss {losses}"
        step_ms = statistics.median(times)
        q20, q80 = (statistics.quantiles(times, n=5)[k] for k in (0, 3)) if len(times) > 1 else (step_ms, step_ms)
        row.update(step_ms=step_ms, step_ms_p20=q20, step_ms_p80=q80, clips_per_s=batch / step_ms * 1e3,
                   loss=losses[-1])
        row["mfu"] = flops["fwd_bwd"] * row["clips_per_s"] / args.rate
        if device.type == "cuda":
            peak = (torch.cuda.max_memory_allocated(device) - base_mem) / 2**30
            row.update(peak_mem_gib=peak, peak_mem_per_clip_gib=peak / batch)
        else:
            row.update(peak_mem_gib=None, peak_mem_per_clip_gib=None)
    except torch.OutOfMemoryError:
        status = "oom"
    except Exception as e:  # noqa: BLE001  (a peer that cannot run is a row saying why, not a crash)
        status = f"error: {type(e).__name__}: {str(e)[:300]}"
    row.update(status=status, input_gib=input_bytes / 2**30)
    del net, step, inputs
    _free(device)
    return row


def _meta_model_on(name, kw):
    with torch.device("meta"):
        return _meta_model(name, kw)


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def _free(device):
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------
# attention tuning and the profile breakdown


def tune_attention(model, batch, frames, size, ratio, device) -> dict:
    """Fwd+bwd ms of every attention backend on this model's encoder and decoder shapes; installs the
    measured order in `videomae.attention.PRIORITY` (the JSON carries it for the committed table)."""
    name, kw = _model_kwargs(model, frames, size)
    s = _sizes(_meta_model_on(name, kw))
    f = pretrain_flops(shape_of(_meta_model_on(name, kw)), frames, size, ratio)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    out = {}
    for part, h, d, n in (("encoder", s["heads"], s["embed_dim"], f["visible"]),
                          ("decoder", s["decoder_heads"], s["decoder_dim"], f["tokens"])):
        q, k, v = (torch.randn(batch, h, n, d // h, device=device, dtype=dtype) for _ in range(3))
        out[part] = {"shape": [batch, h, n, d // h], "ms": attention.tune(q, k, v)}
        out[part]["auto"] = attention.select_backend(q, k, v).name
    out["priority"] = {"|".join(map(str, k)): v for k, v in attention.PRIORITY.items()}
    return out


def check_attention(device, shapes) -> dict:
    """Correctness before speed: each runnable backend's bf16 output and gradient error against fp64,
    next to eager bf16's (pass: at most 2x eager's + 1e-4, the GPU test's rule)."""
    out = {}
    for part, shape in shapes.items():
        q, k, v = (torch.randn(shape, device=device, dtype=torch.bfloat16) for _ in range(3))
        scale = shape[-1] ** -0.5
        eager = attention.reference_errors("eager", q, k, v, scale)
        out[part] = {"eager": eager}
        for name, b in attention.BACKENDS.items():
            reasons = b.not_supported_reasons(q, k, v)
            if name == "eager":
                continue
            if reasons:
                out[part][name] = {"skipped": reasons}
                continue
            err = attention.reference_errors(name, q, k, v, scale)
            err["pass"] = all(err[x] <= 2 * eager[x] + 1e-4 for x in eager)
            out[part][name] = err
    return out


CATEGORIES = (("attention", ("flash", "fmha", "attention", "sdpa", "cudnn", "softmax")),
              ("optimizer", ("adam", "multi_tensor", "foreach")),
              ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "matmul", "wgmma", "conv", "aten::mm", "addmm", "bmm",
                          "linear")),)


def profile_breakdown(impl, model, batch, frames, size, ratio, device, args) -> dict:
    """GPU kernel time per category (attention, matmul, optimizer, elementwise/other) over 3 steps."""
    from torch.profiler import ProfilerActivity, profile

    inputs = make_inputs(batch, frames, size, ratio, device)
    net, step = build(impl, model, frames, size, device, args)
    for i in range(args.warmup):
        step(*inputs[i % 2], None)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for i in range(3):
            step(*inputs[i % 2], None)
        if device.type == "cuda":
            torch.cuda.synchronize()
    totals: dict[str, float] = {}
    top = []
    for e in prof.key_averages():
        us = getattr(e, "device_time_total", 0) if device.type == "cuda" else e.self_cpu_time_total
        if not us or (device.type == "cuda" and e.device_type.name != "CUDA"):
            continue
        key = e.key.lower()
        cat = next((c for c, pats in CATEGORIES if any(p in key for p in pats)), "elementwise/other")
        totals[cat] = totals.get(cat, 0.0) + us / 3e3
        top.append((us / 3e3, e.key[:100], cat))
    del net, step, inputs
    _free(device)
    return {"impl": impl, "model": model, "batch": batch, "ms_per_step": totals,
            "top_kernels": [dict(ms=t, name=n, category=c) for t, n, c in sorted(top, reverse=True)[:25]]}


# --------------------------------------------------------------------------
# plans


def plan(args) -> list[tuple]:
    """(part, impl, model, batch, frames, size, ratio) in run order."""
    impls = [i for i in args.impls.split(",") if i]
    unknown = set(impls) - set(IMPLS + OPT_IN)
    if unknown:
        raise SystemExit(f"unknown --impls {sorted(unknown)}; choose from {IMPLS + OPT_IN}")
    if "official" in impls and not args.official:
        impls.remove("official")
    if args.smoke:
        return [("compare", i, "tiny", b, 16, 32, 0.75) for i in impls for b in (1, 2) if b == 2 or i == impls[0]]
    sweeps = {"S": (32, 64, 128, 256), "B": (16, 32, 64, 128, 192), "L": (8, 16, 32, 64)}
    models = ["B"] if args.quick else args.models.split(",")
    rows = []
    if "compare" in args.parts:
        for m in models:
            batches = [int(b) for b in args.batches.split(",")] if args.batches else sweeps[m]
            rows += [("compare", i, m, b, 16, 224, 0.9) for i in impls if i != "videomae-compile" for b in batches]
            if "videomae-compile" in impls:
                rows.append(("compare", "videomae-compile", m, None, 16, 224, 0.9))  # at fast's best batch
    if "scaling" in args.parts and not args.quick:
        b = args.scaling_batch
        for impl in ("videomae-fast", "hf-sdpa"):
            rows += [("scaling", impl, "B", b, 16, 224, r) for r in (0.75, 0.9, 0.95)]
            rows += [("scaling", impl, "B", b // 2, 32, 224, 0.9), ("scaling", impl, "B", b // 2, 16, 320, 0.9)]
            rows += [("scaling", impl, m, b, 16, 224, 0.9) for m in ("S", "L")]
    return rows


def best(rows, impl, model) -> dict | None:
    ok = [r for r in rows if r["impl"] == impl and r["model"] == model and r["status"] == "ok"
          and r.get("part") == "compare"]
    return max(ok, key=lambda r: r["clips_per_s"], default=None)


def run(args) -> dict:
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke on the CPU")
    info = device_info(device)
    args.rate = matmul_rate(device)
    print(f"{info['device']}: bf16 matmul {args.rate / 1e12:.0f} TFLOP/s; torch {info['torch']}", flush=True)
    result = {"meta": dict(info, matmul_tflops=args.rate / 1e12, args=vars(args).copy(),
                           date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")), "rows": []}
    base = dict(info, matmul_tflops=args.rate / 1e12)
    shapes = {"encoder": (2, 3, 8, 64), "decoder": (2, 3, 32, 64)} if args.smoke else \
        {"encoder": (8, 12, 160, 64), "decoder": (8, 6, 1568, 64)}
    result["attention_check"] = check_attention(device, shapes)
    bad = [f"{p}/{n}" for p, d in result["attention_check"].items() for n, e in d.items() if e.get("pass") is False]
    print("attention check vs fp64:", "all pass" if not bad else f"FAIL {bad}", flush=True)
    if args.tune_attention:
        result["attention_tuning"] = tune_attention("tiny" if args.smoke else "B", 2 if args.smoke else 64,
                                                    16, 32 if args.smoke else 224, 0.9, device)
    stopped: set[tuple] = set()  # (impl, model) whose sweep hit OOM: larger batches are skipped
    for part, impl, model, batch, frames, size, ratio in plan(args):
        if batch is None:
            b = best(result["rows"], "videomae-fast", model)
            if b is None:
                continue
            batch = b["batch"]
        if part == "compare" and (impl, model) in stopped:
            continue
        row = measure(impl, model, batch, frames, size, ratio, device, args, dict(base, part=part))
        result["rows"].append(row)
        if row["status"] == "oom":
            stopped.add((impl, model))
        print(_line(row), flush=True)
    if args.profile:
        b = best(result["rows"], "videomae-fast", "tiny" if args.smoke else "B")
        if b is not None:
            result["profile"] = profile_breakdown("videomae-fast", b["model"], b["batch"], b["frames"], b["size"],
                                                  b["ratio"], device, args)
    return result


def _line(r) -> str:
    if r["status"] != "ok":
        return f"{r['part']:8}{r['impl']:18}{r['model']:5}{r['batch']:>5}  {r['status'][:90]}"
    mem = f"{r['peak_mem_gib']:7.1f}" if r["peak_mem_gib"] is not None else "      -"
    return (f"{r['part']:8}{r['impl']:18}{r['model']:5}{r['batch']:>5}{r['frames']:>4}x{r['size']:<4}{r['ratio']:5.2f}"
            f"{r['clips_per_s']:9.1f}{r['step_ms']:9.1f}{mem}{100 * r['mfu']:6.1f}%")


def summary(result) -> str:
    """The short table printed last: each impl's best batch per model, and ratios to the peers."""
    out = [f"{'impl':18}{'model':6}{'batch':>6}{'clips/s':>9}{'step ms':>9}{'GiB/clip':>9}{'MFU':>7}{'vs hf':>7}"
           f"{'vs off':>7}"]
    models = sorted({r["model"] for r in result["rows"]})
    for m in models:
        hf, off = best(result["rows"], "hf-sdpa", m), best(result["rows"], "official", m)
        for impl in IMPLS + OPT_IN:
            b = best(result["rows"], impl, m)
            if b is None:
                continue
            per = f"{b['peak_mem_per_clip_gib']:9.3f}" if b["peak_mem_per_clip_gib"] is not None else f"{'-':>9}"
            vs = [f"{b['clips_per_s'] / p['clips_per_s']:7.2f}" if p else f"{'-':>7}" for p in (hf, off)]
            out.append(f"{impl:18}{m:6}{b['batch']:6}{b['clips_per_s']:9.1f}{b['step_ms']:9.1f}{per}"
                       f"{100 * b['mfu']:6.1f}%{vs[0]}{vs[1]}")
    return "\n".join(out)


def chart(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["status"] == "ok"]
    fig, axes = plt.subplots(1, 3, figsize=(19, 4.8))
    for impl in IMPLS + OPT_IN:
        for m in sorted({r["model"] for r in rows}):
            pts = sorted((r["batch"], r["clips_per_s"]) for r in rows
                         if r["impl"] == impl and r["model"] == m and r["part"] == "compare")
            if pts:
                axes[0].plot(*zip(*pts), marker="o", label=f"{impl} {m}")
    axes[0].set(xlabel="batch (clips)", ylabel="clips/s (fwd+bwd+AdamW)", title="batch sweep, 16x224, ratio 0.9")
    axes[0].legend(fontsize=7)
    scal = [r for r in rows if r["part"] == "scaling"]
    for impl in ("videomae-fast", "hf-sdpa"):
        pts = sorted((r["gflop_per_clip"], r["step_ms"] / r["batch"]) for r in scal if r["impl"] == impl)
        if pts:
            axes[1].plot(*zip(*pts), marker="o", linestyle="", label=impl)
    axes[1].set(xlabel="analytic GFLOP per clip (fwd+bwd)", ylabel="ms per clip",
                title="scaling: mask ratio, frames, size, model")
    if scal:
        axes[1].legend(fontsize=7)
    # Headline: each impl's best batch per model, labelled with peak memory per clip.
    bars = [(f"{i}\n{m}", b) for m in sorted({r["model"] for r in rows}) for i in IMPLS + OPT_IN
            if (b := best(rows, i, m)) is not None]
    if bars:
        ax = axes[2]
        ax.bar(range(len(bars)), [b["clips_per_s"] for _, b in bars], color="tab:blue")
        ax.set_xticks(range(len(bars)), [n for n, _ in bars], fontsize=7, rotation=30)
        for x, (_, b) in enumerate(bars):
            mem = b["peak_mem_per_clip_gib"]
            label = f"b{b['batch']}" + (f"\n{mem:.2f} GiB/clip" if mem is not None else "")
            ax.annotate(label, (x, b["clips_per_s"]), ha="center", va="bottom", fontsize=7)
        ax.set(ylabel="clips/s at the best batch", title="best batch per implementation")
    fig.suptitle(f"{result['meta']['device']}  torch {result['meta']['torch']}  "
                 f"bf16 matmul {result['meta']['matmul_tflops']:.0f} TFLOP/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="ViT-B batch sweep of every impl only")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (code path check)")
    ap.add_argument("--official", default=os.environ.get("VIDEOMAE_OFFICIAL"), help="MCG-NJU/VideoMAE checkout")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--models", default="S,B,L")
    ap.add_argument("--batches", default=None, help="comma list overriding the per-model sweep")
    ap.add_argument("--parts", default="compare,scaling")
    ap.add_argument("--scaling-batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--no-tune-attention", dest="tune_attention", action="store_false")
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--out", default=None, help="directory for JSON + PNG (default bench/results; smoke: none)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.warmup, args.steps = 1, 2
    result = run(args)
    outs = [Path(args.out)] if args.out else ([] if args.smoke else [ROOT / "bench" / "results"])
    if os.environ.get("OUT") and not args.smoke:
        outs.append(Path(os.environ["OUT"]))
    # The quick run is the headline file; full-mode parts (run as separate commands to fit the 10-minute
    # device limit) get a suffix so that they never overwrite each other.
    tag = "" if args.quick or args.smoke else f"-full-{args.parts.replace(',', '+')}-{args.models.replace(',', '')}"
    stem = f"train_step-{slug(result['meta']['device'])}-{dt.date.today().isoformat()}{tag}"
    for d in outs:
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str))
        with contextlib.suppress(Exception):  # a chart failure must not lose the numbers
            chart(result, d / f"{stem}.png")
        print(f"wrote {d / stem}.json/.png")
    if "profile" in result:
        print("profile ms/step:", {k: round(v, 2) for k, v in result["profile"]["ms_per_step"].items()})
    print(summary(result))
    return result


if __name__ == "__main__":
    main()
