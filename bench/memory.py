"""Activation memory per clip: the bytes a pretraining step saves for backward, per component, for our model
(eager and compiled), Hugging Face transformers `VideoMAEForPreTraining` (sdpa) and the official code.

Method (the same for every row): `torch.autograd.graph.saved_tensors_hooks` sees every tensor an autograd node
saves, and a dispatch mode sees every storage the forward makes (`fake_step.HeldBytes`); the figure is their union
at the end of forward + loss: what autograd saved (the input clip included) and what the forward made that is still
alive (what activation checkpointing and its cache keep, which the hooks do not see). Each storage is counted once
(views share it), parameters and buffers are left out, and the figure per clip is batch 2 minus batch 1 (what does
not grow with the batch cancels: the weights' bf16 copies, for one). The hooks-only figure is `saved_hooks_*` in
the json. The step is forward + loss under bf16 autocast, as `videomae pretrain` runs it on CUDA, at 16x224x224,
tube 0.9.

Device: no GPU runs this. The models run on fake CUDA tensors (`bench/fake_step.py`): PyTorch's own CUDA autocast
policy applies (LayerNorm, softmax, MSE in fp32), SDPA runs the aten kernel PyTorch (or our dispatcher) picks
on an H200, the fused ops dispatch to their GPU backends (their fake kernels give the GPU's dtypes), and the
storages saved are those the GPU would hold, without allocating them. This is more faithful than emulating CUDA
autocast with CPU autocast, whose policy differs (CPU autocast keeps a bf16 LayerNorm in bf16), and it costs
seconds at any size. `measure_device` (bench/memory_device.py) measures the same rows on a real GPU.
- `ours`: the CLI's model and objective, dispatcher on auto (attention: what auto picks on an H200).
- `ours-eager-attn`: the same with eager attention (the reference): what SDPA's output + log-sum-exp saves.
- `ours-compiled`: the saved values of the training graph as inductor partitions it (`fake_step.capture_
  training_graph`: AOTAutograd joint, min-cut rematerialization, inductor's decompositions).
- `hf`, `official`: as `bench/peers.py` builds them (the official code from the git-ignored third_party/VideoMAE).

Largest batch that fits: (capacity - model state - reserve) / (saved per clip), with model state = fp32
weights, gradients and the two AdamW moments (16 bytes per parameter) and a 4 GiB reserve for the CUDA context,
cuBLAS/cuDNN workspaces and the backward's transient buffers (measured on the GPU by `measure_device`, which
`bench/gpu.sh` calls; see its docstring).

    python bench/memory.py                          # S/B/L, every peer -> bench/results/memory.{json,md}
    python bench/memory.py --sizes B --label "gelu recompute"   # also appends a row to the savings history
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import videomae  # noqa: E402
from bench import fake_step as fs  # noqa: E402
from bench import peers  # noqa: E402
from bench.common import provenance  # noqa: E402
from videomae import dispatch  # noqa: E402
from videomae.masking import TokenIds, token_ids, tube_mask  # noqa: E402

# Our hooks only count; what selective checkpointing keeps is counted by fake_step.HeldBytes.
warnings.filterwarnings("ignore", message="A saved_tensors_hooks context")

SIZES = {"S": "small", "B": "base", "L": "large"}
PEERS = ("ours", "ours-compiled", "ours-eager-attn", "hf", "official")
MiB = 2**20
GB = 10**9
CAPACITY = {"80GB": 80 * GB, "141GB": 141 * GB}
RESERVE = 4 * 2**30
OFFICIAL = ROOT / "third_party" / "VideoMAE"
RESULTS = ROOT / "bench" / "results"

# Which module starts which component. A label stays in force until the next one starts, so a block's residual
# add belongs to the sub-layer it closes. Labels: embed, enc{i}.attn, enc{i}.mlp, bridge (encoder norm, the
# encoder-to-decoder projection, the decoder input), dec{i}.attn, dec{i}.mlp, head (decoder norm and head), loss.
RULES = {
    "ours": [
        (r"encoder\.blocks\.(\d+)\.(norm1|attn)", "enc{0}.attn"),
        (r"encoder\.blocks\.(\d+)\.(norm2|mlp)", "enc{0}.mlp"),
        (r"encoder\.norm", "bridge"),
        (r"decoder\.blocks\.(\d+)\.(norm1|attn)", "dec{0}.attn"),
        (r"decoder\.blocks\.(\d+)\.(norm2|mlp)", "dec{0}.mlp"),
        (r"decoder\.norm", "head"),
    ],
    "hf": [
        (r"videomae\.embeddings", "embed"),
        (r"videomae\.encoder\.layer\.(\d+)\.(layernorm_before|attention)", "enc{0}.attn"),
        (r"videomae\.encoder\.layer\.(\d+)\.(layernorm_after|intermediate|output)", "enc{0}.mlp"),
        (r"encoder_to_decoder", "bridge"),
        (r"decoder\.decoder_layers\.(\d+)\.(layernorm_before|attention)", "dec{0}.attn"),
        (r"decoder\.decoder_layers\.(\d+)\.(layernorm_after|intermediate|output)", "dec{0}.mlp"),
        (r"decoder\.norm", "head"),
    ],
    "official": [
        (r"encoder\.patch_embed", "embed"),
        (r"encoder\.blocks\.(\d+)\.(norm1|attn)", "enc{0}.attn"),
        (r"encoder\.blocks\.(\d+)\.(norm2|mlp)", "enc{0}.mlp"),
        (r"encoder\.norm", "bridge"),
        (r"decoder\.blocks\.(\d+)\.(norm1|attn)", "dec{0}.attn"),
        (r"decoder\.blocks\.(\d+)\.(norm2|mlp)", "dec{0}.mlp"),
        (r"decoder\.norm", "head"),
    ],
}
AFTER = {"hf": {"decoder.head": "loss"}}  # the loss that runs inside the model's forward, after these modules


# --------------------------------------------------------------------------------------------- the steps


def _made(factory, meta: bool) -> torch.nn.Module:
    """On the meta device (sizes only, for the fake H200), or on the CPU with its own init (a real GPU run)."""
    return fs.build_meta(factory) if meta else factory()


def ours_model(size: str, meta: bool = True) -> torch.nn.Module:
    return _made(lambda: videomae.create_model(f"pretrain_videomae_{SIZES[size]}_patch16_224", decoder_depth=4), meta)


def hf_model(size: str, meta: bool = True) -> torch.nn.Module:
    return _made(lambda: peers.hf_net(ours_model(size), 16, 224), meta)


def official_model(size: str, meta: bool = True, root: Path = OFFICIAL) -> torch.nn.Module:
    mp = peers.load_official(peers.official_path(str(root)))
    return _made(lambda: peers.official_net(mp, ours_model(size), 224), meta)


def official_loss(videos: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """engine_for_pretraining.train_one_epoch's loss (targets in fp32, no grad; the MSE under autocast)."""
    patch = peers.official_targets(videos)
    labels = patch[mask].reshape(videos.shape[0], -1, patch.shape[-1])
    return torch.nn.functional.mse_loss(pred, labels)


def make_step(peer: str, net: torch.nn.Module, videos: torch.Tensor, ids: TokenIds, mask: torch.Tensor,
              enter: Callable[[str], None]) -> Callable[[], torch.Tensor]:
    """`step() -> loss`: the peer's forward and loss on these inputs (what its training step runs)."""
    if peer.startswith("ours"):
        def step():
            pred = net(videos, ids)
            enter("loss")
            return net.forward_loss(videos, pred, ids)
    elif peer == "hf":
        hf_videos = videos.transpose(1, 2).contiguous()  # [B, T, C, H, W], made before the step as bench/peers.py

        def step():
            return net(pixel_values=hf_videos, bool_masked_pos=mask).loss
    else:
        def step():
            pred = net(videos, mask)
            enter("loss")
            return official_loss(videos, pred, mask)
    return step


def build(peer: str, size: str, meta: bool = True) -> torch.nn.Module:
    if peer.startswith("ours"):
        return ours_model(size, meta)
    return hf_model(size, meta) if peer == "hf" else official_model(size, meta)


# --------------------------------------------------------------------------------------------- measuring


def real_masks(batch: int) -> tuple[torch.Tensor, TokenIds]:
    """Tube masks at 0.9 made on the CPU, as the loader's collate makes them (call outside the fake mode)."""
    mask = tube_mask(batch, (8, 14, 14), 0.9, generator=torch.Generator().manual_seed(0))
    return mask, token_ids(mask)


def _inputs(mask: torch.Tensor, ids: TokenIds, device: str, mode: fs.FakeDeviceMode | None):
    """Fake inputs of the shapes of (mask, ids) (values never matter here); the real mask registered with the mode."""
    batch = mask.shape[0]
    videos = torch.empty(batch, 3, 16, 224, 224, device=device)
    # Fake tensors of the ids' shapes; the rest of the tuple as made (`validated_for`: the ids were checked on the
    # CPU where they were made, so the model does not read them again)
    ids_dev = TokenIds(*(None if t is None else torch.empty(t.shape, dtype=t.dtype, device=device) for t in ids[:3]),
                       *ids[3:])
    mask_dev = torch.empty(mask.shape, dtype=torch.bool, device=device)
    if mode is not None:
        mode.register_mask(mask_dev, mask)
    return videos, ids_dev, mask_dev


def attention_switch(peer: str):
    """The attention backend of our rows: eager for `ours-eager-attn`, else what `auto` picks."""
    return dispatch.use_backend(attention="eager" if peer == "ours-eager-attn" else "auto")


@dataclass(frozen=True)
class Switches:
    """What our rows run with: `recompute` (videomae.layers.recompute: auto|cheap|none|full) for the eager rows;
    `partitioner` for the compiled row: `videomae` (recompute.COMPILE_SETTINGS, as the CLI's compile) or `default`
    (torch's own partitioner settings). The savings history records each row's switches."""

    recompute: str = "auto"
    partitioner: str = "videomae"

    def compile_settings(self) -> dict:
        recompute = recompute_module()
        return dict(recompute.COMPILE_SETTINGS) if recompute and self.partitioner == "videomae" else {}

    def context(self):
        """The recompute switch for the eager rows (nothing on a commit before the switch existed)."""
        recompute = recompute_module()
        return recompute.use_recompute(self.recompute) if recompute else contextlib.nullcontext()


def official_present() -> bool:
    """Whether the git-ignored checkout of the official code is there (its rows are skipped without it)."""
    return (OFFICIAL / "modeling_pretrain.py").is_file()


def recompute_module():
    """videomae.layers.recompute, or None on commits before it (the baseline row is measured there)."""
    return importlib.import_module("videomae.layers.recompute") if importlib.util.find_spec(
        "videomae.layers.recompute") else None


def saved_eager(peer: str, size: str, batch: int, dtype: torch.dtype | None = torch.bfloat16,
                switches: Switches = Switches()) -> dict:
    """{component: bytes} saved for backward by one forward + loss of `peer` at `batch`, on a fake H200."""
    net = build(peer, size)
    real = real_masks(batch)
    with fs.fake_h200():
        fs.materialize(net, "cuda")
        mode = fs.FakeDeviceMode()
        videos, ids, mask = _inputs(*real, "cuda", mode)
        tracker = fs.ComponentTracker(net, [fs.ComponentRule(*r) for r in RULES["ours" if peer.startswith("ours")
                                                                                  else peer]], after=AFTER.get(peer))
        step = make_step(peer, net, videos, ids, mask, tracker.enter)
        state = fs.state_storages(net)
        held = fs.HeldBytes(tracker, state)
        with attention_switch(peer), switches.context(), \
                fs.SavedBytes(tracker, state) as saved, mode, held, fs.autocast("cuda", dtype):
            loss = step()
        tracker.remove()
        # held: what backward needs that the batch pays for: every storage saved through autograd (the input
        # clip included) and every storage the forward made that is still alive (checkpointing's, caches)
        out = {"saved": saved.by_component, "held": fs.by_component(saved.seen, held.alive()),
               "sdpa": sorted(set(mode.kernels))}
        del loss
        return out


def _loss_fn(net: torch.nn.Module, tracker: fs.ComponentTracker, ids_meta: tuple):
    def loss_fn(params, videos, visible, decoded):
        ids = TokenIds(visible, decoded, None, *ids_meta)  # ids_meta: what follows the tensors (validated_for)
        tracker.enter("embed")
        try:
            with torch.nn.utils.stateless._reparametrize_module(net, params):
                pred = net(videos, ids)
                tracker.enter("loss")
                return net.forward_loss(videos, pred, ids)
        finally:
            tracker.close()
    return loss_fn


def training_graph(size: str, batch: int, dtype: torch.dtype | None = torch.bfloat16, prefer: str | None = None,
                   settings: dict | None = None):
    """Our CLI objective's partitioned training graph on a fake H200 (`fake_step.capture_training_graph`), with
    each node's component in `node.meta["custom"]["component"]`. `settings`: torch._functorch.config values in force
    while partitioning (default: `videomae.layers.recompute.COMPILE_SETTINGS`, which the CLI's compile applies)."""
    import torch._functorch.config as functorch_config

    settings = Switches().compile_settings() if settings is None else settings
    net = ours_model(size)
    real = real_masks(batch)
    with fs.fake_h200():
        fs.materialize(net, "cuda")
        mode = fs.FakeDeviceMode(prefer=prefer)
        videos, ids, _ = _inputs(*real, "cuda", None)
        tracker = fs.ComponentTracker(net, [fs.ComponentRule(*r) for r in RULES["ours"]], annotate=True)
        params = {**dict(net.named_parameters()), **dict(net.named_buffers())}
        try:
            with functorch_config.patch(**settings):
                graph = fs.capture_training_graph(_loss_fn(net, tracker, tuple(ids[3:])), params,
                                                  (videos, ids.visible, ids.decoded),
                                                  mode, dtype)
        finally:
            tracker.remove()
        graph.sdpa = sorted(set(mode.kernels))
        return graph


def saved_compiled(size: str, batch: int, dtype: torch.dtype | None = torch.bfloat16,
                   switches: Switches = Switches()) -> dict:
    """{component: bytes} of the values the partitioned forward hands to backward (parameters left out)."""
    graph = training_graph(size, batch, dtype, settings=switches.compile_settings())
    params = {n.name for n in list(graph.forward.graph.find_nodes(op="placeholder"))[:graph.num_params]}  # + buffers
    fw_nodes = {n.name: n for n in graph.forward.graph.nodes}
    out: dict[str, int] = {}
    seen: set[int] = set()  # views of one buffer (q, k, v of the qkv projection) are one storage, as inductor returns
    for node in graph.backward.graph.find_nodes(op="placeholder"):
        if node.name.startswith("tangents") or node.name in params:
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.untyped_storage()._cdata in seen:
            continue
        seen.add(val.untyped_storage()._cdata)
        src = fw_nodes.get(node.name)
        label = fs.component_of(src) if src is not None else "unattributed"
        out[label] = out.get(label, 0) + val.untyped_storage().nbytes()
    return {"saved": out, "held": out, "sdpa": graph.sdpa}


def per_clip(peer: str, size: str, dtype: torch.dtype | None = torch.bfloat16, switches: Switches = Switches()) -> dict:
    """Batch 2 minus batch 1 of both measures: {"held": {label: bytes per clip}, "saved": {...}, "total": held
    bytes per clip, "saved_total": saved-hook bytes per clip, "sdpa": [...]}."""
    fn = (lambda b: saved_compiled(size, b, dtype, switches)) if peer == "ours-compiled" else (
        lambda b: saved_eager(peer, size, b, dtype, switches))
    one, two = fn(1), fn(2)
    out = {"sdpa": two["sdpa"]}
    for kind in ("held", "saved"):
        labels = list(dict.fromkeys([*two[kind], *one[kind]]))
        out[kind] = {k: two[kind].get(k, 0) - one[kind].get(k, 0) for k in labels}
    out["total"], out["saved_total"] = sum(out["held"].values()), sum(out["saved"].values())
    return out


def grouped(components: dict[str, int]) -> dict[str, int]:
    """Blocks summed: embed, enc.attn, enc.mlp, bridge, dec.attn, dec.mlp, head, loss."""
    out: dict[str, int] = {}
    for label, b in components.items():
        key = label.split(".")[0].rstrip("0123456789") + ("." + label.split(".")[1] if "." in label else "")
        out[key] = out.get(key, 0) + b
    return out


def model_state_bytes(size: str) -> int:
    """fp32 weights + gradients + AdamW's two moments."""
    return 16 * sum(p.numel() for p in ours_model(size).parameters())


def max_batch(per_clip_bytes: int, size: str, capacity: int) -> int:
    return max(0, int((capacity - model_state_bytes(size) - RESERVE) // per_clip_bytes))


# --------------------------------------------------------------------------------------------- report


def run(sizes: list[str], peers: list[str], switches: Switches = Switches()) -> dict:
    rows = []
    for size in sizes:
        for peer in peers:
            if peer == "official" and not official_present():
                print(f"official skipped: no checkout at {OFFICIAL}", flush=True)
                continue
            r = per_clip(peer, size, switches=switches)
            fits = {cap: max_batch(r["total"], size, b) for cap, b in CAPACITY.items()}
            rows.append(dict(size=size, peer=peer, per_clip_bytes=r["total"], per_clip_mib=round(r["total"] / MiB, 2),
                             saved_hooks_bytes=r["saved_total"], saved_hooks_mib=round(r["saved_total"] / MiB, 2),
                             grouped_mib={k: round(v / MiB, 3) for k, v in grouped(r["held"]).items()},
                             components=r["held"], sdpa_kernels=r["sdpa"], max_batch=fits))
            print(f"{size} {peer:16s} {r['total'] / MiB:8.2f} MiB/clip  max batch {fits}", flush=True)
    prov = provenance("torch", "cpu")
    prov["device"] = f"a fake H200 (FakeTensorMode, bench/fake_step.py) on {prov['device']}"
    prov["fused_ops_backend"] = (fs.gpu_backends(dispatch.registered()) or ["torch"])[0]
    return dict(rows=rows, method=" ".join(__doc__.split("\n\n")[1:3]).replace("\n", " "),
                clip="16x224x224, tube 0.9, bf16 autocast (CUDA policy), ViT decoder depth 4",
                capacity_bytes=CAPACITY, reserve_bytes=RESERVE, **prov)


def ratio(result: dict, size: str = "B", peer: str = "ours", base: str = "hf") -> float | None:
    by = {(r["size"], r["peer"]): r["per_clip_bytes"] for r in result["rows"]}
    if (size, peer) in by and (size, base) in by:
        return by[size, peer] / by[size, base]
    return None


def markdown(result: dict, history: list[dict]) -> str:
    groups = ["embed", "enc.attn", "enc.mlp", "bridge", "dec.attn", "dec.mlp", "head", "loss"]
    lines = [
        "# Activation memory per clip", "",
        f"Saved-for-backward bytes per clip (MiB), {result['clip']}; device: {result['device']}, fused ops "
        f"dispatched to their `{result.get('fused_ops_backend', '?')}` backend; torch "
        f"{result['torch']}, transformers {result['transformers']}; git {result['git_sha']}, {result['date_utc']}.",
        "", result["method"], "",
        "| size | peer | total | " + " | ".join(groups) + " | SDPA kernel | max batch 80 GB | max batch 141 GB |",
        "|---|---|---:|" + "---:|" * len(groups) + "---|---:|---:|",
    ]
    for r in result["rows"]:
        g = r["grouped_mib"]
        lines.append(f"| {r['size']} | {r['peer']} | {r['per_clip_mib']:.1f} | "
                     + " | ".join(f"{g.get(k, 0):.1f}" for k in groups)
                     + f" | {','.join(r['sdpa_kernels']) or '-'} | {r['max_batch']['80GB']} | "
                     f"{r['max_batch']['141GB']} |")
    for size in dict.fromkeys(r["size"] for r in result["rows"]):
        for peer in ("ours", "ours-compiled"):
            q = ratio(result, size, peer)
            if q is not None:
                lines.append(f"\n{peer}/hf at ViT-{size}: **{q:.3f}**" + (" (target <= 0.6)" if size == "B" else ""))
    if history:
        lines += ["", "## Savings, one change at a time (ViT-B, MiB per clip)", "",
                  "Each row is one run of this script at the commit shown, with the switches shown (`--recompute`, "
                  "`--partitioner`), so each change has its before and after; `-dirty`: that commit's code measured "
                  "with this commit's bench/memory.py and bench/fake_step.py (the measuring code, not the measured).",
                  "",
                  "| change | switches | git | ours (eager) | ours compiled | ours, eager attention | hf | "
                  "ours/hf | compiled/hf |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]

        def cell(h, peer):
            return f"{h['mib'][peer]:.1f}" if peer in h["mib"] else "-"

        def rel(h, peer):
            return f"{h['mib'][peer] / h['mib']['hf']:.3f}" if peer in h["mib"] and "hf" in h["mib"] else "-"

        for h in history:
            sw = ", ".join(f"{k}={v}" for k, v in h["switches"].items())
            lines.append(f"| {h['label']} | {sw} | {h['git_sha']} | {cell(h, 'ours')} | {cell(h, 'ours-compiled')} | "
                         f"{cell(h, 'ours-eager-attn')} | {cell(h, 'hf')} | {rel(h, 'ours')} | "
                         f"{rel(h, 'ours-compiled')} |")
    lines += ["", f"Largest batch: (capacity - 16 B/parameter of fp32 weights, grads and AdamW moments - "
              f"{RESERVE // 2**30} GiB reserve) / saved bytes per clip; capacity 80e9 and 141e9 bytes.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    ap.add_argument("--recompute", default="auto", choices=["auto", "cheap", "none", "full"],
                    help="videomae.layers.recompute mode of our eager rows")
    ap.add_argument("--partitioner", default="videomae", choices=["videomae", "default"],
                    help="partitioner settings of the compiled row: the CLI's (videomae) or torch's defaults")
    ap.add_argument("--label", help="append this run's ViT-B figures to the savings history under this label")
    ap.add_argument("--measure", action="store_true",
                    help="on a GPU: measure_device for each of --peers at ViT-B -> OUT/memory-cuda.json")
    ap.add_argument("--rehearse", action="store_true", help="with --measure: the same code on the CPU (ViT-S)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.measure:
        from bench.memory_device import measure_main

        return measure_main(args.peers, Path(args.out), args.rehearse)
    switches = Switches(args.recompute, args.partitioner)
    full = args.sizes == list(SIZES) and args.peers == list(PEERS) and switches == Switches()
    if not (full or args.label):
        raise SystemExit("a partial run (sizes, peers or switches) writes nothing: add --label to record it")
    result = run(args.sizes, args.peers, switches)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "memory.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    history = stored.get("history", [])
    if args.label:
        mib = {r["peer"]: round(r["per_clip_bytes"] / MiB, 2) for r in result["rows"] if r["size"] == "B"}
        if not mib:
            raise SystemExit("--label records ViT-B: add B to --sizes")
        history = [h for h in history if h["label"] != args.label] + [
            dict(label=args.label, git_sha=result["git_sha"], switches=asdict(switches), mib=mib)]
    if full:
        stored = result
    stored["history"] = history
    if "rows" in stored:
        path.write_text(json.dumps(stored, indent=1) + "\n")
        (out / "memory.md").write_text(markdown(stored, history))
        print(f"-> {path}, {out / 'memory.md'}")
    else:
        path.write_text(json.dumps(stored, indent=1) + "\n")
        print(f"history -> {path} (run without options for the table)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
