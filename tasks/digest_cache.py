"""What verifying a local asset found (sha256, record count), remembered per file, so that the no-op run
of a large delivery does not read and hash it again.

An entry is keyed by everything that changes when the file does: its path, device, inode, size, and
mtime and ctime in nanoseconds (ctime cannot be set back by hand, so a file rewritten in place and
given its old mtime still misses). A miss reads the file. Kept in a small SQLite file under
$XDG_CACHE_HOME/datafactory (~/.cache by default; FACTORY_DIGEST_CACHE=off turns it off); a cache
that cannot be opened or written is simply no cache.
"""

from __future__ import annotations

import atexit
import os
import random
import sqlite3
import threading
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


_OPEN: dict[Path, sqlite3.Connection] = {}
_LOCK = threading.Lock()


def _open() -> sqlite3.Connection | None:
    """The process's connection to the cache (one per location: a manifest of thousands of assets must
    not open a file per asset). A cache may lose its last writes in a crash, so it does not wait for the
    disk (synchronous=OFF): a lost entry is one more read."""
    location = _location()
    if location is None:
        return None
    if location in _OPEN:
        return _OPEN[location]
    try:
        location.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(location, timeout=5, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("CREATE TABLE IF NOT EXISTS digest (key TEXT PRIMARY KEY, sha256 TEXT NOT NULL, "
                     "records INTEGER NOT NULL, used REAL NOT NULL)")
    except (OSError, sqlite3.Error):
        return None
    _OPEN[location] = conn
    return conn


def remembered(path: Path, fmt: str) -> tuple[str | None, tuple[str, int] | None]:
    """The file's key as it is now (taken before reading it), and the (sha256, records) verified for
    this very file before, if any."""
    key = _key(path, fmt)
    conn = _open() if key else None
    if conn is None:
        return key, None
    try:
        with _LOCK:
            if key in _PENDING:
                return key, (_PENDING[key][1], _PENDING[key][2])
            row = conn.execute("SELECT sha256, records FROM digest WHERE key = ?", (key,)).fetchone()
        return key, ((str(row[0]), int(row[1])) if row else None)
    except sqlite3.Error:
        return key, None


_PENDING: dict[str, tuple[str, str, int, float]] = {}  # key -> entry, not written yet
FLUSH_EVERY = 1_000


def remember(key: str | None, sha256: str, records: int) -> None:
    """Record what reading the file found, under the key it had before it was read. Written in batches
    (`flush`, called when a verification ends, and at exit): one transaction per thousand assets, not one
    per asset."""
    if key is None or _location() is None:
        return
    with _LOCK:
        _PENDING[key] = (key, sha256, records, time.time())
        full = len(_PENDING) >= FLUSH_EVERY
    if full:
        flush()


def flush() -> None:
    conn = _open()
    with _LOCK:
        entries = list(_PENDING.values())
        _PENDING.clear()
        if conn is None or not entries:
            return
        try:
            conn.execute("BEGIN")
            conn.executemany("INSERT OR REPLACE INTO digest VALUES (?, ?, ?, ?)", entries)
            if random.random() < 0.05:  # now and then, forget the least recently verified beyond the cap
                conn.execute("DELETE FROM digest WHERE key NOT IN (SELECT key FROM digest ORDER BY used DESC LIMIT ?)",
                             (MAX_ENTRIES,))
            conn.execute("COMMIT")
        except sqlite3.Error:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass


atexit.register(flush)
