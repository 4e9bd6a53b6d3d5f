"""The pull ledger: each pull of a source (its window, status) and each page it landed (the checkpoint).

A pull's window is fixed when it starts. Pages are recorded as they land, with an idempotent key
(`{run}:{page}`), their record count and the tokens before and after: a pull killed after page k is
found RUNNING by the next one (which holds the source's lock, so the killed one is dead) and resumed
from page k's `token_after`, in the same window, into the same landing folder.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, or_, select, update

from schemas.tables import pull_page, pull_run
from tasks import ledger
from tasks.cursor import CursorValue, Direction


class PullStatus:
    RUNNING = "RUNNING"  # pages are landing
    LANDED = "LANDED"  # every page landed and its manifests written; its partitions are being ingested
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ABANDONED = "ABANDONED"  # an operator gave it up (`pull --restart`): the next pull starts from the cursor


@dataclass(frozen=True)
class PullRun:
    run_id: str
    dataset: str
    source: str
    direction: Direction
    window_start: datetime
    window_end: datetime
    source_clock: datetime | None
    status: str


def as_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else ledger.as_utc(moment)


def _as_run(row: Any) -> PullRun:
    return PullRun(row.run_id, row.dataset, row.source, Direction(row.direction), as_utc(row.window_start),  # type: ignore[arg-type]
                   as_utc(row.window_end), as_utc(row.source_clock), row.status)  # type: ignore[arg-type]


def unfinished(conn: Connection, dataset: str, source: str, direction: Direction,
               window: tuple[datetime, datetime] | None = None) -> PullRun | None:
    """The newest pull in this direction (of this window, for a re-pull), when it did not succeed:
    killed or failed mid-pages (RUNNING, FAILED) or before its partitions were ingested (LANDED)."""
    query = select(pull_run).where(pull_run.c.dataset == dataset, pull_run.c.source == source,
                                   pull_run.c.direction == direction.value)
    if window is not None:
        query = query.where(pull_run.c.window_start == window[0], pull_run.c.window_end == window[1])
    row = conn.execute(query.order_by(pull_run.c.started_at.desc()).limit(1)).first()
    return None if row is None or row.status in (PullStatus.SUCCEEDED, PullStatus.ABANDONED) else _as_run(row)


def start(engine: Engine, dataset: str, source: str, direction: Direction, window: tuple[datetime, datetime],
          source_clock: datetime | None, flow_run_id: str | None, now: datetime) -> PullRun:
    run_id = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(insert(pull_run).values(
            run_id=run_id, dataset=dataset, source=source, direction=direction.value, window_start=window[0],
            window_end=window[1], source_clock=source_clock, status=PullStatus.RUNNING, pages=0, records=0,
            already_ingested=0,
            flow_run_id=flow_run_id, started_at=now))
    return PullRun(run_id, dataset, source, direction, window[0], window[1], source_clock, PullStatus.RUNNING)


def resume(engine: Engine, run: PullRun, flow_run_id: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(update(pull_run).where(pull_run.c.run_id == run.run_id).values(
            status=PullStatus.RUNNING, error=None, flow_run_id=flow_run_id))


def landed_pages(conn: Connection, run_id: str) -> list[Any]:
    return list(conn.execute(select(pull_page).where(pull_page.c.run_id == run_id).order_by(pull_page.c.page)))


def record_page(engine: Engine, run_id: str, page: int, token_before: str | None, token_after: str | None,
                record_count: int, already_ingested: int, attempts: int, asset_uri: str, newest: CursorValue | None,
                newest_seen: datetime | None, now: datetime) -> None:
    """The page's checkpoint, once its file is landed (a rerun of the same page writes the same row)."""
    key = f"{run_id}:{page}"
    with engine.begin() as conn:
        if conn.execute(select(pull_page.c.batch_key).where(pull_page.c.batch_key == key)).first() is None:
            conn.execute(insert(pull_page).values(
                batch_key=key, run_id=run_id, page=page, token_before=token_before, token_after=token_after,
                record_count=record_count, already_ingested=already_ingested, attempts=attempts, asset_uri=asset_uri, landed_at=now,
                newest_value=newest.value if newest else None, newest_key=newest.key if newest else None))
        def total(column: Any) -> Any:
            return select(func.coalesce(func.sum(column), 0)).where(pull_page.c.run_id == run_id).scalar_subquery()

        conn.execute(update(pull_run).where(pull_run.c.run_id == run_id).values(
            pages=page, records=total(pull_page.c.record_count), already_ingested=total(pull_page.c.already_ingested)))
        if newest_seen is not None:  # the newest the source showed so far (pages need not come in cursor order)
            conn.execute(update(pull_run).where(
                pull_run.c.run_id == run_id, or_(pull_run.c.newest_seen.is_(None), pull_run.c.newest_seen < newest_seen))
                .values(newest_seen=newest_seen))


def newest_landed(conn: Connection, run_id: str) -> tuple[CursorValue, str] | None:
    """The newest (cursor, key) the pull read inside its window, and the page (batch key) it came from:
    where the forward cursor may move."""
    best: tuple[CursorValue, str] | None = None
    for row in conn.execute(select(pull_page.c.newest_value, pull_page.c.newest_key, pull_page.c.batch_key).where(
            pull_page.c.run_id == run_id, pull_page.c.newest_value.is_not(None))):
        value = CursorValue(as_utc(row.newest_value), row.newest_key)  # type: ignore[arg-type]
        best = (value, row.batch_key) if best is None or value > best[0] else best
    return best


def finish(engine: Engine, run_id: str, status: str, now: datetime, error: str | None = None) -> None:
    with engine.begin() as conn:
        finish_in(conn, run_id, status, now, error)


def finish_in(conn: Connection, run_id: str, status: str, now: datetime, error: str | None = None) -> None:
    conn.execute(update(pull_run).where(pull_run.c.run_id == run_id).values(status=status, ended_at=now, error=error))


def run_row(conn: Connection, run_id: str) -> Any:
    return conn.execute(select(pull_run).where(pull_run.c.run_id == run_id)).one()


def recent_runs(conn: Connection, dataset: str, source: str, since: datetime) -> list[Any]:
    return list(conn.execute(select(pull_run).where(pull_run.c.dataset == dataset, pull_run.c.source == source,
                                                    pull_run.c.started_at >= since)
                             .order_by(pull_run.c.started_at)))


def first_pull_at(conn: Connection, dataset: str, source: str) -> datetime | None:
    return as_utc(conn.execute(select(func.min(pull_run.c.started_at)).where(
        pull_run.c.dataset == dataset, pull_run.c.source == source)).scalar_one())


def retries_since(conn: Connection, dataset: str, source: str, since: datetime) -> int:
    """Page attempts beyond the first, over the pulls started since then: throttling and server errors."""
    return int(conn.execute(
        select(func.coalesce(func.sum(pull_page.c.attempts - 1), 0)).select_from(
            pull_page.join(pull_run, pull_page.c.run_id == pull_run.c.run_id))
        .where(pull_run.c.dataset == dataset, pull_run.c.source == source, pull_run.c.started_at >= since)).scalar_one())

