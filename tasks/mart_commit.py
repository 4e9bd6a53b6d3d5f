"""Commit a computed mart partition: its lake snapshot, its gold table rows and its ledger rows together.

The same protocol as a dataset partition (tasks/commit.py): the snapshot is staged in the lake, then one
warehouse transaction replaces the partition's rows in the gold table (named after the mart), records
the snapshot as current, the inputs it consumed, the run and its checks; only then does the lake's
marker move. A crash before the commit leaves a staged snapshot nobody names (cleaned by the next
commit) and the mart partition as it was.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import polars as pl
from sqlalchemy import Connection, Engine, MetaData, Table, delete, insert, inspect, select, update

from schemas.mart_models import MartModel, MartState
from schemas.summary import CheckOutcome
from schemas.tables import check_result, mart_input, mart_partition, mart_run, mart_table
from tasks import ledger
from tasks.gold import gold_table
from tasks.lake import Lake, SnapshotWriter
from tasks.lake_state import committed_ids
from tasks.ledger import utc_now
from tasks.locks import partition_lock
from tasks.mart_plan import InputSnapshot, inputs_fingerprint

SCHEMA_LOCK = "0000-00-00"  # the lock key of a mart's gold table (no partition has it)


def prepare_gold(engine: Engine, model: MartModel) -> bool:
    """The mart's gold table as the model has it now (grain and columns, names and types): created, or
    re-created when they changed, once, under the mart's own lock; every partition of the mart is then due
    again (its rows went with the old table). True when it was (re)created."""
    signature = json.dumps(model.columns)
    with partition_lock(engine, model.name, SCHEMA_LOCK, lambda: None):
        with engine.begin() as conn:
            known = conn.execute(select(mart_table).where(mart_table.c.mart == model.name)).first()
            exists = inspect(conn).has_table(model.name)
            if exists and known is not None and (known.grain, known.columns) == (model.grain, signature):
                return False
            if exists:
                Table(model.name, MetaData()).drop(conn)
            gold_table(model).create(conn)
            values = dict(grain=model.grain, columns=signature, updated_at=utc_now())
            if conn.execute(update(mart_table).where(mart_table.c.mart == model.name).values(**values)).rowcount == 0:
                conn.execute(insert(mart_table).values(mart=model.name, **values))
            conn.execute(update(mart_partition).where(mart_partition.c.mart == model.name)
                         .values(model_fingerprint=""))  # stale: their rows are gone
    return True


def _values(rows: pl.DataFrame, sqlite: bool) -> list[dict[str, Any]]:
    records = rows.to_dicts()
    if sqlite:
        for record in records:
            for key, value in record.items():
                if isinstance(value, Decimal):
                    record[key] = str(value)
    return records


def _record_partition(conn: Connection, model: MartModel, day: date, values: dict[str, Any]) -> None:
    key = (mart_partition.c.mart == model.name) & (mart_partition.c.partition_key == day.isoformat())
    if conn.execute(update(mart_partition).where(key).values(**values)).rowcount == 0:
        conn.execute(insert(mart_partition).values(mart=model.name, partition_key=day.isoformat(), **values))


def _record_run(conn: Connection, model: MartModel, day: date, run_id: str, why: str, status: str,
                inputs: list[InputSnapshot], started: datetime, flow_run_id: str | None, snapshot_id: str | None = None,
                rows: int | None = None, detail: str | None = None) -> None:
    conn.execute(insert(mart_run).values(
        run_id=run_id, mart=model.name, partition_key=day.isoformat(), why=why, status=status,
        inputs=json.dumps([i.as_list() for i in inputs]), snapshot_id=snapshot_id, rows=rows,
        flow_run_id=flow_run_id, started_at=started, finished_at=utc_now(), detail=detail))


def commit_mart_partition(engine: Engine, lake: Lake, model: MartModel, day: date, rows: pl.DataFrame,
                          inputs: list[InputSnapshot], checks: list[CheckOutcome], run_id: str, why: str,
                          started: datetime, flow_run_id: str | None, because: str = "") -> tuple[str, dict[str, Any]]:
    """Stage and commit (call under the mart partition's lock; `settle_lake` moves the marker after).
    Returns the status and the snapshot record."""
    blocking = [c.name for c in checks if c.status == "fail" and c.severity == "error"]
    status = MartState.HELD.value if blocking else MartState.SUCCEEDED.value
    detail = ("held by " + ", ".join(blocking)) if blocking else None
    reason = "; ".join(filter(None, [because, detail]))  # the run's row says why it ran, and how it ended
    with engine.connect() as conn:
        keep = committed_ids(conn, model.name, day)
    writer = SnapshotWriter(lake, model.name, day, run_id, keep)
    try:
        writer.add(rows)
        record, digest = writer.stage({"model_fingerprint": model.fingerprint,
                                       "inputs": [i.as_list() for i in inputs]})
        with engine.begin() as conn:
            table = gold_table(model)
            conn.execute(delete(table).where(table.c[model.grain] == day))
            if rows.height:
                conn.execute(insert(table), _values(rows, conn.dialect.name == "sqlite"))
            ledger.record_snapshot(conn, model.name, day.isoformat(), record["snapshot_id"], run_id, record["rows"],
                                   len(record["files"]), digest)
            _record_partition(conn, model, day, dict(
                status=status, model_fingerprint=model.fingerprint, inputs_fingerprint=inputs_fingerprint(inputs),
                snapshot_id=record["snapshot_id"], run_id=run_id, rows=rows.height, held_by=None, detail=detail,
                updated_at=utc_now()))
            conn.execute(delete(mart_input).where((mart_input.c.mart == model.name)
                                                  & (mart_input.c.partition_key == day.isoformat())))
            if inputs:
                conn.execute(insert(mart_input), [dict(
                    mart=model.name, partition_key=day.isoformat(), upstream=i.upstream, upstream_partition=i.partition,
                    snapshot_id=i.snapshot_id, good_fallback=int(i.fallback)) for i in inputs])
            _record_run(conn, model, day, run_id, why, status, inputs, started, flow_run_id, record["snapshot_id"],
                        rows.height, reason)
            if checks:
                now = utc_now()
                conn.execute(insert(check_result), [dict(
                    dataset=model.name, partition_key=day.isoformat(), batch_id=run_id, run_id=run_id,
                    check_name=c.name, severity=c.severity, status=c.status, observed=c.observed,
                    warn_above=c.warn_above, error_above=c.error_above, detail=c.detail, checked_at=now)
                    for c in checks])
    except BaseException:
        writer.abandon()
        raise
    return status, record


def record_held(engine: Engine, model: MartModel, day: date, held_by: list[str], run_id: str,
                inputs: list[InputSnapshot], started: datetime, flow_run_id: str | None) -> bool:
    """An input holds the partition: recorded held (its last snapshot stays current); False when it
    already was, for the same inputs."""
    with engine.begin() as conn:
        row = conn.execute(select(mart_partition).where((mart_partition.c.mart == model.name)
                                                        & (mart_partition.c.partition_key == day.isoformat()))).first()
        if row is not None and row.status == MartState.HELD.value and row.held_by == json.dumps(held_by):
            return False
        detail = "input held: " + ", ".join(held_by)
        _record_partition(conn, model, day, dict(
            status=MartState.HELD.value, model_fingerprint=row.model_fingerprint if row else model.fingerprint,
            inputs_fingerprint=row.inputs_fingerprint if row else "", snapshot_id=row.snapshot_id if row else None,
            run_id=run_id, rows=row.rows if row else None, held_by=json.dumps(held_by), detail=detail,
            updated_at=utc_now()))
        _record_run(conn, model, day, run_id, "held", MartState.HELD.value, inputs, started, flow_run_id,
                    detail=detail)
    return True


def record_failed(engine: Engine, model: MartModel, day: date, run_id: str, why: str, inputs: list[InputSnapshot],
                  started: datetime, flow_run_id: str | None, error: str) -> None:
    """The computation raised: the partition keeps its last snapshot, is marked failed (its downstream
    waits), and the next marts run computes it again."""
    with engine.begin() as conn:
        row = conn.execute(select(mart_partition).where((mart_partition.c.mart == model.name)
                                                        & (mart_partition.c.partition_key == day.isoformat()))).first()
        _record_partition(conn, model, day, dict(
            status=MartState.FAILED.value, model_fingerprint=row.model_fingerprint if row else model.fingerprint,
            inputs_fingerprint=row.inputs_fingerprint if row else "", snapshot_id=row.snapshot_id if row else None,
            run_id=run_id, rows=row.rows if row else None, held_by=None, detail=error, updated_at=utc_now()))
        _record_run(conn, model, day, run_id, why, MartState.FAILED.value, inputs, started, flow_run_id, detail=error)


def previous_rows(conn: Connection, model: MartModel, day: date) -> int | None:
    """Rows of the mart's nearest earlier partition (row_count_change compares with it)."""
    return conn.execute(select(mart_partition.c.rows).where(
        (mart_partition.c.mart == model.name) & (mart_partition.c.partition_key < day.isoformat())
        & mart_partition.c.rows.is_not(None)).order_by(mart_partition.c.partition_key.desc()).limit(1)).scalar()
