"""bench/memory.py's rows measured on a real GPU (`bench/gpu.sh`'s memory step: `python bench/memory.py --measure`):
the same peers and components as the fake-H200 count, next to it, with the allocator's counters.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from bench import fake_step as fs
from bench.common import provenance
from bench.memory import (
    AFTER,
    RULES,
    attention_switch,
    build,
    make_step,
    official_present,
    per_clip,
    real_masks,
    recompute_module,
)
from videomae import dispatch


def measure_device(peer: str = "ours", size: str = "B", batches: tuple[int, int] = (8, 16),
                   device: str = "cuda") -> dict:
    """The same rows measured on a real GPU (`bench/gpu.sh`): per clip from two batch sizes,
    - `hooks_per_clip`: the saved_tensors_hooks count of this module on real tensors (must equal the fake figure),
    - `allocated_per_clip`: `torch.cuda.memory_allocated` after forward + loss minus before it,
    - `peak_per_clip`: `torch.cuda.max_memory_allocated` over forward + loss + backward, minus the memory before,
    each per clip as (value at batches[1] - value at batches[0]) / (batches[1] - batches[0]).
    Compiled peers compile `forward + loss` as the CLI does; the optimizer state is not created (constant).
    On the CPU (bench/gpu.sh --rehearse) only the hooks figure exists: the allocator's counters are CUDA's."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    rows = {}
    for batch in batches:
        net = build(peer, size, meta=False).to(device).train()
        mask, ids = real_masks(batch)
        ids = ids.to(device)
        videos = torch.randn(batch, 3, 16, 224, 224, device=device)
        compiled = peer == "ours-compiled"
        rules = [] if compiled else [fs.ComponentRule(*r) for r in RULES["ours" if peer.startswith("ours") else peer]]
        tracker = fs.ComponentTracker(net, rules, after=None if compiled else AFTER.get(peer))
        step = make_step(peer, net, videos, ids, mask.to(device), (lambda label: None) if compiled else tracker.enter)
        if compiled:  # as the CLI compiles (with the partitioner settings it applies)
            recompute_module().apply_compile_settings()
            step = torch.compile(step, fullgraph=True)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                step().backward()  # compile outside the measurement
            net.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() if cuda else 0
        with attention_switch(peer), fs.SavedBytes(tracker, fs.state_storages(net)) as saved, \
                torch.autocast(device.type, dtype=torch.bfloat16):
            loss = step()
        after_forward = torch.cuda.memory_allocated() if cuda else None
        loss.backward()
        rows[batch] = dict(hooks=sum(saved.by_component.values()))
        if cuda:
            torch.cuda.synchronize()
            rows[batch].update(allocated=after_forward - before, peak=torch.cuda.max_memory_allocated() - before)
        tracker.remove()
        del net, loss, saved
        if cuda:
            torch.cuda.empty_cache()
    b0, b1 = batches
    out = {f"{k}_per_clip": (rows[b1][k] - rows[b0][k]) / (b1 - b0) for k in rows[b0]}
    return {"peer": peer, "size": size, "batches": list(batches), **out, "raw": rows,
            **provenance(device.type, device.type)}


def measure_main(peers: list[str], out: Path, rehearse: bool = False) -> int:
    """GPU rows next to the fake-H200 figures of the same peers (bench/gpu.sh's memory step). `rehearse`: the same
    code on the CPU at ViT-S, batches 1 and 2 (hooks only) -> memory-rehearsal.json."""
    if not (rehearse or torch.cuda.is_available()):
        raise SystemExit("--measure needs a CUDA device (--rehearse runs the same code on the CPU)")
    size, batches, device = ("S", (1, 2), "cpu") if rehearse else ("B", (8, 16), "cuda")
    # The rehearsal runs the ops' reference: the Triton interpreter at ViT-S's sizes takes minutes, and the kernels'
    # own rehearsal is the smoke and ops steps'.
    backends = (lambda: dispatch.use_backend(ops="torch")) if rehearse else contextlib.nullcontext
    rows = []
    for peer in peers:
        if peer == "official" and not official_present():
            continue
        try:
            with backends():
                row = measure_device(peer, size, batches, device)
        except Exception as e:  # noqa: BLE001 (a peer that fails is recorded, the next one runs)
            row = {"peer": peer, "size": size, "error": f"{type(e).__name__}: {e}".splitlines()[0]}
        fake = per_clip(peer, size)
        row.update(fake_held_per_clip=fake["total"], fake_saved_hooks_per_clip=fake["saved_total"])
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}), flush=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"memory-{'rehearsal' if rehearse else 'cuda'}.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if any("error" in r for r in rows) else 0
