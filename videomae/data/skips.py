"""Bad-file bookkeeping shared by loader workers and the main process.

Workers are separate processes, so each appends JSON lines to its own file in a directory the
main process owns; the main process reads them at epoch boundaries. Files, unlike queues, cannot
deadlock a worker that exits while the main process is busy.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import warnings
import weakref
from dataclasses import dataclass, field


class SkippedFileWarning(UserWarning):
    """A sample was skipped (the message names the file and the reason)."""


def _show_skips_as_one_line(previous):
    """Print a SkippedFileWarning as its message alone: the default format names the line of torch's DataLoader
    that happened to call the dataset and repeats that line, which says nothing about the file. Every other
    warning, and the filters (`-W ignore::...SkippedFileWarning`, `catch_warnings`), behave as before."""

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, SkippedFileWarning):
            print(message, file=file or sys.stderr, flush=True)
        else:
            previous(message, category, filename, lineno, file, line)

    show.previous = previous
    return show


# Installed on import, so loader workers (forked or spawned: both import this module) print the same line.
if not hasattr(warnings.showwarning, "previous"):
    warnings.showwarning = _show_skips_as_one_line(warnings.showwarning)


@dataclass
class SkipSummary:
    """Files skipped during one epoch: `count` skip events (a file met twice counts twice),
    `files` {path: reason} (each path once)."""

    count: int = 0
    files: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.count:
            return "no files skipped"
        lines = [f"{self.count} skip(s) of {len(self.files)} file(s):"]
        lines += [f"  {path}: {reason}" for path, reason in sorted(self.files.items())]
        return "\n".join(lines)


class SkipLog:
    """`record` from any process; `mark` / `since` / `all` from the owner."""

    def __init__(self, directory: str | None = None):
        self._owner = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="videomae-skips-")
        if self._owner:
            weakref.finalize(self, shutil.rmtree, self.directory, True)

    def __getstate__(self):
        return {"directory": self.directory}  # a copy in a worker never deletes the directory

    def __setstate__(self, state):
        self.directory, self._owner = state["directory"], False

    def record(self, path: str, reason: str, warn: bool = True) -> None:
        if warn:
            warnings.warn(f"videomae.data: skipping {path}: {reason}", SkippedFileWarning, stacklevel=3)
        line = json.dumps({"path": path, "reason": reason}) + "\n"
        with open(os.path.join(self.directory, f"skips-{os.getpid()}.jsonl"), "a") as f:
            f.write(line)

    def _files(self) -> dict[str, list[dict]]:
        out = {}
        if not os.path.isdir(self.directory):  # removed with its owner at exit: nothing is left to report
            return out
        for name in sorted(os.listdir(self.directory)):
            with open(os.path.join(self.directory, name)) as f:
                # A worker may be mid-write: only complete lines count.
                out[name] = [json.loads(x) for x in f.read().split("\n")[:-1]]
        return out

    def mark(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self._files().items()}

    def since(self, mark: dict[str, int] | None = None) -> SkipSummary:
        summary = SkipSummary()
        for name, rows in self._files().items():
            for row in rows[(mark or {}).get(name, 0):]:
                summary.count += 1
                summary.files[row["path"]] = row["reason"]
        return summary
