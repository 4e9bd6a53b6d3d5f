"""One run of a partition at a time, on every database, with a lock that dies with its holder.

PostgreSQL: a session-level advisory lock on a connection held for the whole attempt. SQLite: an
exclusive `flock` on a file beside the database. Both are released by the operating system or the
server when the holding process dies (kill -9 included), so whoever takes the lock knows that any
RUNNING attempt of the partition left in the ledger is dead: it can close it as abandoned.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from tasks.errors import PartitionLockedError

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 600
POLL_S = 0.1
UNKNOWN_HOLDER = "another run (not yet in the ledger)"


def _acquire(try_lock: Callable[[], bool], holder: Callable[[], str | None], wait: bool, timeout_s: float,
             dataset: str, partition: str) -> str | None:
    """Take the lock; when it is held, wait (polling) and return who held it, as the ledger named it.

    The holder records itself in the ledger a moment after taking the lock, and may finish before we
    look: we keep asking while we wait."""
    if try_lock():
        return None
    seen = holder()
    if not wait:
        raise PartitionLockedError(f"partition {dataset}/{partition} is held by {seen or UNKNOWN_HOLDER}")
    deadline, warned = time.monotonic() + timeout_s, False
    while True:
        seen = seen or holder()
        if seen and not warned:
            log.warning("partition %s/%s is held by %s; waiting", dataset, partition, seen)
            warned = True
        if try_lock():
            return seen or "a run that finished as we started waiting"
        if time.monotonic() > deadline:
            raise PartitionLockedError(f"partition {dataset}/{partition} is held by {seen or UNKNOWN_HOLDER}; "
                                       f"gave up after {timeout_s:.0f}s")
        time.sleep(POLL_S)


def lock_key(dataset: str, partition: str) -> int:
    digest = hashlib.blake2b(f"{dataset}|{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock_file(engine: Engine, dataset: str, partition: str) -> Path | None:
    database = make_url(engine.url).database
    if not database or database == ":memory:":
        return None
    folder = Path(f"{database}.locks")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{lock_key(dataset, partition) & 0xFFFFFFFFFFFFFFFF:016x}.lock"


@contextmanager
def _sqlite_lock(engine: Engine, dataset: str, partition: str, wait: bool,
                 holder: Callable[[], str | None], timeout_s: float) -> Iterator[str | None]:
    path = _lock_file(engine, dataset, partition)
    if path is None:
        yield None
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)

    def try_lock() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    try:
        waited = _acquire(try_lock, holder, wait, timeout_s, dataset, partition)
        try:
            yield waited
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _postgres_lock(engine: Engine, dataset: str, partition: str, wait: bool,
                   holder: Callable[[], str | None], timeout_s: float) -> Iterator[str | None]:
    key = lock_key(dataset, partition)
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def try_lock() -> bool:
        return bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one())

    try:
        waited = _acquire(try_lock, holder, wait, timeout_s, dataset, partition)
        try:
            yield waited
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            except DBAPIError:
                conn.invalidate()  # the session is gone, and its lock with it
    finally:
        conn.close()


@contextmanager
def partition_lock(engine: Engine, dataset: str, partition: str, holder: Callable[[], str | None], wait: bool = True,
                   timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[str | None]:
    """Hold (dataset, partition) for the block; yields the holder we waited for, or None.

    `holder()` describes who holds it (from the ledger, None while it is not there yet) when we wait. With `wait=False` a held
    partition raises PartitionLockedError at once."""
    lock = _postgres_lock if engine.dialect.name == "postgresql" else _sqlite_lock
    with lock(engine, dataset, partition, wait, holder, timeout_s) as waited:
        yield waited
