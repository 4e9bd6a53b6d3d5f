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
from sqlalchemy import (BigInteger, Boolean, Column, Connection, Date, DateTime, Engine, Float, Index, MetaData,
                        Numeric, Table, Text, delete, insert, inspect, select, update)
from sqlalchemy.types import TypeEngine

from schemas.mart_models import MartModel, MartState
from schemas.summary import CheckOutcome
from schemas.tables import check_result, mart_input, mart_partition, mart_run
from tasks import ledger
from tasks.errors import InputError
from tasks.lake import Lake, SnapshotWriter
from tasks.lake_state import committed_ids
from tasks.ledger import utc_now
from tasks.mart_plan import InputSnapshot, inputs_fingerprint


def gold_type(duckdb_type: str, model: MartModel, column: str) -> TypeEngine:
    """A mart column's warehouse type (decimals exact: text on SQLite, as the datasets keep them)."""
    kind = duckdb_type.upper()
    if kind.startswith("DECIMAL"):
        precision, scale = (int(x) for x in kind[8:-1].split(","))
        return Numeric(precision, scale, asdecimal=True).with_variant(Text(), "sqlite")
    simple: dict[str, TypeEngine] = {
        "BIGINT": BigInteger(), "INTEGER": BigInteger(), "SMALLINT": BigInteger(), "TINYINT": BigInteger(),
        "UBIGINT": Numeric(20, 0), "UINTEGER": BigInteger(), "HUGEINT": Numeric(38, 0),
        "DOUBLE": Float(), "FLOAT": Float(), "VARCHAR": Text(), "BOOLEAN": Boolean(), "DATE": Date(),
        "TIMESTAMP WITH TIME ZONE": DateTime(timezone=True), "TIMESTAMP": DateTime(),
    }
    if kind not in simple:
        raise InputError(model.path, None, column, f"a mart column of type {duckdb_type} has no warehouse type "
                         "(cast it to VARCHAR, DOUBLE, DECIMAL, BIGINT, BOOLEAN, DATE or TIMESTAMPTZ)")
    return simple[kind]


def gold_table(model: MartModel) -> Table:
    metadata = MetaData()
    return Table(model.name, metadata,
                 *(Column(name, gold_type(kind, model, name)) for name, kind in model.columns.items()),
                 Index(f"ix_{model.name}_{model.grain}"[:63], model.grain))


def _ensure_gold(conn: Connection, table: Table) -> None:
    """The gold table as the model has it now: created, or re-created when its columns changed (a changed
    model makes every partition stale, so the rows it drops are computed again)."""
    existing = inspect(conn)
    if existing.has_table(table.name):
        columns = [c["name"] for c in existing.get_columns(table.name)]
        if columns == [c.name for c in table.columns]:
            return
        table.drop(conn)
    table.create(conn)


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
                          started: datetime, flow_run_id: str | None) -> tuple[str, dict[str, Any]]:
    """Stage and commit (call under the mart partition's lock; `settle_lake` moves the marker after).
    Returns the status and the snapshot record."""
    blocking = [c.name for c in checks if c.status == "fail" and c.severity == "error"]
    status = MartState.HELD.value if blocking else MartState.SUCCEEDED.value
    detail = ("held by " + ", ".join(blocking)) if blocking else None
    with engine.connect() as conn:
        keep = committed_ids(conn, model.name, day)
    writer = SnapshotWriter(lake, model.name, day, run_id, keep)
    try:
        writer.add(rows)
        record, digest = writer.stage({"model_fingerprint": model.fingerprint,
                                       "inputs": [i.as_list() for i in inputs]})
        with engine.begin() as conn:
            table = gold_table(model)
            _ensure_gold(conn, table)
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
                        rows.height, detail)
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
