"""Official VideoMAE code vs ours through checkpoint files, fp32 on CPU.

For each size and mode, the official model (random weights, every tensor non-trivial) is saved in the
official layout, loaded with `videomae.load_checkpoint` into our factory model (run on the eager `torch` ops
backend, then on every fused backend that runs here: Triton on CPU under TRITON_INTERPRET=1), and
both run on the same random normalized clips and tube masks. Then the reverse: our `save_checkpoint`
file loaded by the official model with `load_state_dict(strict=True)`; and a pretraining file loaded
into a classifier, against the official fine-tuning script's loading rules.

    git clone https://github.com/MCG-NJU/VideoMAE /tmp/official          # never copied into this repo
    git clone https://github.com/OpenGVLab/VideoMAEv2 /tmp/officialv2    # optional: V2 dual masking
    python bench/official_parity.py --official /tmp/official --v2 /tmp/officialv2 [--sizes small base]

Error: max |ours - official| / max |official| over the output tensor (a scalar for the loss).
The official code needs timm (for its old `timm.models.layers` imports); it is never copied here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import videomae  # noqa: E402
from bench.peers import official_targets  # noqa: E402
from videomae import ops  # noqa: E402
from videomae.masking import running_cell_mask, token_ids, tube_mask  # noqa: E402


def official_engine_loss(videos, pred, mask, decode_mask=None, patch_size=16):
    """The official engines' loss, written out from engine_for_pretraining.py (V1; V2 with decode_mask)."""
    patches = official_targets(videos, 2, patch_size)
    b, _, c = patches.shape
    if decode_mask is None:
        return torch.nn.functional.mse_loss(pred, patches[mask].reshape(b, -1, c))
    loss = ((pred - patches[~decode_mask].reshape(b, -1, c)) ** 2).mean(dim=-1)
    weight = mask[~decode_mask].reshape(b, -1)
    return (loss * weight).sum() / weight.sum()


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Official init leaves biases 0 and LayerNorms (1, 0): randomize all so a swapped tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.2 if p.dim() == 1 else p[0].numel() ** -0.5
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if "norm" in name and p.dim() == 1 else 0))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def load_official(path: str, v2: bool):
    sys.path.insert(0, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's deprecation notes for the old import paths
        package = "models." if v2 else ""
        return tuple(importlib.import_module(f"{package}modeling_{m}") for m in ("pretrain", "finetune"))


def check_pretrain(off_mod, size, videos, mask, tmp, decode_mask=None, tag="v1"):
    official = getattr(off_mod, f"pretrain_videomae_{size}_patch16_224")(decoder_depth=4).eval()
    randomize(official, 0)
    path = Path(tmp) / f"{tag}_pretrain_{size}.pth"
    torch.save({"model": official.state_dict()}, path)
    with torch.no_grad():
        want = official(videos, mask) if decode_mask is None else official(videos, mask, decode_mask)
        want_loss = official_engine_loss(videos, want, mask, decode_mask)
    rows = []
    ids = token_ids(mask, decode_mask)
    ours = videomae.create_model(f"pretrain_videomae_{size}_patch16_224").eval()
    videomae.load_checkpoint(ours, path, strict=True)
    for backend in backends():
        with torch.no_grad(), ops.use_backend(backend):
            pred = ours(videos, ids)
            loss = ours.forward_loss(videos, pred, ids)
        rows.append(dict(model=f"{tag}_pretrain_{size}", mode=f"load, ops={backend}", output_rel_err=rel(pred, want),
                         loss_rel_err=rel(loss, want_loss), loss=want_loss.item()))
        if backend == "torch":
            back = Path(tmp) / f"ours_{tag}_pretrain_{size}.pth"
            videomae.save_checkpoint(ours, back)
            reloaded = getattr(off_mod, f"pretrain_videomae_{size}_patch16_224")(decoder_depth=4).eval()
            reloaded.load_state_dict(torch.load(back, weights_only=True)["model"], strict=True)
            with torch.no_grad():
                again = reloaded(videos, mask) if decode_mask is None else reloaded(videos, mask, decode_mask)
            rows.append(dict(model=f"{tag}_pretrain_{size}", mode="save -> official strict load",
                             output_rel_err=rel(pred, again)))
    return rows


def check_finetune(off_mod, size, videos, tmp):
    official = getattr(off_mod, f"vit_{size}_patch16_224")(num_classes=400, all_frames=16).eval()
    randomize(official, 1)
    path = Path(tmp) / f"finetune_{size}.pth"
    torch.save({"module": official.state_dict()}, path)  # as the DeepSpeed fine-tuning run writes
    with torch.no_grad():
        want = official(videos)
    rows = []
    ours = videomae.create_model(f"vit_{size}_patch16_224", num_classes=400).eval()  # conv3d: no fused op
    videomae.load_checkpoint(ours, path, strict=True)
    with torch.no_grad():
        logits = ours(videos)
    rows.append(dict(model=f"v1_finetune_{size}", mode="load", output_rel_err=rel(logits, want)))
    back = Path(tmp) / f"ours_finetune_{size}.pth"
    videomae.save_checkpoint(ours, back)
    reloaded = getattr(off_mod, f"vit_{size}_patch16_224")(num_classes=400, all_frames=16).eval()
    reloaded.load_state_dict(torch.load(back, weights_only=True)["module"], strict=True)
    with torch.no_grad():
        again = reloaded(videos)
    rows.append(dict(model=f"v1_finetune_{size}", mode="save -> official strict load",
                     output_rel_err=rel(logits, again)))
    return rows


def check_finetune_from_pretrain(off_pretrain, off_finetune, size, videos, tmp):
    """A pretraining file into a classifier: official run_class_finetuning.py's rules (strip `encoder.`,
    non-strict load) vs our load_checkpoint; both get the same fresh fc_norm and head."""
    source = getattr(off_pretrain, f"pretrain_videomae_{size}_patch16_224")(decoder_depth=4)
    randomize(source, 2)
    path = Path(tmp) / f"pretrain_for_ft_{size}.pth"
    torch.save({"model": source.state_dict()}, path)
    official = getattr(off_finetune, f"vit_{size}_patch16_224")(num_classes=400, all_frames=16).eval()
    randomize(official, 3)  # the fresh fc_norm and head
    sd = torch.load(path, weights_only=True)["model"]
    official.load_state_dict({k[len("encoder."):] if k.startswith("encoder.") else k: v for k, v in sd.items()},
                             strict=False)
    ours = videomae.create_model(f"vit_{size}_patch16_224", num_classes=400).eval()
    report = videomae.load_checkpoint(ours, path)
    head = {k: v for k, v in official.state_dict().items() if k.startswith(("fc_norm.", "head."))}
    ours.load_state_dict(head, strict=False)
    assert sorted(report.missing) == sorted(head), report
    with torch.no_grad():
        err = rel(ours(videos), official(videos))
    return [dict(model=f"v1_finetune_{size}", mode="pretraining file -> classifier", output_rel_err=err)]


def backends() -> list[str]:
    """The eager reference first, then each fused backend that can run on this machine."""
    report = ops.backend_report()["cube_embed"]
    return ["torch"] + [b for b in ("triton", "cuda") if report[b]["available"]]


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
        return out.stdout.strip() if out.returncode == 0 else "no commits yet"
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True, help="folder with MCG-NJU/VideoMAE's modeling_*.py")
    ap.add_argument("--v2", help="folder with OpenGVLab/VideoMAEv2 (its models/ package)")
    ap.add_argument("--sizes", nargs="+", default=["small", "base"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "official_parity.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    videos = torch.randn(args.batch, 3, 16, 224, 224, generator=g)  # ImageNet-normalized clips
    mask = tube_mask(args.batch, (8, 14, 14), 0.9, generator=g)
    rows, start = [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        pretrain, finetune = load_official(args.official, v2=False)
        for size in args.sizes:
            rows += check_pretrain(pretrain, size, videos, mask, tmp)
            rows += check_finetune(finetune, size, videos, tmp)
            rows += check_finetune_from_pretrain(pretrain, finetune, size, videos, tmp)
            print(*(json.dumps(r) for r in rows[-(len(backends()) + 4):]), sep="\n", flush=True)
        if args.v2:
            for name in [n for n in list(sys.modules) if n.startswith(("modeling_", "models"))]:
                del sys.modules[name]
            pretrain_v2, _ = load_official(args.v2, v2=True)
            # True = not decoded; decoded cells may be encoder-visible, the loss counts the masked ones only.
            decode_mask = running_cell_mask(args.batch, (8, 14, 14), 0.5, generator=g)
            rows += check_pretrain(pretrain_v2, "small", videos, mask, tmp, decode_mask=decode_mask, tag="v2")
            print(*(json.dumps(r) for r in rows[-(len(backends()) + 1):]), sep="\n", flush=True)
    worst = max(max(r["output_rel_err"], r.get("loss_rel_err", 0.0)) for r in rows)
    result = dict(
        torch=torch.__version__, python=platform.python_version(), git_sha=git_sha(), device="cpu", dtype="float32",
        clip=[args.batch, 3, 16, 224, 224], mask="tube 0.9", error="max|ours - official| / max|official|",
        bar=1e-5, passed=worst <= 1e-5, worst_rel_err=worst, seconds=round(time.time() - start, 1), rows=rows,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"worst relative error {worst:.3g} ({'PASS' if result['passed'] else 'FAIL'} at 1e-5) -> {args.out}")


if __name__ == "__main__":
    main()
