"""The ledger: runs with attempts and heartbeats, batches, per-partition state and the decision log."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, select, update

from schemas.tables import decision_log, ingest_batch, ingest_run, partition_state


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


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


def start_run(engine: Engine, who: RunIdentity) -> int:
    """Record a RUNNING attempt in its own transaction, so other runs can see who holds the partition."""
    with engine.begin() as conn:
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


def heartbeat(engine: Engine, run_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(ingest_run).where(ingest_run.c.run_id == run_id).values(heartbeat_at=utc_now()))


def running_holder(conn: Connection, who: RunIdentity) -> tuple[str, str] | None:
    """(run id, readable description) of another RUNNING run of the same partition, if any."""
    row = conn.execute(
        select(ingest_run.c.run_id, ingest_run.c.flow_run_id, ingest_run.c.attempt, ingest_run.c.started_at)
        .where(and_(ingest_run.c.dataset == who.dataset, ingest_run.c.partition_key == who.partition,
                    ingest_run.c.status == "running", ingest_run.c.run_id != who.run_id))
        .order_by(ingest_run.c.started_at)
    ).first()
    if row is None:
        return None
    return row.run_id, f"run {row.run_id} (flow run {row.flow_run_id or '-'}, attempt {row.attempt}, started {row.started_at})"


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
    conn.execute(update(ingest_run).where(ingest_run.c.run_id == who.run_id).values(
        status=status, finished_at=now, heartbeat_at=now, counts=json.dumps(counts, default=str), error=error,
    ))
    if output_count is not None and not who.partial:
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
    """Record a failed attempt; data tables were rolled back, so partition state says failed too."""
    with engine.begin() as conn:
        previous = conn.execute(select(partition_state.c.status).where(and_(
            partition_state.c.dataset == who.dataset, partition_state.c.partition_key == who.partition))).first()
        # a failed rerun of a partition that had succeeded from other inputs still leaves those outputs
        finish_run(conn, who, "failed", {}, 0 if previous is None or previous.status != "succeeded" else None,
                   error=error)


def current_run(conn: Connection, dataset: str, partition: str) -> str | None:
    """The run behind the partition's current state (its output and checks), if it has one."""
    return conn.execute(select(partition_state.c.run_id).where(and_(
        partition_state.c.dataset == dataset, partition_state.c.partition_key == partition))).scalar_one_or_none()


def last_attempt(conn: Connection, batch_id: str) -> tuple[str, int] | None:
    """(run id, attempt) of the batch's latest attempt."""
    row = conn.execute(select(ingest_run.c.run_id, ingest_run.c.attempt).where(ingest_run.c.batch_id == batch_id)
                       .order_by(ingest_run.c.attempt.desc()).limit(1)).first()
    return (row.run_id, row.attempt) if row else None
