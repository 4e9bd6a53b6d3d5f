"""The forward cursor of a pulled source and its event log.

The cursor is one (value, key) per (dataset, source): the newest (cursor field, primary key) ingested,
compared as a tuple, strictly. It moves only forward and only by compare-and-set: the update names the
value it read, so of two pulls racing, one moves it and the other is refused. Every change appends a
cursor event first, in the same transaction; re-pulls of past windows (BACKFILL, REPLAY) append events
and never touch the cursor. The FORWARD events alone rebuild it (`rebuild_from_events`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, insert, select, update

from schemas.tables import cursor_event, source_cursor
from tasks.errors import FactoryError
from tasks.ledger import as_utc


class Direction(StrEnum):
    FORWARD = "FORWARD"  # the scheduled pull: moves the cursor
    BACKFILL = "BACKFILL"  # a past window pulled again for a backfill: recorded, the cursor stays
    REPLAY = "REPLAY"  # a window pulled again because the source rewrote it: recorded, the cursor stays


class CursorMovedError(FactoryError):
    """The compare-and-set lost: another pull moved the cursor since this one read it."""


class CursorBackwardsError(FactoryError):
    """A move that would not go strictly forward."""


@dataclass(frozen=True, order=True)
class CursorValue:
    value: datetime  # UTC
    key: str

    def __str__(self) -> str:
        return f"({self.value.astimezone(timezone.utc).isoformat().replace('+00:00', 'Z')}, {self.key})"


def current(conn: Connection, dataset: str, source: str) -> CursorValue | None:
    row = conn.execute(select(source_cursor.c.cursor_value, source_cursor.c.cursor_key).where(
        source_cursor.c.dataset == dataset, source_cursor.c.source == source)).first()
    return None if row is None else CursorValue(as_utc(row.cursor_value), row.cursor_key)


def last_moved(conn: Connection, dataset: str, source: str) -> datetime | None:
    """When the forward cursor last moved."""
    moved = conn.execute(select(source_cursor.c.updated_at).where(
        source_cursor.c.dataset == dataset, source_cursor.c.source == source)).scalar_one_or_none()
    return None if moved is None else as_utc(moved)


def _append(conn: Connection, dataset: str, source: str, direction: Direction, previous: CursorValue | None,
            new: CursorValue, window: tuple[datetime, datetime], run_id: str, batch_key: str | None,
            now: datetime) -> int:
    result = conn.execute(insert(cursor_event).values(
        dataset=dataset, source=source, direction=direction.value,
        previous_value=previous.value if previous else None, previous_key=previous.key if previous else None,
        new_value=new.value, new_key=new.key, window_start=window[0], window_end=window[1], run_id=run_id,
        batch_key=batch_key, recorded_at=now))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def advance(conn: Connection, dataset: str, source: str, expected: CursorValue | None, new: CursorValue,
            window: tuple[datetime, datetime], run_id: str, batch_key: str | None, now: datetime) -> int:
    """Move the cursor from `expected` (what this pull read when it started) to `new`, strictly forward:
    the event first, then the compare-and-set. Raises, rolling the caller's transaction back, when the
    cursor is no longer `expected` or `new` is not after it."""
    if expected is not None and not new > expected:
        raise CursorBackwardsError(f"{dataset}/{source}: cursor {new} is not after {expected}; it never moves back")
    event_id = _append(conn, dataset, source, Direction.FORWARD, expected, new, window, run_id, batch_key, now)
    values = dict(cursor_value=new.value, cursor_key=new.key, event_id=event_id, updated_at=now)
    if expected is None:
        if current(conn, dataset, source) is not None:
            raise CursorMovedError(f"{dataset}/{source}: another pull set the cursor since this one started")
        conn.execute(insert(source_cursor).values(dataset=dataset, source=source, **values))
        return event_id
    moved = conn.execute(update(source_cursor).where(
        source_cursor.c.dataset == dataset, source_cursor.c.source == source,
        source_cursor.c.cursor_value == expected.value, source_cursor.c.cursor_key == expected.key).values(**values))
    if moved.rowcount != 1:
        raise CursorMovedError(f"{dataset}/{source}: the cursor is no longer {expected}; another pull moved it")
    return event_id


def record_repull(conn: Connection, dataset: str, source: str, direction: Direction, newest: CursorValue,
                  window: tuple[datetime, datetime], run_id: str, batch_key: str | None, now: datetime) -> int:
    """A BACKFILL or REPLAY pull's event: what it read, beside the forward cursor it leaves alone."""
    return _append(conn, dataset, source, direction, current(conn, dataset, source), newest, window, run_id,
                   batch_key, now)


def timeline(conn: Connection, dataset: str, source: str) -> list[dict[str, Any]]:
    rows = conn.execute(select(cursor_event).where(cursor_event.c.dataset == dataset, cursor_event.c.source == source)
                        .order_by(cursor_event.c.id)).mappings().all()
    out = []
    for row in rows:
        event = dict(row)
        for column in ("previous_value", "new_value", "window_start", "window_end", "recorded_at"):
            if event[column] is not None:
                event[column] = as_utc(event[column])
        out.append(event)
    return out


def rebuild_from_events(events: list[dict[str, Any]]) -> CursorValue | None:
    """The cursor as its FORWARD events leave it: each starts where the last one ended."""
    cursor: CursorValue | None = None
    for event in events:
        if event["direction"] == Direction.FORWARD.value:
            cursor = CursorValue(event["new_value"], event["new_key"])
    return cursor
