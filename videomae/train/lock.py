"""The lock on a run folder: one run at a time writes into it.

`OUTPUT_DIR/.videomae.lock` holds the holder's pid, host and start time, and the holder keeps an exclusive
`flock` on it for as long as it runs. The kernel drops that flock when the process ends however it ends (SIGKILL
included), so a lock whose flock can be taken is stale: its process is gone, and the next run takes it over.
A second run into a folder in use refuses with one line naming the holder, before it changes anything.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS: the lock file is written, nothing is enforced
    fcntl = None

NAME = ".videomae.lock"


class FolderInUse(ValueError):
    """Another live process holds the run folder's lock; the message is one line naming it."""


def _describe(folder: Path, holder: dict | None) -> str:
    if not holder:
        return f"--output_dir {folder} is in use by another run (its lock {folder / NAME} is held)"
    return (f"--output_dir {folder} is in use by pid {holder.get('pid')} on {holder.get('host')} (since "
            f"{holder.get('started')}): wait for that run to end, or choose another --output_dir")


def _read(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _try_flock(fd: int, shared: bool = False, tries: int = 1) -> bool:
    """Shared: a probe (probes never block each other, as torchrun's ranks checking the folder at once); exclusive:
    the holder, retried briefly so that a probe passing by does not read as a run."""
    if fcntl is None:
        return True
    for i in range(tries):
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if i + 1 < tries:
                time.sleep(0.05)
    return False


def holder(folder: str | os.PathLike) -> dict | None:
    """The live holder of `folder`'s lock ({pid, host, started}), or None when it is free or stale. Takes
    nothing and writes nothing (the check before a run)."""
    path = Path(folder) / NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if _try_flock(fd, shared=True):
            return None  # stale: the process that wrote it is gone
        return _read(path) or {}
    finally:
        os.close(fd)  # closing drops the probe's flock, if it took one


def check(folder: str | os.PathLike) -> None:
    """Raise FolderInUse when another live run holds `folder`."""
    found = holder(folder)
    if found is not None:
        raise FolderInUse(_describe(Path(folder), found))


class RunLock:
    """`RunLock.acquire(folder)` -> the held lock (`previous`: the stale holder taken over, if any); `release()`."""

    def __init__(self, path: Path, fd: int, previous: dict | None):
        self.path, self.fd, self.previous = path, fd, previous

    @classmethod
    def acquire(cls, folder: str | os.PathLike) -> RunLock:
        path = Path(folder) / NAME
        for _ in range(3):  # a holder may release between our open and its unlink: open the new file once more
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_flock(fd, tries=5):
                os.close(fd)
                raise FolderInUse(_describe(Path(folder), _read(path)))
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # we locked a file its holder had just removed
                os.close(fd)
                continue
            previous = _read(path)
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            os.fsync(fd)
            return cls(path, fd, previous)
        raise FolderInUse(_describe(Path(folder), _read(path)))

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            self.path.unlink(missing_ok=True)  # before the flock goes: nobody locks a file about to vanish
        except OSError:
            pass  # a folder turned read-only: the file stays, unlocked, and the next run takes it over
        finally:
            os.close(self.fd)
            self.fd = -1
