"""Atomic writes of local report files: readers see the old file or the new one, and the temp file of a
writer that was killed is removed by the next writer in that folder."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from tasks.processes import process_alive


def sweep_dead_temps(folder: Path) -> list[Path]:
    """Remove `.{name}.{pid}.{thread}.tmp` files whose writing process is gone (kill -9)."""
    removed = []
    for temp in folder.glob(".*.tmp"):
        parts = temp.name.split(".")
        if len(parts) >= 4 and parts[-3].isdigit() and not process_alive(int(parts[-3])):
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_dead_temps(path.parent)
    partial = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    partial.write_text(text)
    os.replace(partial, path)
