"""TrainState files: what a run needs to continue bit for bit (weights, optimizer, scaler, position, RNG
states, the epoch's partial loss sums, the run's arguments). Atomic writes, keep-last-K, `--resume auto`
(the newest *valid* file), and the checks a resume makes before anything runs.

File names: `checkpoint-{epoch}.pth` after epoch `epoch` (the official name), `checkpoint-{epoch}-
step{k}.pth` after optimizer step k inside epoch `epoch` (`--save_ckpt_steps`). Each holds the official
`{'model': state_dict}` plus optimizer, scaler, position (`next_epoch`, `next_step`, `global_step`)
and every rank's RNG states, so a resumed run continues bit for bit. Every file written here carries a SHA-256
sidecar (`videomae.integrity`) that `read` verifies: a file changed after it was written is refused, naming it, and
`--resume auto` passes over it to the newest valid one. A write that fails (disk full, read-only folder) is one
line naming the path (`WriteFailed`), and leaves the earlier file of that name in place.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from videomae import integrity
from videomae.checkpoint import load_error

FORMAT = "videomae-train-1"
_NAME = re.compile(r"^checkpoint-(\d+)(?:-step(\d+))?\.pth$")


WriteFailed = integrity.WriteFailed  # one class for every failed write (videomae/integrity.py)
_TMP = re.compile(r"^\..+\.tmp-(\d+)$")  # `.{name}.tmp-{pid}`: a save in progress, or one a kill cut short


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save, atomically, with a content hash that `read` verifies (`integrity.write_atomic`). Disk full or a
    read-only folder: WriteFailed naming `path`."""
    integrity.write_atomic(path, lambda f: torch.save(obj, f))


def atomic_save_safetensors(state_dict: dict, path: str | os.PathLike) -> None:
    from safetensors.torch import save

    tensors = {k: v.contiguous() for k, v in state_dict.items()}
    integrity.write_atomic(path, lambda f: f.write(save(tensors, metadata={"format": "pt"})))


def remove_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Temporary files of saves that were killed (`.NAME.tmp-PID` and half-written sidecars) of processes other than
    this one. Called by the run that holds the folder's lock: no other process is saving there."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    gone = []
    for p in directory.iterdir():
        m = _TMP.match(p.name)
        stale = (m is not None and int(m.group(1)) != os.getpid()) or p.name.endswith(integrity.SUFFIX + ".tmp")
        if stale and p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def checkpoint_name(epoch: int, step: int | None = None) -> str:
    return f"checkpoint-{epoch}.pth" if step is None else f"checkpoint-{epoch}-step{step}.pth"


def _position(name: str) -> tuple[int, int] | None:
    """Name -> (next epoch, next step) it resumes at, for ordering; None for other files."""
    m = _NAME.match(name)
    if m is None:
        return None
    epoch = int(m.group(1))
    return (epoch + 1, 0) if m.group(2) is None else (epoch, int(m.group(2)))


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Resumable checkpoints in `directory`, oldest first (temporary files never match)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(pos, p) for p in directory.iterdir() if (pos := _position(p.name)) is not None]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def prune(directory: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints (0 keeps everything)."""
    if keep_last > 0:
        remove_temporaries(directory)  # a save killed earlier in this folder
        for old in list_checkpoints(directory)[:-keep_last]:
            old.unlink(missing_ok=True)
            integrity.sidecar(old).unlink(missing_ok=True)


# ---------------------------------------------------------------- RNG states


def rng_state() -> dict:
    """Tensors, ints and floats only, so checkpoints load with `weights_only=True`."""
    # The legacy global generator is saved because third-party code (and old augmentations) draw from it.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": [version, torch.tensor(py_state, dtype=torch.int64), py_gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))  # noqa: NPY002
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state.tolist()), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states() -> list[dict]:
    """Every rank's RNG states, in rank order (drop path draws differ per rank)."""
    state = rng_state()
    if not dist.is_initialized():
        return [state]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, state)
    return out


# ---------------------------------------------------------------- model / optimizer state


def model_state(model: torch.nn.Module, fsdp: bool) -> dict:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return model.state_dict()


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool) -> dict:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return optimizer.state_dict()


def load_model_state(model: torch.nn.Module, sd: dict, fsdp: bool) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True))
    else:
        model.load_state_dict(sd)


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, sd: dict, fsdp: bool) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, sd, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(sd)


# ---------------------------------------------------------------- reading and choosing a file to resume

_REQUIRED = ("model", "optimizer", "next_epoch", "next_step", "global_step", "rng", "args")
_cache: dict[tuple, dict] = {}


class UnreadableCheckpoint(ValueError):
    """A file that cannot be resumed from; the message is one line naming the file and the reason."""


def read(path: str | os.PathLike) -> dict:
    """A TrainState file written by `videomae`, checked against its SHA-256 sidecar when it has one; never runs code
    from the file. The last file read is kept, so the check before a run and the restore inside it read the disk
    once."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as err:
        raise UnreadableCheckpoint(f"{path}: cannot be read ({err.strerror})") from None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _cache:
        return _cache[key]
    try:
        integrity.verify(path)
    except integrity.CorruptFile as err:
        raise UnreadableCheckpoint(str(err)) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every load failure becomes one line naming the file
        raise UnreadableCheckpoint(f"{path}: {load_error(path, err)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UnreadableCheckpoint(f"{path}: not a resumable videomae checkpoint (to start from its weights use "
                                   "--init for pretraining or --finetune for fine-tuning)")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise UnreadableCheckpoint(f"{path}: incomplete checkpoint (no {', '.join(missing)})")
    _cache.clear()
    _cache[key] = state
    return state


def newest_valid(directory: str | os.PathLike) -> tuple[Path | None, list[tuple[Path, str]]]:
    """-> (the newest checkpoint in `directory` that reads, [(newer file skipped, why)])."""
    skipped = []
    for path in reversed(list_checkpoints(directory)):
        try:
            read(path)
            return path, skipped
        except UnreadableCheckpoint as err:
            skipped.append((path, str(err).removeprefix(f"{path}: ")))
    return None, skipped


# ---------------------------------------------------------------- run folders

RUN_FILES = ("args.json", "steps.jsonl", "log.txt", "model.pth", "model.safetensors")


def run_files(directory: str | os.PathLike) -> list[Path]:
    """Files in `directory` that belong to a run (a used run folder has at least one)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [directory / n for n in RUN_FILES if (directory / n).is_file()]
    found += list_checkpoints(directory)
    found += sorted(directory.glob("events.out.tfevents.*"))  # official scripts log TensorBoard into the run folder
    return found


def clear_run(directory: str | os.PathLike) -> list[Path]:
    """`--overwrite`: delete an earlier run's files (checkpoints and their hashes, logs, exports, pictures, temporary
    files of killed saves); -> what went."""
    directory = Path(directory)
    gone = run_files(directory) + remove_temporaries(directory)
    for path in gone:
        path.unlink(missing_ok=True)
    for path in list(gone):
        side = integrity.sidecar(path)
        if side.is_file():
            side.unlink()
    for name in ("preview", "tensorboard"):
        if (directory / name).is_dir():
            shutil.rmtree(directory / name)
            gone.append(directory / name)
    for name in ("loss.png", "lr.png", "accuracy.png", "reconstruction.png", "reconstruction.gif",
                 "confusion_matrix.png", "test.json", "eval.json"):
        if (directory / name).is_file():
            (directory / name).unlink()
            gone.append(directory / name)
    return gone


# Arguments a resumed run must share with its checkpoint (the weights' shapes or the data they see), and the
# ones that only change the schedule (stated, then used).
MUST_MATCH = ("model", "input_size", "num_frames", "tubelet_size", "decoder_depth", "nb_classes")
SCHEDULE = ("epochs", "lr", "min_lr", "warmup_epochs", "warmup_steps", "batch_size", "accum_iter", "weight_decay",
            "weight_decay_end", "opt_betas", "mask_ratio", "mask_type", "num_sample", "layer_decay")


def _same(a, b) -> bool:
    norm = lambda v: json.loads(json.dumps(v, default=str))  # tuples -> lists, as stored
    return norm(a) == norm(b)


def compare_args(stored: dict, args) -> tuple[list[str], list[str]]:
    """-> (mismatches that forbid resuming, schedule changes), each 'name stored -> now'."""
    bad = [f"--{k} {stored[k]} -> {getattr(args, k)}" for k in MUST_MATCH
           if k in stored and hasattr(args, k) and not _same(stored[k], getattr(args, k))]
    changed = [f"--{k} {stored[k]} -> {getattr(args, k)}" for k in SCHEDULE
               if k in stored and hasattr(args, k) and not _same(stored[k], getattr(args, k))]
    return bad, changed
