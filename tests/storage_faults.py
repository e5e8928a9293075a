"""Storage faults for the write paths' tests, injected where videomae opens files for writing
(`videomae.integrity.open`): a disk that fills up, a read-only folder, a refused permission. The sandbox runs as
root, where chmod cannot make a folder read-only, so the OS's own error is raised at the same call instead."""

from __future__ import annotations

import builtins
import errno


class FullFile:
    """A file on a disk that fills after `room` bytes: the write past it raises ENOSPC, as write(2) does."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device", self.f.name)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def faulty_open(kind: str, match: str = "", room: int = 1000):
    """An `open` for monkeypatching into videomae.integrity: files opened for writing whose path contains `match`
    fail as `kind` says ('full': after `room` bytes; 'read-only' / 'denied': at open). Returns (open, paths hit)."""
    hit = []

    def opener(path, mode="r", *args, **kwargs):
        if "w" not in mode or match not in str(path):
            return builtins.open(path, mode, *args, **kwargs)
        hit.append(str(path))
        if kind == "read-only":
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        if kind == "denied":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return FullFile(builtins.open(path, mode, *args, **kwargs), room)

    return opener, hit
