"""The launchers of the official scripts run `videomae pretrain` as they are: torch.distributed.launch (its
`--local-rank=N` before the subcommand, or `--local_rank N` after it), torchrun, and Slurm's srun (SLURM_PROCID /
SLURM_NTASKS / SLURM_LOCALID with MASTER_ADDR / MASTER_PORT, as the V2 scripts read them). Each runs 2 CPU
processes over gloo on a tiny model for one step."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from videomae import cli
from videomae.train.distributed import adopt_launcher_env, first_host

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "pretrain_videomae_tiny_patch16_224", "--input_size", "32", "--num_frames", "4",
        "--sampling_rate", "2", "--mask_ratio", "0.5", "--batch_size", "1", "--num_workers", "0", "--epochs", "1",
        "--max_steps", "1", "--no_tensorboard", "--no_preview", "--device", "cpu"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    pytest.importorskip("av")
    from videomae.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, num_train=4, num_val=1, num_frames=8, size=32, seed=0)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_", "TORCHELASTIC"))}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def assert_two_processes_trained(proc: subprocess.CompletedProcess, out: Path) -> None:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "x 2 processes" in proc.stdout, proc.stdout[-2000:]
    assert (out / "model.pth").is_file()


def test_torch_distributed_launch_puts_local_rank_before_the_subcommand(synth, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2", f"--master_port={free_port()}",
         "-m", "videomae", "pretrain", "--data_path", str(synth / "train.txt"), "--output_dir", str(out), *TINY],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=clean_env())
    assert_two_processes_trained(proc, out)


def test_torchrun(synth, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         "-m", "videomae", "pretrain", "--data_path", str(synth / "train.txt"), "--output_dir", str(out), *TINY],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=clean_env())
    assert_two_processes_trained(proc, out)


def test_slurm_srun_tasks(synth, tmp_path):
    """What `srun --ntasks=2 python -m videomae pretrain ...` starts: two processes that differ only in SLURM_*."""
    out = tmp_path / "run"
    port = str(free_port())
    procs = [subprocess.Popen(
        [sys.executable, "-m", "videomae", "pretrain", "--data_path", str(synth / "train.txt"), "--output_dir",
         str(out), *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=clean_env(SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_NTASKS="2", SLURM_JOB_ID="4242",
                      SLURM_STEP_NODELIST="localhost", MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
        for rank in (0, 1)]
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    assert results[1].returncode == 0, results[1].stderr[-3000:]
    assert_two_processes_trained(results[0], out)


def test_local_rank_flag_is_accepted_before_or_after_the_subcommand(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert cli.launcher_argv(["--local-rank=1", "pretrain", "--epochs", "2"]) == ["pretrain", "--epochs", "2"]
    assert os.environ["LOCAL_RANK"] == "1"
    monkeypatch.delenv("LOCAL_RANK")
    assert cli.launcher_argv(["pretrain", "--local_rank", "3", "--epochs", "2"]) == ["pretrain", "--epochs", "2"]
    assert os.environ["LOCAL_RANK"] == "3"
    assert cli.launcher_argv(["bench", "x", "--", "--local_rank", "2"]) == ["bench", "x", "--", "--local_rank", "2"]
    monkeypatch.setenv("LOCAL_RANK", "0")  # the launcher's own variable wins over its flag
    cli.launcher_argv(["--local_rank=5", "pretrain"])
    assert os.environ["LOCAL_RANK"] == "0"


def test_slurm_variables_map_as_the_official_v2_scripts_read_them():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "77",
           "SLURM_STEP_NODELIST": "gpu[003-004]"}
    assert adopt_launcher_env(env)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["MASTER_ADDR"]) == ("5", "8", "1", "gpu003")
    assert 20000 <= int(env["MASTER_PORT"]) < 40000  # the same on every task: a function of the job id
    torchrun = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "RANK": "3", "WORLD_SIZE": "4"}
    assert not adopt_launcher_env(torchrun) and torchrun["RANK"] == "3"  # torchrun inside an srun step wins
    single = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
    assert not adopt_launcher_env(single) and "RANK" not in single
    assert first_host("node7") == "node7" and first_host("a[10-12,15],b1") == "a10"
