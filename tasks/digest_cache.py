"""What verifying a local asset found (sha256, record count), remembered per file, so that the no-op run
of a large delivery does not read and hash it again.

An entry is keyed by everything that changes when the file does: its path, device, inode, size, and
mtime and ctime in nanoseconds (ctime cannot be set back by hand, so a file rewritten in place and
given its old mtime still misses). A miss reads the file. Kept in a small SQLite file under
$XDG_CACHE_HOME/datafactory (~/.cache by default; FACTORY_DIGEST_CACHE=off turns it off); a cache
that cannot be opened or written is simply no cache.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from pathlib import Path

MAX_ENTRIES = 50_000


def _location() -> Path | None:
    setting = os.environ.get("FACTORY_DIGEST_CACHE", "")
    if setting.lower() in ("off", "0", "false", "no"):
        return None
    if setting:
        return Path(setting)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "datafactory" / "asset-digests.sqlite3"


def _key(path: Path, fmt: str) -> str | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return f"{path.resolve()}\0{fmt}\0{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


def _open() -> sqlite3.Connection | None:
    location = _location()
    if location is None:
        return None
    try:
        location.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(location, timeout=5, isolation_level=None)
        conn.execute("CREATE TABLE IF NOT EXISTS digest (key TEXT PRIMARY KEY, sha256 TEXT NOT NULL, "
                     "records INTEGER NOT NULL, used REAL NOT NULL)")
        return conn
    except (OSError, sqlite3.Error):
        return None


def remembered(path: Path, fmt: str) -> tuple[str | None, tuple[str, int] | None]:
    """The file's key as it is now (taken before reading it), and the (sha256, records) verified for
    this very file before, if any."""
    key = _key(path, fmt)
    conn = _open() if key else None
    if conn is None:
        return key, None
    try:
        row = conn.execute("SELECT sha256, records FROM digest WHERE key = ?", (key,)).fetchone()
        return key, ((str(row[0]), int(row[1])) if row else None)
    except sqlite3.Error:
        return key, None
    finally:
        conn.close()


def remember(key: str | None, sha256: str, records: int) -> None:
    """Record what reading the file found, under the key it had before it was read."""
    conn = _open() if key else None
    if conn is None:
        return
    try:
        conn.execute("INSERT OR REPLACE INTO digest VALUES (?, ?, ?, ?)", (key, sha256, records, time.time()))
        if random.random() < 0.01:  # now and then, forget the least recently verified beyond the cap
            conn.execute("DELETE FROM digest WHERE key NOT IN (SELECT key FROM digest ORDER BY used DESC LIMIT ?)",
                         (MAX_ENTRIES,))
    except sqlite3.Error:
        pass
    finally:
        conn.close()
