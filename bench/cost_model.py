"""Cost model of the CLI's training step on an H200: every kernel's FLOPs and bytes, its predicted time at the
measured peaks with a stated efficiency per kernel class, per component and per class, and clips/s.

Input: the partitioned training graph (forward and backward FX graphs, aten ops after inductor's decompositions,
each node's component in `node.meta["custom"]["component"]`). `bench/memory.py: training_graph` captures the
CLI objective's graph on a fake H200 (`bench/fake_step.py`); any other capture of the same kind can be passed
to `kernels()`.

Kernels, their FLOPs and bytes: `bench/cost_kernels.py` (matmul, attention, fused-op, pointwise, reduction,
cast, optimizer).

Time of a kernel = max(FLOPs / (PEAK_MATMUL * e_c), bytes / (COPY_BW * e_b)) + LAUNCH_S, with the efficiencies
of `EFFICIENCY` (priors from published H100/H200 figures, stated with their source in the table; `correct()`
replaces them by the ones the GPU measures: `bench/cost_measure.py`, run by bench/gpu.sh's memory step).

    python bench/cost_model.py            # ViT-B, B=32, 16x224x224, tube 0.9 -> bench/results/cost_model.{json,md}
    python bench/cost_model.py --check    # and inductor's own kernels' bytes for the same step, next to the model's
    python bench/cost_model.py --check --label "what changed"   # also a row in the history of changes
    python bench/cost_model.py --measure  # on a GPU: measured time per kernel class next to the prediction
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cost_kernels import Kernel, kernels, optimizer_kernels  # noqa: E402

PEAK_MATMUL = 790e12  # bf16 dense matmul, measured on the H200 machines (GUIDE.md section 3)
COPY_BW = 4.3e12  # device-to-device copy, measured there (bytes/s)
LAUNCH_S = 1.5e-6  # per kernel: launch gap and ramp-up/tail of a kernel in a queued stream
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Efficiency:
    """Fractions of the measured peaks each kernel class reaches (compute e_c of PEAK_MATMUL, memory e_b of COPY_BW).

    matmul: by the GEMM's smallest dimension (short K loops and thin outputs spend more time in prologue and
    epilogue): >= 1024: 0.85, >= 512: 0.75, >= 256: 0.62, else 0.45 of the rate measured on 8192^3 (cuBLAS's
    own square-GEMM efficiency; H100 cuBLAS sweeps show 60-85% of that at K = 256-768).
    attention (per SDPA kernel, of PEAK_MATMUL, H100 numbers at head dim 64, non-causal, 1-4k tokens; the H200
    has the same SMs and clocks): cuDNN forward 400 / backward 300 TFLOP/s, FlashAttention-2 (aten's flash)
    300 / 220, memory-efficient (cutlass) 220 / 160, FlashAttention-3 (flash-attn package, sm90) 430 / 330
    (FlashAttention-3 paper, figures for head dim 64; PyTorch 2.5 cuDNN SDPA notes).
    pointwise 0.80 and reduction 0.70 of COPY_BW (inductor's Triton kernels at >= 16 MB), fused ops 0.70
    (bench/ops targets: >= 60%), optimizer 0.80 (fused AdamW, one pass over 4 fp32 states).
    """

    matmul: tuple[tuple[int, float], ...] = ((1024, 0.85), (512, 0.75), (256, 0.62), (0, 0.45))
    attention_fwd: tuple[tuple[str, float], ...] = (("cudnn", 400 / 790), ("flash", 300 / 790),
                                                    ("efficient", 220 / 790), ("flash-attn-3", 430 / 790),
                                                    ("math", 0.10))
    attention_bwd: tuple[tuple[str, float], ...] = (("cudnn", 300 / 790), ("flash", 220 / 790),
                                                    ("efficient", 160 / 790), ("flash-attn-3", 330 / 790),
                                                    ("math", 0.10))
    pointwise: float = 0.80
    reduction: float = 0.70
    cast: float = 0.80
    fused_op: float = 0.70
    optimizer: float = 0.80
    memory_of_compute_bound: float = 0.80  # e_b of matmul / attention kernels (their bytes rarely bind)

    def with_measured_attention(self, path: str | Path) -> Efficiency:
        """These efficiencies with the attention rates measured by bench/attention_timing.py (decoder shape)."""
        names = {"sdpa-cudnn": "cudnn", "sdpa-flash": "flash", "sdpa-efficient": "efficient",
                 "flash-attn": "flash-attn-3"}
        kernels = json.loads(Path(path).read_text())["shapes"]["decoder"]["kernels"]
        fwd, bwd = dict(self.attention_fwd), dict(self.attention_bwd)
        for name, row in kernels.items():
            if name in names and "fwd_tflops" in row:
                fwd[names[name]] = row["fwd_tflops"] * 1e12 / PEAK_MATMUL
                bwd[names[name]] = row["bwd_tflops"] * 1e12 / PEAK_MATMUL
        return replace(self, attention_fwd=tuple(fwd.items()), attention_bwd=tuple(bwd.items()))

    def gemm(self, m: int, n: int, k: int) -> float:
        small = min(m, n, k)
        return next(e for lim, e in self.matmul if small >= lim)

    def attention(self, kernel: str, phase: str) -> float:
        return dict(self.attention_fwd if phase == "forward" else self.attention_bwd)[kernel]


# --------------------------------------------------------------------------------------------- time


def predict(ks: list[Kernel], eff: Efficiency = Efficiency(), attention: str | None = None,
            launch_s: float = LAUNCH_S) -> list[Kernel]:
    """Each kernel with its predicted time; `attention` replaces the SDPA kernel (the candidates' costs)."""
    out = []
    for k in ks:
        e_b, e_c = eff.pointwise, None
        if k.cls == "matmul":
            m, n, kk = (int(x) for x in k.shape.split("x")[1:])
            e_c, e_b = eff.gemm(m, n, kk), eff.memory_of_compute_bound
        elif k.cls == "attention":
            kernel = attention or k.attention_kernel
            e_c, e_b = eff.attention(kernel, k.phase), eff.memory_of_compute_bound
            k = replace(k, attention_kernel=kernel)
        elif k.cls == "fused-op":  # cube_embed's GEMMs: [B*N_vis, 1536] x [1536, D], smallest dimension D >= 384
            e_b, e_c = eff.fused_op, (eff.gemm(4096, 768, 1536) if k.flops else None)
        elif k.cls in ("reduction", "cast", "optimizer"):
            e_b = getattr(eff, k.cls)
        t_mem = k.bytes / (COPY_BW * e_b)
        t_cmp = k.flops / (PEAK_MATMUL * e_c) if e_c else 0.0
        out.append(replace(k, time_s=max(t_mem, t_cmp) + launch_s))
    return out


def summarize(ks: list[Kernel], batch: int) -> dict:
    """Totals per component group and per class, and clips/s."""
    total = sum(k.time_s for k in ks)
    by_comp: dict[str, float] = defaultdict(float)
    by_class: dict[str, float] = defaultdict(float)
    for k in ks:
        by_comp[_group(k.component)] += k.time_s
        part = "encoder" if k.component.startswith(("enc", "embed")) else "decoder" if k.component.startswith(
            ("dec", "bridge", "head", "loss")) else "step"
        by_class[f"{k.cls} ({part})" if k.cls in ("matmul", "attention") else k.cls] += k.time_s
    return dict(step_ms=total * 1e3, clips_per_s=batch / total, kernels=len(ks),
                by_component_ms={k: v * 1e3 for k, v in sorted(by_comp.items(), key=lambda kv: -kv[1])},
                by_class_ms={k: v * 1e3 for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])},
                bytes_gb=sum(k.bytes for k in ks) / 1e9, tflop=sum(k.flops for k in ks if k.cls in (
                    "matmul", "attention", "fused-op")) / 1e12)


def _group(label: str) -> str:
    head, _, tail = label.partition(".")
    return head.rstrip("0123456789") + ("." + tail if tail else "")


def correct(eff: Efficiency, predicted_ms: dict[str, float], measured_ms: dict[str, float]) -> dict[str, float]:
    """Per class, the factor measured / predicted: multiply that class's time by it (equivalently divide its
    efficiency), the correction `bench/gpu.sh` records next to the prediction."""
    return {k: measured_ms[k] / predicted_ms[k] for k in measured_ms if predicted_ms.get(k)}


# --------------------------------------------------------------------------------------------- the step


def step_kernels(size: str = "B", batch: int = 32, settings: dict | None = None) -> tuple[list[Kernel], dict]:
    """The CLI step's kernels at (size, batch): the captured training graph (bench/memory.py) plus the optimizer.
    `settings`: partitioner settings (None: the CLI's, `videomae.layers.recompute.COMPILE_SETTINGS`)."""
    from bench import memory

    graph = memory.training_graph(size, batch, settings=settings)
    params = sum(p.numel() for p in memory.ours_model(size).parameters())
    ks = kernels(graph.forward, "forward") + kernels(graph.backward, "backward") + optimizer_kernels(params)
    from bench import fake_step
    from videomae import dispatch

    fused = (fake_step.gpu_backends(dispatch.registered()) or ["torch"])[0]
    return ks, {"sdpa": graph.sdpa, "params": params, "fused_ops_backend": fused}


def attention_candidates(ks: list[Kernel], batch: int, eff: Efficiency = Efficiency()) -> dict[str, dict]:
    """Attention time (fwd + bwd, all layers) and step clips/s with each SDPA kernel in place of the traced one."""
    out = {}
    for kernel, _ in eff.attention_fwd:
        if kernel == "math":
            continue
        timed = predict(ks, eff, attention=kernel)
        att = [k for k in timed if k.cls == "attention"]
        out[kernel] = dict(
            decoder_fwd_ms=1e3 * sum(k.time_s for k in att if k.phase == "forward" and k.component.startswith("dec")),
            decoder_bwd_ms=1e3 * sum(k.time_s for k in att if k.phase == "backward" and k.component.startswith("dec")),
            attention_ms=sum(k.time_s for k in att) * 1e3, step_ms=sum(k.time_s for k in timed) * 1e3,
            clips_per_s=batch / sum(k.time_s for k in timed),
            tflops_fwd=dict(eff.attention_fwd)[kernel] * PEAK_MATMUL / 1e12,
            tflops_bwd=dict(eff.attention_bwd)[kernel] * PEAK_MATMUL / 1e12)
    return out


GLUE = ("pointwise", "reduction", "cast")  # the classes that are inductor's own kernels


def glue_ms(summary: dict) -> float:
    """The time of a `summarize()`d step's GLUE classes."""
    return sum(summary["by_class_ms"].get(c, 0) for c in GLUE)


def inductor_traffic(batch: int = 32) -> dict:
    """The same step as inductor compiles it (bench/trace.py: the CLI's objective on a fake H200, ViT-B at full
    depth, caches off): bytes of inductor's own kernels per step, each kernel's estimate (inductor's
    `benchmark_kernel` figure) times its launches. A check of this model's fusion rule, which prices the same
    work as its `pointwise`, `reduction` and `cast` kernels without asking inductor."""
    import tempfile

    from bench import nodriver

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "trace.json"
        res = nodriver.run_isolated(["-m", "bench.trace", "--batch", str(batch), "--traffic", "--json", str(out)],
                                 timeout=3600)
        if res.returncode:
            raise RuntimeError(f"bench.trace --traffic failed:\n{(res.stdout + res.stderr)[-3000:]}")
        return json.loads(out.read_text())["traffic"]


def run(size: str = "B", batch: int = 32, attention_json: str | None = None, check: bool = False) -> dict:
    """`check`: add `inductor_traffic` (ViT-B only: the CLI's model), about two minutes on 2 cores."""
    from bench.common import provenance

    eff = Efficiency() if attention_json is None else Efficiency().with_measured_attention(attention_json)
    variants = {}
    ks_default, meta = step_kernels(size, batch, settings={})
    variants["CLI compile today (torch's partitioner defaults)"] = summarize(predict(ks_default, eff), batch)
    ks, meta = step_kernels(size, batch)
    timed = predict(ks, eff)
    variants["+ recompute settings (videomae.layers.recompute.COMPILE_SETTINGS)"] = summarize(timed, batch)
    candidates = attention_candidates(ks, batch, eff)
    best = max(candidates, key=lambda k: candidates[k]["clips_per_s"])
    # What the target would take: each lever alone, then together (none of them is claimed).
    fast_gemm = replace(eff, matmul=((0, 0.85),))
    fast_glue = replace(eff, pointwise=0.95, reduction=0.95, cast=0.95)
    levers = {
        "CUDA graphs (launch gap 0.5 us instead of 1.5)": predict(ks, eff, launch_s=0.5e-6),
        "every GEMM at 0.85 of the measured peak": predict(ks, fast_gemm),
        "attention at FlashAttention-3 rates (430 / 330 TFLOP/s)": predict(ks, eff, attention="flash-attn-3"),
        "glue kernels at 0.95 of the copy bandwidth": predict(ks, fast_glue),
        "all four": predict(ks, replace(fast_gemm, pointwise=0.95, reduction=0.95, cast=0.95),
                            attention="flash-attn-3", launch_s=0.5e-6),
    }
    sensitivity = {name: dict(step_ms=sum(k.time_s for k in t) * 1e3, clips_per_s=batch / sum(k.time_s for k in t))
                   for name, t in levers.items()}
    biggest = sorted(timed, key=lambda k: -k.time_s)[:30]
    glue = [k for k in timed if k.cls in GLUE]
    glue_model = dict(gb=round(sum(k.bytes for k in glue) / 1e9, 3), kernels=len(glue))
    return dict(
        model=size, batch=batch, clip="16x224x224, tube 0.9, bf16 autocast", sdpa_traced=meta["sdpa"],
        fused_ops_backend=meta["fused_ops_backend"],
        peaks=dict(matmul_tflops=PEAK_MATMUL / 1e12, copy_tbps=COPY_BW / 1e12, launch_us=LAUNCH_S * 1e6),
        efficiency=asdict(eff), variants=variants, attention_candidates=candidates, best_attention=best,
        sensitivity=sensitivity, glue_model=glue_model,
        inductor_traffic=inductor_traffic(batch) if check and size == "B" else None,
        headline=variants["+ recompute settings (videomae.layers.recompute.COMPILE_SETTINGS)"],
        largest_kernels=[asdict(k) for k in biggest], kernels=[asdict(k) for k in timed],
        **{**provenance("torch", "cpu"), "device": "predicted for an H200 from a graph traced on a fake one"})


def target_budget(headline: dict, batch: int, clips_per_s: float = 1900.0) -> dict:
    """What `clips_per_s` asks of a step with this headline: its TFLOP/s and fraction of PEAK_MATMUL, the time
    of the compute-bound classes (matmul, attention) at the model's efficiencies, and what is left of the step's
    budget for the rest (memory-bound: glue, fused ops, optimizer), against what the rest takes now."""
    step_ms = batch / clips_per_s * 1e3
    compute = sum(v for k, v in headline["by_class_ms"].items() if k.startswith(("matmul", "attention")))
    tflops = headline["tflop"] / (step_ms / 1e3)
    return dict(step_ms=step_ms, tflops_needed=tflops, peak_fraction=tflops * 1e12 / PEAK_MATMUL,
                compute_ms=compute, left_ms=step_ms - compute, memory_bound_ms=headline["step_ms"] - compute)


def markdown(r: dict) -> str:
    h = r["headline"]
    lines = [
        "# Cost model of the CLI step on an H200 (predicted)", "",
        f"ViT-{r['model']}, B={r['batch']}, {r['clip']}; graph traced on a fake H200 (bench/fake_step.py), "
        f"SDPA kernel traced: {', '.join(r['sdpa_traced'])}, fused ops: `{r['fused_ops_backend']}` backend; "
        f"peaks: {r['peaks']['matmul_tflops']:.0f} TFLOP/s bf16 matmul, {r['peaks']['copy_tbps']} TB/s copy "
        f"(measured, GUIDE.md section 3), {r['peaks']['launch_us']} us per "
        f"kernel; torch {r['torch']}, git {r['git_sha']}, {r['date_utc']}.", "",
        f"**Predicted: {h['step_ms']:.1f} ms per step, {h['clips_per_s']:.0f} clips/s** ({h['kernels']} kernels, "
        f"{h['bytes_gb']:.1f} GB moved, {h['tflop']:.2f} TFLOP). Target 1,900 clips/s = "
        f"{r['batch'] / 1900 * 1e3:.1f} ms.", "",
        "## Per component (ms)", "", "| component | ms | share |", "|---|---:|---:|",
    ]
    for k, v in h["by_component_ms"].items():
        lines.append(f"| {k} | {v:.2f} | {v / h['step_ms']:.0%} |")
    lines += ["", "## Per kernel class (ms)", "", "| class | ms | share |", "|---|---:|---:|"]
    for k, v in h["by_class_ms"].items():
        lines.append(f"| {k} | {v:.2f} | {v / h['step_ms']:.0%} |")
    if r.get("history"):
        lines += ["", "## Changes, one at a time", "",
                  "Each row is one run of this script (`--label`) at the commit shown: the step's prediction before "
                  "and after each change to the model or the step.", "",
                  "| change | git | step ms | clips/s | GB moved | TFLOP | glue ms |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for c in r["history"]:
            lines.append(f"| {c['label']} | {c['git_sha']} | {c['step_ms']:.2f} | {c['clips_per_s']:.0f} | "
                         f"{c['bytes_gb']:.2f} | {c['tflop']:.3f} | {c['glue_ms']:.2f} |")
    lines += ["", "## What each setting buys", "",
              "| variant | step ms | clips/s | glue ms (pointwise+reduction+cast) |",
              "|---|---:|---:|---:|"]
    for name, v in r["variants"].items():
        lines.append(f"| {name} | {v['step_ms']:.2f} | {v['clips_per_s']:.0f} | {glue_ms(v):.2f} |")
    lines += ["", "## Attention kernels (decoder: N=1568, d=64, 6 heads; all layers, fwd+bwd)", "",
              "| kernel | TFLOP/s fwd / bwd (assumed) | decoder fwd ms | decoder bwd ms | all attention ms "
              "| step clips/s |",
              "|---|---|---:|---:|---:|---:|"]
    for name, c in r["attention_candidates"].items():
        lines.append(f"| {name} | {c['tflops_fwd']:.0f} / {c['tflops_bwd']:.0f} | {c['decoder_fwd_ms']:.2f} | "
                     f"{c['decoder_bwd_ms']:.2f} | {c['attention_ms']:.2f} | {c['clips_per_s']:.0f} |")
    lines += ["", "## What 1,900 clips/s would take (levers, not claims)", "", "| lever | step ms | clips/s |",
              "|---|---:|---:|"]
    for name, v in r["sensitivity"].items():
        lines.append(f"| {name} | {v['step_ms']:.2f} | {v['clips_per_s']:.0f} |")
    f = target_budget(h, r["batch"])
    lines += ["", f"At 1,900 clips/s the step's {h['tflop']:.2f} TFLOP run at {f['tflops_needed']:.0f} TFLOP/s, "
              f"{f['peak_fraction']:.0%} of the measured peak over the whole step. At this model's efficiencies the "
              f"GEMMs and attention alone take {f['compute_ms']:.1f} ms, which leaves {f['left_ms']:.1f} ms for the "
              f"memory-bound kernels that take {f['memory_bound_ms']:.1f} ms here."]
    ind = r.get("inductor_traffic")
    if ind:
        gm = r["glue_model"]
        lines += ["", "## Check: this model's glue against inductor's own kernels", "",
                  f"This model prices the work inductor fuses (pointwise, reduction, cast) as {gm['kernels']} kernels "
                  f"moving {gm['gb']:.2f} GB per step. Inductor's kernels for the same step (`bench/trace.py "
                  f"--traffic`: its own estimate per kernel times its launches) move {ind['total_gb']:.2f} GB in "
                  f"{ind['launches']} launches of {ind['kernels']} distinct kernels "
                  f"(forward {ind['gb'].get('forward', 0):.2f}, backward {ind['gb'].get('backward', 0):.2f}; "
                  f"persistent reductions {ind['gb'].get('per', 0):.2f}, looped reductions "
                  f"{ind['gb'].get('red', 0):.2f}, pointwise {ind['gb'].get('poi', 0):.2f}): "
                  f"{ind['total_gb'] / gm['gb']:.2f}x the model's bytes."]
        glue = glue_ms(h)
        ms = glue * ind["total_gb"] / gm["gb"] + (ind["launches"] - gm["kernels"]) * LAUNCH_S * 1e3
        step = h["step_ms"] - glue + ms
        lines += ["", f"Priced at this model's glue rates, inductor's kernels take {ms:.2f} ms instead of "
                  f"{glue:.2f}: {step:.1f} ms per step, {r['batch'] / step * 1e3:.0f} clips/s (the headline above "
                  f"keeps the model's own fusion)."]
        lines += ["", "Inductor's kernels moving the most bytes per step:", "",
                  "| GB per step | launches | GB per launch | graph | kernel |", "|---:|---:|---:|---|---|"]
        lines += [f"| {t['gb']:.3f} | {t['launches']} | {t['gb_per_launch']:.4f} | {t['graph']} | `{t['kernel']}` |"
                  for t in ind.get("top", [])]
    lines += ["", "## Largest kernels", "", "| ms | class | phase | component | GB | GFLOP | shape |",
              "|---:|---|---|---|---:|---:|---|"]
    for k in r["largest_kernels"][:20]:
        lines.append(f"| {k['time_s'] * 1e3:.3f} | {k['cls']} | {k['phase']} | {k['component']} | "
                     f"{k['bytes'] / 1e9:.3f} | {k['flops'] / 1e9:.1f} | {k['shape']} {k['attention_kernel']} |")
    lines += ["", "Efficiencies (fractions of the measured peaks; `Efficiency` in bench/cost_model.py says where each "
              "comes from):", "", "```", json.dumps(r["efficiency"], indent=1), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="B", choices=["S", "B", "L"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--measure", action="store_true", help="on a GPU: measure per class next to the prediction")
    ap.add_argument("--rehearse", action="store_true", help="with --measure: the same code on the CPU, tiny shapes")
    ap.add_argument("--attention-json", help="attention rates measured by bench/attention_timing.py instead of priors")
    ap.add_argument("--check", action="store_true",
                    help="also trace the step through inductor and compare its kernels' bytes (about 2 min)")
    ap.add_argument("--label", help="also append this run's headline to the history of changes under this label")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.label and (args.model, args.batch, args.attention_json) != ("B", 32, None):
        raise SystemExit("--label records the headline step (ViT-B, --batch 32, no --attention-json)")
    if args.measure:
        from bench.cost_measure import measure

        r = measure(args.model, args.batch, out=args.out, rehearse=args.rehearse)
        print(json.dumps({k: v for k, v in r.items() if not isinstance(v, dict)}, indent=1))
        return 0
    r = run(args.model, args.batch, args.attention_json, check=args.check)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stored = out / "cost_model.json"
    r["history"] = json.loads(stored.read_text()).get("history", []) if stored.is_file() else []
    if args.label:
        h = r["headline"]
        r["history"] = [c for c in r["history"] if c["label"] != args.label] + [dict(
            label=args.label, git_sha=r["git_sha"], step_ms=h["step_ms"], clips_per_s=h["clips_per_s"],
            bytes_gb=h["bytes_gb"], tflop=h["tflop"], glue_ms=glue_ms(h))]
    (out / "cost_model.json").write_text(json.dumps(r, indent=1) + "\n")
    (out / "cost_model.md").write_text(markdown(r))
    h = r["headline"]
    print(f"predicted {h['step_ms']:.1f} ms/step, {h['clips_per_s']:.0f} clips/s -> {out / 'cost_model.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
