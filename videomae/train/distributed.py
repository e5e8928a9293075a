"""Launcher detection (torchrun, torch.distributed.launch, Slurm's srun), process groups, DDP / FSDP2 wrapping,
and "rank 0 only" helpers."""

from __future__ import annotations

import os
import re
import subprocess
import zlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def adopt_launcher_env(environ=os.environ) -> bool:
    """Slurm's `srun` (one task per GPU, as the official V2 scripts launch) -> the torchrun variables the rest reads.

    torchrun and torch.distributed.launch set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT
    themselves, and win when present (torchrun inside an srun step is common). Otherwise, as the official
    `init_distributed_mode`: RANK = SLURM_PROCID, WORLD_SIZE = SLURM_NTASKS, LOCAL_RANK = SLURM_LOCALID; MASTER_ADDR,
    unless set, is the step's first node (`scontrol show hostnames`, else the node list's first name); MASTER_PORT,
    unless set (the V2 scripts export it), is derived from the job id so that every task picks the same one.
    A single task is a single process. -> True when Slurm's variables were adopted."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return False
    if "SLURM_PROCID" not in environ or int(environ.get("SLURM_NTASKS", "1")) <= 1:
        return False
    environ["RANK"] = environ["SLURM_PROCID"]
    environ["WORLD_SIZE"] = environ["SLURM_NTASKS"]
    environ["LOCAL_RANK"] = environ.get("SLURM_LOCALID", "0")
    if "MASTER_ADDR" not in environ:
        nodes = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST") or \
            environ.get("SLURM_NODELIST") or "127.0.0.1"
        environ["MASTER_ADDR"] = first_host(nodes)
    if "MASTER_PORT" not in environ:
        job = environ.get("SLURM_JOB_ID", "0")
        environ["MASTER_PORT"] = str(20000 + zlib.crc32(job.encode()) % 20000)
    return True


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list ('gpu[003-005,9],cpu1' -> 'gpu003'): scontrol when there is one."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    m = re.match(r"([^,\[]+)(?:\[([^\],-]+))?", nodelist)
    return m.group(1) + (m.group(2) or "") if m else nodelist


def from_env() -> DistInfo:
    """torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (`adopt_launcher_env` maps Slurm's); without them this is a
    single process."""
    adopt_launcher_env()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def pick_device(requested: str, info: DistInfo) -> torch.device:
    """`auto` = this rank's GPU when there is one, else CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {requested}: torch sees no CUDA device (use --device cpu or auto)")
        if device.index is None:
            device = torch.device("cuda", info.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def init(info: DistInfo, device: torch.device) -> None:
    """NCCL between GPUs, gloo between CPU processes."""
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size, **kwargs)


def shutdown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def wrap(model: nn.Module, info: DistInfo, device: torch.device, fsdp: bool = False) -> nn.Module:
    """DDP by default; FSDP2 (`fully_shard` per transformer block, then the root) for models too large
    to replicate. A single process gets the model back unchanged."""
    if not info.enabled:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in _blocks(model):
            fully_shard(block)
        fully_shard(model)
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _blocks(model: nn.Module) -> list[nn.Module]:
    found = []
    for path in ("blocks", "encoder.blocks", "decoder.blocks"):
        try:
            found += list(model.get_submodule(path))
        except AttributeError:  # a classifier has no encoder/decoder, a pretraining model no top-level blocks
            continue
    return found


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def mean_across_ranks(value: float, device: torch.device) -> float:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    return float(all_reduce_sum(t).item()) / dist.get_world_size()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1
