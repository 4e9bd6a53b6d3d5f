"""The ledger: runs with attempts and heartbeats, batches, per-partition state, the decision log, and the
lake snapshots each commit recorded.

Attempts are allocated under the partition lock (tasks/locks.py), so two runs of one partition never
race for an attempt number, and a RUNNING attempt the lock holder finds is dead: it is closed as
`abandoned`. Every attempt ends as succeeded, held, failed, skipped or abandoned.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from schemas.reason_codes import Action, ActionReason, Mode
from schemas.tables import (
    decision_log,
    ingest_batch,
    ingest_run,
    lake_current,
    lake_snapshot,
    partition_state,
    verify_finding,
)
from tasks.database import SQLITE_BUSY_TIMEOUT_S, autocommitting, is_postgres, reading
from tasks.errors import FactoryError, printable

log = logging.getLogger(__name__)

OPERATOR_MAX = 128  # decision_log.operator
ERROR_MAX = 4000  # what the ledger keeps of an error message


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime) -> datetime:
    """A datetime as UTC: SQLite gives DateTime(timezone=True) values back naive, PostgreSQL aware."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


class ArgumentError(FactoryError):
    """A run parameter that cannot be recorded as given (too long, control characters, unknown code)."""


def check_operator(operator: str) -> str:
    """An operator name the decision log can hold: 1-128 printable characters."""
    if not isinstance(operator, str) or not operator.strip():
        raise ArgumentError("operator: must be a non-empty name")
    if printable(operator) != operator:
        raise ArgumentError(f"operator: {printable(operator)!r} holds control characters")
    if len(operator) > OPERATOR_MAX:
        raise ArgumentError(f"operator: at most {OPERATOR_MAX} characters (got {len(operator)})")
    return operator


@dataclass(frozen=True)
class RunIdentity:
    """Who is writing: the keys every ledger row and lineage column carries."""

    dataset: str
    partition_key: date
    batch_id: str
    run_id: str
    fingerprint: str
    manifest_ids: tuple[str, ...]
    action: str
    mode: str
    reason_code: str
    operator: str
    flow_run_id: str | None
    partial: bool = False  # a subset of the partition's inputs (a replay): partition state is not its to move
    accept_changed: bool = False  # edited source files were taken as they are now

    def __post_init__(self) -> None:
        """Checked before anything is written: a parameter the ledger cannot hold fails here, in one line."""
        check_operator(self.operator)
        for name, kind in (("action", Action), ("mode", Mode), ("reason_code", ActionReason)):
            value = getattr(self, name)
            if value not in {member.value for member in kind}:
                raise ArgumentError(f"{name}: {printable(value)!r} is not one of "
                                    f"{', '.join(member.value for member in kind)}")

    @property
    def partition(self) -> str:
        return self.partition_key.isoformat()


def new_run_id() -> str:
    return str(uuid.uuid4())


def _ensure_batch(conn: Connection, who: RunIdentity) -> None:
    exists = conn.execute(select(ingest_batch.c.batch_id).where(ingest_batch.c.batch_id == who.batch_id)).first()
    if exists is None:
        conn.execute(insert(ingest_batch).values(
            batch_id=who.batch_id, dataset=who.dataset, partition_key=who.partition,
            source_fingerprint=who.fingerprint, manifest_ids=json.dumps(list(who.manifest_ids)),
            first_seen_at=utc_now(),
        ))


def batch(conn: Connection, batch_id: str) -> Any:
    """The ingest_batch row of a batch id, or None."""
    return conn.execute(select(ingest_batch).where(ingest_batch.c.batch_id == batch_id)).first()


def abandon_dead_runs(conn: Connection, dataset: str, partition: str, closed_by: str) -> list[str]:
    """Close the partition's RUNNING attempts as abandoned. Call only while holding the partition lock:
    then no live run can be RUNNING (a live run holds the lock), so these attempts' processes died."""
    dead = conn.execute(select(ingest_run).where(and_(
        ingest_run.c.dataset == dataset, ingest_run.c.partition_key == partition, ingest_run.c.status == "running",
    ))).all()
    now = utc_now()
    for run in dead:
        detail = (f"attempt {run.attempt} (run {run.run_id}) held no lock: its process died after its last "
                  f"heartbeat {run.heartbeat_at}; closed by {closed_by}")
        conn.execute(update(ingest_run).where(ingest_run.c.run_id == run.run_id).values(
            status="abandoned", finished_at=now, error=detail))
        conn.execute(insert(decision_log).values(
            decided_at=now, action=run.action, reason_code=run.reason_code, operator="datafactory",
            dataset=dataset, partition_key=partition, batch_id=run.batch_id, run_id=run.run_id,
            flow_run_id=run.flow_run_id, outcome="abandoned", detail=detail))
    if dead:
        log.warning("%s/%s: closed %d dead attempt(s) as abandoned", dataset, partition, len(dead))
    return [run.run_id for run in dead]


def start_run(engine: Engine, who: RunIdentity) -> int:
    """Record a RUNNING attempt in its own transaction, so other runs can see who holds the partition.

    Call while holding the partition lock: dead attempts are closed first, and the attempt number is
    allocated without a race."""
    with engine.begin() as conn:
        abandon_dead_runs(conn, who.dataset, who.partition, f"run {who.run_id}")
        _ensure_batch(conn, who)
        attempt = conn.execute(
            select(func.coalesce(func.max(ingest_run.c.attempt), 0)).where(ingest_run.c.batch_id == who.batch_id)
        ).scalar_one() + 1
        now = utc_now()
        conn.execute(insert(ingest_run).values(
            run_id=who.run_id, batch_id=who.batch_id, dataset=who.dataset, partition_key=who.partition,
            attempt=attempt, action=who.action, mode=who.mode, reason_code=who.reason_code,
            status="running", flow_run_id=who.flow_run_id, started_at=now, heartbeat_at=now,
        ))
    return attempt


def beat(engine: Engine, run_id: str) -> bool:
    """One heartbeat of a RUNNING attempt; False when the database is busy or away (the next beat tries again)."""
    try:
        with autocommitting(engine) as conn:
            if not is_postgres(engine):  # our own write transaction may hold SQLite: skip a beat, do not queue
                conn.exec_driver_sql("PRAGMA busy_timeout = 1000")
            try:
                conn.execute(update(ingest_run).where(and_(ingest_run.c.run_id == run_id,
                                                           ingest_run.c.status == "running"))
                             .values(heartbeat_at=utc_now()))
            finally:
                if not is_postgres(engine):
                    conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        return True
    except SQLAlchemyError as exc:
        log.debug("heartbeat of run %s skipped: %s", run_id, exc)
        return False


@contextmanager
def heartbeat(engine: Engine, run_id: str, every_s: float) -> Iterator[None]:
    """Beat every `every_s` seconds while the block runs: health tells a hung attempt from a working one."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            beat(engine, run_id)

    thread = threading.Thread(target=loop, name=f"heartbeat-{run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()  # never raises; the beat thread is a daemon and ends at its next wake-up
        thread.join(timeout=5)


def running_holder(conn: Connection, dataset: str, partition: str, run_id: str = "") -> tuple[str, str] | None:
    """(run id, readable description) of another RUNNING run of the partition, if any."""
    row = conn.execute(
        select(ingest_run.c.run_id, ingest_run.c.flow_run_id, ingest_run.c.attempt, ingest_run.c.started_at)
        .where(and_(ingest_run.c.dataset == dataset, ingest_run.c.partition_key == partition,
                    ingest_run.c.status == "running", ingest_run.c.run_id != run_id))
        .order_by(ingest_run.c.started_at.desc())
    ).first()
    if row is None:
        return None
    return row.run_id, f"run {row.run_id} (flow run {row.flow_run_id or '-'}, attempt {row.attempt}, started {row.started_at})"


def describe_holder(engine: Engine, dataset: str, partition: str) -> str | None:
    """Who holds a partition, from the ledger; for the message of a run that has to wait."""
    try:
        with reading(engine) as conn:
            found = running_holder(conn, dataset, partition)
    except SQLAlchemyError:
        found = None
    return found[1] if found else None


def run_status(conn: Connection, run_id: str) -> str | None:
    return conn.execute(select(ingest_run.c.status).where(ingest_run.c.run_id == run_id)).scalar_one_or_none()


def succeeded_with(conn: Connection, dataset: str, partition_key: date, fingerprint: str) -> bool:
    """True when the partition's current output came from exactly these inputs."""
    row = conn.execute(
        select(partition_state.c.status, partition_state.c.source_fingerprint).where(and_(
            partition_state.c.dataset == dataset, partition_state.c.partition_key == partition_key.isoformat()))
    ).first()
    return row is not None and row.status == "succeeded" and row.source_fingerprint == fingerprint


def finish_run(conn: Connection, who: RunIdentity, status: str, counts: dict[str, Any],
               output_count: int | None, error: str | None = None, detail: str | None = None) -> None:
    """Close the attempt, move partition state (execute only) and log the decision, in the caller's transaction.

    A partial run (a replay) leaves the partition's state alone, except that its failed checks hold it."""
    now = utc_now()
    error = printable(error)[:ERROR_MAX] if error is not None else None
    detail = printable(detail)[:ERROR_MAX] if detail is not None else None
    conn.execute(update(ingest_run).where(ingest_run.c.run_id == who.run_id).values(
        status=status, finished_at=now, heartbeat_at=now, counts=json.dumps(counts, default=str), error=error,
    ))
    if output_count is not None and not who.partial:
        if status in ("succeeded", "held"):  # a new state: what verify found about the old one is moot
            conn.execute(delete(verify_finding).where(and_(verify_finding.c.dataset == who.dataset,
                                                           verify_finding.c.partition_key == who.partition)))
        key = and_(partition_state.c.dataset == who.dataset, partition_state.c.partition_key == who.partition)
        values = dict(status=status, source_fingerprint=who.fingerprint, batch_id=who.batch_id,
                      run_id=who.run_id, output_count=output_count, updated_at=now)
        if conn.execute(update(partition_state).where(key).values(**values)).rowcount == 0:
            conn.execute(insert(partition_state).values(dataset=who.dataset, partition_key=who.partition, **values))
    elif who.partial and status == "held":
        conn.execute(update(partition_state).where(and_(
            partition_state.c.dataset == who.dataset, partition_state.c.partition_key == who.partition,
        )).values(status="held", updated_at=now))
    conn.execute(insert(decision_log).values(
        decided_at=now, action=who.action, reason_code=who.reason_code, operator=who.operator,
        dataset=who.dataset, partition_key=who.partition, batch_id=who.batch_id, run_id=who.run_id,
        flow_run_id=who.flow_run_id, outcome=status, detail=error or detail,
    ))


def fail_run(engine: Engine, who: RunIdentity, error: str) -> None:
    """Record a failed attempt; data tables were rolled back, so partition state says failed too.

    When the warehouse itself is what failed, this cannot be written: the attempt stays RUNNING and the
    next holder of the partition lock closes it as abandoned."""
    try:
        with engine.begin() as conn:
            previous = conn.execute(select(partition_state.c.status).where(and_(
                partition_state.c.dataset == who.dataset, partition_state.c.partition_key == who.partition))).first()
            # a failed rerun of a partition that had succeeded from other inputs still leaves those outputs
            finish_run(conn, who, "failed", {}, 0 if previous is None or previous.status != "succeeded" else None,
                       error=error)
    except SQLAlchemyError as exc:
        log.warning("%s/%s: could not record the failure of run %s: %s", who.dataset, who.partition, who.run_id,
                    str(exc).splitlines()[0])


def current_run(conn: Connection, dataset: str, partition: str) -> str | None:
    """The run behind the partition's current state (its output and checks), if it has one."""
    return conn.execute(select(partition_state.c.run_id).where(and_(
        partition_state.c.dataset == dataset, partition_state.c.partition_key == partition))).scalar_one_or_none()


def last_attempt(conn: Connection, batch_id: str) -> tuple[str, int] | None:
    """(run id, attempt) of the batch's latest attempt."""
    row = conn.execute(select(ingest_run.c.run_id, ingest_run.c.attempt).where(ingest_run.c.batch_id == batch_id)
                       .order_by(ingest_run.c.attempt.desc()).limit(1)).first()
    return (row.run_id, row.attempt) if row else None


def last_attempt_of_flow_run(engine: Engine, batch_id: str, flow_run_id: str | None) -> tuple[str, int] | None:
    """(run id, attempt) of the latest attempt this flow run recorded for the batch; None when it failed
    before recording one (then its evidence gets a run id of its own, never an earlier attempt's)."""
    if flow_run_id is None:
        return None
    try:
        with reading(engine) as conn:
            row = conn.execute(select(ingest_run.c.run_id, ingest_run.c.attempt).where(and_(
                ingest_run.c.batch_id == batch_id, ingest_run.c.flow_run_id == flow_run_id))
                .order_by(ingest_run.c.attempt.desc()).limit(1)).first()
    except SQLAlchemyError:
        return None
    return (row.run_id, row.attempt) if row else None


def outcome_of_flow_run(conn: Connection, flow_run_id: str) -> tuple[str, str | None] | None:
    """(status, error or detail) of the latest attempt a flow run recorded, if it recorded one."""
    row = conn.execute(select(ingest_run.c.status, ingest_run.c.error).where(ingest_run.c.flow_run_id == flow_run_id)
                       .order_by(ingest_run.c.started_at.desc()).limit(1)).first()
    return (row.status, row.error) if row else None


# --- lake snapshots ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SnapshotRecord:
    """A committed lake snapshot, as the ledger recorded it."""

    snapshot_id: str
    dataset: str
    partition_key: str
    run_id: str
    rows: int
    files: int
    record_sha256: str
    committed_at: datetime
    retired_at: datetime | None


def record_snapshot(conn: Connection, dataset: str, partition: str, snapshot_id: str, run_id: str, rows: int,
                    files: int, record_sha256: str) -> None:
    """The snapshot is committed, and current, when the caller's transaction commits."""
    now = utc_now()
    conn.execute(insert(lake_snapshot).values(
        snapshot_id=snapshot_id, dataset=dataset, partition_key=partition, run_id=run_id, rows=rows, files=files,
        record_sha256=record_sha256, committed_at=now))
    set_current_snapshot(conn, dataset, partition, snapshot_id)


def set_current_snapshot(conn: Connection, dataset: str, partition: str, snapshot_id: str) -> None:
    key = and_(lake_current.c.dataset == dataset, lake_current.c.partition_key == partition)
    if conn.execute(update(lake_current).where(key).values(snapshot_id=snapshot_id, updated_at=utc_now())).rowcount == 0:
        conn.execute(insert(lake_current).values(dataset=dataset, partition_key=partition, snapshot_id=snapshot_id,
                                                 updated_at=utc_now()))


def snapshot_records(conn: Connection, dataset: str, partition: str | None = None,
                     retained_only: bool = True) -> list[SnapshotRecord]:
    """Committed snapshots of a dataset (or one partition), oldest first."""
    query = select(lake_snapshot).where(lake_snapshot.c.dataset == dataset)
    if partition is not None:
        query = query.where(lake_snapshot.c.partition_key == partition)
    if retained_only:
        query = query.where(lake_snapshot.c.retired_at.is_(None))
    rows = conn.execute(query.order_by(lake_snapshot.c.committed_at, lake_snapshot.c.snapshot_id)).all()
    return [SnapshotRecord(**row._asdict()) for row in rows]


def current_snapshots(conn: Connection, dataset: str) -> dict[str, str]:
    """partition -> the snapshot the ledger says is current: what readers of the lake may trust."""
    return dict(conn.execute(select(lake_current.c.partition_key, lake_current.c.snapshot_id)
                             .where(lake_current.c.dataset == dataset)).all())


def current_snapshot(conn: Connection, dataset: str, partition: str) -> str | None:
    """The snapshot the ledger says is current for one partition (one keyed row, however long the history)."""
    return conn.execute(select(lake_current.c.snapshot_id).where(and_(
        lake_current.c.dataset == dataset, lake_current.c.partition_key == partition))).scalar_one_or_none()


def retire_snapshots(conn: Connection, snapshot_ids: list[str]) -> None:
    if snapshot_ids:
        conn.execute(update(lake_snapshot).where(lake_snapshot.c.snapshot_id.in_(snapshot_ids))
                     .values(retired_at=utc_now()))
