"""Whose temp files are these? Processes, by number: alive or gone (a kill -9 leaves its files behind)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def process_alive(pid: int) -> bool:
    """Does the process run? A zombie (exited, not yet reaped) does not; someone else's process does."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return b"\nState:\tZ" not in Path(f"/proc/{pid}/status").read_bytes()
    except OSError:
        return True  # no /proc here: the signal said it exists


def sweep_dead_folders(prefix: str) -> list[Path]:
    """Remove `{temp}/{prefix}{pid}-*` folders whose process is gone; our own and live ones stay."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        pid = folder.name.removeprefix(prefix).split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def private_folder(prefix: str) -> Path:
    """A new temp folder named for this process, after sweeping those of dead processes."""
    sweep_dead_folders(prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))
