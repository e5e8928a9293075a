"""Run folders and TrainState files through the real `videomae` command (subprocesses): nothing on disk
changes before every check passed, a used folder is refused, a folder in use by another run is refused naming it,
checkpoints changed after they were written are one line and skipped by `--resume auto`, SIGINT/SIGTERM to the
whole process group save at a step boundary (the loader's workers included) and the resumed run equals an
uninterrupted one, a requeued run that saved nothing starts over (stale lock and temporary files removed), a
read-only folder during a save is one line with nothing lost, and a resume refuses another model geometry and
states a changed schedule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
# 8 videos, batch 1: 8 optimizer steps per epoch, so a signal after step 3 lands mid-epoch.
TINY = ["--model", "pretrain_videomae_tiny_patch16_224", "--input_size", "32", "--num_frames", "4",
        "--sampling_rate", "2", "--mask_ratio", "0.5", "--batch_size", "1", "--num_workers", "0", "--lr", "1e-2",
        "--warmup_epochs", "1", "--no_tensorboard", "--no_preview", "--drop_path", "0.1", "--log_interval", "1",
        "--save_ckpt_freq", "1"]


def env() -> dict:
    # One intra-op thread: bitwise comparisons between processes need the same reduction order.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def pretrain_cmd(synth: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "videomae", "pretrain", "--data_path", str(synth / "train.txt"),
            "--output_dir", str(out), *TINY, *extra]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600, cwd=ROOT)


def one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def steps(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]


def epochs(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "log.txt").read_text().splitlines()]


@pytest.fixture(scope="module")
def whole(synth, tmp_path_factory) -> Path:
    """An uninterrupted 2-epoch run: the reference for resumes, and a used run folder."""
    out = tmp_path_factory.mktemp("runs") / "whole"
    proc = run(pretrain_cmd(synth, out, "--epochs", "2"))
    assert proc.returncode == 0, proc.stderr
    return out


# ---------------------------------------------------------------- nothing touched before everything is checked


@pytest.mark.parametrize("bad, needle", [
    (["--input_size", "100"], "--input_size 100"),
    (["--num_frames", "7"], "--num_frames 7"),
    (["--batch_size", "9"], "8 videos make no full step"),
    (["--init", "/no/such/weights.pth"], "/no/such/weights.pth"),
    ([], "holds an earlier run"),  # a good command line, but the folder is used
])
def test_a_rejected_rerun_leaves_the_run_folder_untouched(synth, whole, bad, needle):
    before = snapshot(whole)
    one_line(run(pretrain_cmd(synth, whole, "--epochs", "2", *bad)), needle)
    assert snapshot(whole) == before


def test_a_bad_list_line_stops_before_the_folder_exists(synth, tmp_path):
    bad = tmp_path / "train.txt"
    bad.write_text(f"{synth / 'videos' / 'train_00000.mp4'} 0\nclip.mp4 zero\n")
    out = tmp_path / "new"
    proc = run([sys.executable, "-m", "videomae", "pretrain", "--data_path", str(bad), "--output_dir", str(out),
                *TINY])
    one_line(proc, f"{bad}:2")
    assert not out.exists()


def test_overwrite_replaces_an_earlier_run_and_its_stale_temporary_files(synth, whole, tmp_path):
    out = tmp_path / "again"
    import shutil

    shutil.copytree(whole, out)
    (out / ".checkpoint-5.pth.tmp-999999").write_bytes(b"half of a save that was killed")
    proc = run(pretrain_cmd(synth, out, "--epochs", "1", "--overwrite"))
    assert proc.returncode == 0, proc.stderr
    assert "--overwrite: deleted" in proc.stdout
    assert [r["step"] for r in steps(out)] == list(range(1, 9))
    assert sorted(p.name for p in out.glob("checkpoint-*.pth")) == ["checkpoint-0.pth"]
    assert not list(out.glob(".*tmp*")) and not list(out.glob("previous-*"))


def test_a_folder_in_use_is_refused_naming_the_holder_and_left_untouched(synth, whole, tmp_path):
    import shutil
    import socket

    from videomae.train.lock import RunLock

    out = tmp_path / "busy"
    shutil.copytree(whole, out)
    held = RunLock.acquire(out)  # this process is the run that holds the folder
    try:
        before = snapshot(out)
        for extra in (["--resume", "auto"], ["--overwrite"], []):
            one_line(run(pretrain_cmd(synth, out, "--epochs", "2", *extra)),
                     f"--output_dir {out} is in use by pid {os.getpid()} on {socket.gethostname()}")
        assert snapshot(out) == before
    finally:
        held.release()


def test_a_requeued_run_that_saved_nothing_starts_over(synth, whole, tmp_path):
    """What a SIGKILL before the first checkpoint leaves (args.json, a few logged steps, the temporary file of the save
    it was in, its lock) is a new run for `--resume auto`, not a refusal."""
    import json as json_

    out = tmp_path / "requeued"
    out.mkdir()
    (out / "args.json").write_text((whole / "args.json").read_text())
    (out / "steps.jsonl").write_text("".join(json_.dumps(r) + "\n" for r in steps(whole)[:3]))
    (out / ".checkpoint-0-step3.pth.tmp-999999").write_bytes(b"x" * 1000)
    (out / ".videomae.lock").write_text(json_.dumps({"pid": 999999, "host": "gone", "started": "before"}))
    proc = run(pretrain_cmd(synth, out, "--epochs", "1", "--resume", "auto"))
    assert proc.returncode == 0, proc.stderr
    assert f"--resume auto: no checkpoint in {out} (the earlier run saved none): starting a new run" in proc.stdout
    assert "took over the stale lock of pid 999999 on gone" in proc.stdout
    assert [(r["step"], r["loss"]) for r in steps(out)] == [(r["step"], r["loss"]) for r in steps(whole)[:8]]
    assert not list(out.glob(".*tmp*")) and not (out / ".videomae.lock").exists()


def _without_root_privileges() -> list[str]:
    """A prefix under which file modes bind even for root (its capability to override them dropped)."""
    if os.geteuid() != 0:
        return []
    import shutil

    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made to bind")
    caps = "-dac_override,-dac_read_search,-fowner"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", "--"]


def test_a_folder_made_read_only_during_the_run_is_one_line_and_loses_nothing(synth, tmp_path):
    out = tmp_path / "readonly"
    proc = subprocess.Popen(_without_root_privileges() + pretrain_cmd(synth, out, "--epochs", "3"), env=env(),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = out / "checkpoint-0.pth"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (out / "checkpoint-0.pth.sha256").exists():
        time.sleep(0.005)
    out.chmod(0o555)  # the next checkpoint (after epoch 2) cannot be created
    try:
        _, err = proc.communicate(timeout=300)
        lines = [x for x in err.splitlines() if x.strip() and not x.startswith("epoch ")]
        assert proc.returncode == 1 and "Traceback" not in err, err
        assert lines == [f"videomae pretrain: error: cannot write {out / 'checkpoint-1.pth'}: Permission denied; "
                         "the earlier files in its folder are unchanged"], err
        assert not list(out.glob(".*tmp*"))
        from videomae.train import state

        assert state.read(first)["next_epoch"] == 1  # the earlier checkpoint reads, its hash verified
    finally:
        out.chmod(0o755)
    resumed = run(pretrain_cmd(synth, out, "--epochs", "3", "--resume", "auto"))
    assert resumed.returncode == 0 and f"continuing from {first}" in resumed.stdout, resumed.stderr


# ---------------------------------------------------------------- checkpoints you can trust


def test_a_checkpoint_with_flipped_bytes_is_one_line_and_resume_auto_skips_it(synth, whole, tmp_path):
    import shutil

    out = tmp_path / "cut"
    shutil.copytree(whole, out)
    newest = out / "checkpoint-1.pth"
    data = bytearray(newest.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(b ^ 0x5A for b in data[middle:middle + 4096])  # inside a tensor's bytes
    newest.write_bytes(bytes(data))
    proc = run(pretrain_cmd(synth, out, "--epochs", "2", "--resume", str(newest)))
    line = one_line(proc, str(newest), "does not match its recorded SHA-256")
    assert "weights_only" not in line
    # auto: the newest *valid* one, saying which it skipped and which it took
    proc = run(pretrain_cmd(synth, out, "--epochs", "2", "--resume", "auto"))
    assert proc.returncode == 0, proc.stderr
    assert f"skipping {newest}: content does not match its recorded SHA-256" in proc.stdout
    assert f"continuing from {out / 'checkpoint-0.pth'}" in proc.stdout
    a = torch.load(whole / "model.pth", weights_only=True)["model"]
    b = torch.load(out / "model.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_truncated_weights_file_is_one_line_naming_it(synth, whole, tmp_path):
    weights = tmp_path / "model.pth"
    weights.write_bytes((whole / "model.pth").read_bytes()[:2048])
    proc = run([sys.executable, "-m", "videomae", "visualize", "--checkpoint", str(weights), "--video",
                str(synth / "videos" / "val_00000.mp4"), "--output_dir", str(tmp_path / "vis")])
    line = one_line(proc, str(weights), "truncated or corrupt")
    assert "weights_only" not in line


def test_resume_refuses_another_geometry_and_states_a_changed_schedule(synth, whole, tmp_path):
    before = snapshot(whole)
    one_line(run(pretrain_cmd(synth, whole, "--epochs", "2", "--resume", "auto", "--num_frames", "8")),
             "--num_frames 4 -> 8")
    one_line(run(pretrain_cmd(synth, whole, "--epochs", "2", "--resume", "auto", "--model",
                              "pretrain_videomae_small_patch16_224")), "--model pretrain_videomae_tiny")
    assert snapshot(whole) == before
    import shutil

    out = tmp_path / "longer"
    shutil.copytree(whole, out)
    proc = run(pretrain_cmd(synth, out, "--epochs", "3", "--resume", "auto"))
    assert proc.returncode == 0, proc.stderr
    assert "schedule changed since the checkpoint: --epochs 2 -> 3" in proc.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_process_group_saves_then_resume_equals_the_uninterrupted_run(synth, whole, tmp_path, sig):
    """As Ctrl-C and Slurm do: the signal reaches the run and its loader workers (2 here) at once. The workers leave
    it to the run, which saves at the next step boundary and exits 130/143 with one line, no traceback."""
    out = tmp_path / "cut"
    proc = subprocess.Popen(pretrain_cmd(synth, out, "--epochs", "2", "--num_workers", "2"), env=env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    rows = out / "steps.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if rows.exists() and len(rows.read_text().splitlines()) >= 3:
            break
        time.sleep(0.005)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig.value, err  # interrupted, not finished
    assert "Traceback" not in err and "terminate called" not in err, err
    saved = sorted(out.glob("checkpoint-*.pth"))
    assert len(saved) == 1 and f"saved {saved[0]} at the step boundary" in err
    assert [x for x in err.splitlines() if not x.startswith("epoch ")] == [
        f"videomae pretrain: {signal.Signals(sig).name}: saved {saved[0]} at the step boundary; continue with "
        "--resume auto"]
    assert not (out / "model.pth").exists()

    resumed = run(pretrain_cmd(synth, out, "--epochs", "2", "--resume", "auto"))
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(whole / "model.pth", weights_only=True)["model"]
    b = torch.load(out / "model.pth", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [(r["step"], r["loss"]) for r in steps(out)] == [(r["step"], r["loss"]) for r in steps(whole)]
    # The epoch mean logged after a mid-epoch resume is over the whole epoch, as uninterrupted.
    assert [e["train_loss"] for e in epochs(out)] == [e["train_loss"] for e in epochs(whole)]
    assert epochs(out)[0]["train_loss"] == pytest.approx(sum(r["loss"] for r in steps(whole)[:8]) / 8, rel=1e-12)


def test_each_bad_video_is_one_clean_line(synth, tmp_path):
    """A loader worker meets a truncated file, a text file and a missing one: each is one `skipping` line naming
    it, with no FFmpeg or decord log line and no warning attributed to torch's fetch.py beside it."""
    good = (synth / "videos" / "train_00001.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(good[: len(good) // 3])
    (tmp_path / "text.mp4").write_text("not a video\n")
    bad = [tmp_path / "cut.mp4", tmp_path / "text.mp4", tmp_path / "gone.mp4"]
    rows = (synth / "train.txt").read_text().splitlines()
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join([f"{synth / r.split()[0]} 0" for r in rows] + [f"{p} 0" for p in bad]) + "\n")
    cmd = pretrain_cmd(synth, tmp_path / "run", "--epochs", "1", "--num_workers", "1")
    cmd[cmd.index("--data_path") + 1] = str(lst)
    proc = run(cmd)
    assert proc.returncode == 0, proc.stderr
    skip_lines = [x for x in proc.stderr.splitlines() if x.startswith("videomae.data: skipping ")]
    for path in bad:
        assert sum(f"skipping {path}: " in x for x in skip_lines) == 1, proc.stderr
    # stderr also carries the progress lines (`epoch 1/1  step ...`); anything else is noise
    noise = [x for x in proc.stderr.splitlines() if x.strip() and x not in skip_lines and not x.startswith("epoch ")]
    assert not noise, noise
