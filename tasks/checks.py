"""Checks after every materialization (DESIGN section 9): measure inside the write transaction, judge, store.

`observe` measures the partition in the warehouse (inside the run's transaction, so a dry run is
checked too and a hold commits atomically with the data); `evaluate` is a pure function of those
measurements and the dataset's declared limits; `record_results` stores the verdicts per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

import polars as pl
from sqlalchemy import ColumnElement, Connection, Exists, Table, and_, exists, func, insert, literal, or_, select, tuple_

from schemas.checks import CheckName, CheckSpec, CheckStatus, Severity
from schemas.datasets import DatasetSpec
from schemas.summary import CheckOutcome, RunCounts
from schemas.tables import bronze_table, check_result, partition_state, silver_table
from tasks.database import is_postgres, probing_by_index
from tasks.errors import printable
from tasks.ledger import RunIdentity
from tasks.sql import drop_temp, quote
from tasks.staging import stage_keys

ENTITY_STAGE = "_stg_entities"
SHOWN_KEYS = 5  # how many offending keys a detail names


@dataclass
class Observations:
    """What the checks judge, measured once per run."""

    counts: RunCounts
    window_end: datetime
    touched_entities: int = 0
    silver_rows: int = 0
    duplicate_entity_keys: int = 0
    null_counts: dict[str, int] = field(default_factory=dict)  # required silver column -> nulls
    previous: tuple[str, int] | None = None  # (partition, output count) of the previous partition with output
    newest_event: datetime | None = None
    unknown_fields: list[str] = field(default_factory=list)
    absent_fields: list[str] = field(default_factory=list)
    inconsistent_entities: list[str] = field(default_factory=list)


# --- measuring -----------------------------------------------------------------------------------

def _silver_profile(conn: Connection, spec: DatasetSpec, touched: Table) -> tuple[int, int, dict[str, int]]:
    """Rows, distinct entity keys and nulls per required column of the touched entities' silver rows."""
    silver, entity = silver_table(spec), spec.entity_key
    required = spec.required_silver_columns
    row = conn.execute(select(func.count(), func.count(silver.c[entity].distinct()),
                              *[func.count(silver.c[c]) for c in required])
                       .where(silver.c[entity].in_(select(touched.c.event_id)))).one()
    rows = int(row[0])
    return rows, int(row[1]), {c: rows - int(n) for c, n in zip(required, row[2:])}


def inconsistent_entities(conn: Connection, spec: DatasetSpec, touched: Table) -> list[str]:
    """Touched entities whose silver row is not their greatest event in bronze.

    An entity is consistent when it has bronze events and a silver row, or neither; silver's event is
    one of its bronze events; and no bronze event outranks silver's (ordering, event key). Each is one
    probe of bronze's (entity, ordering, event key) index, so the check costs the same however many
    events an entity has collected over the partitions before."""
    entity, order, key = spec.entity_key, spec.ordering_column, spec.event_key
    last = spec.silver_name(key)
    silver, bronze = silver_table(spec), bronze_table(spec)

    def bronze_event(*where: ColumnElement[bool]) -> Exists:
        return exists(select(literal(1)).select_from(bronze).where(bronze.c[entity] == touched.c.event_id, *where))

    no_silver = silver.c[entity].is_(None)
    inconsistent = or_(
        and_(no_silver, bronze_event()),
        and_(~no_silver, or_(~bronze_event(bronze.c[order] == silver.c[order], bronze.c[key] == silver.c[last]),
                             bronze_event(tuple_(bronze.c[order], bronze.c[key]) > tuple_(silver.c[order], silver.c[last])))))
    with probing_by_index(conn):
        return list(conn.execute(
            select(touched.c.event_id).select_from(touched.outerjoin(silver, silver.c[entity] == touched.c.event_id))
            .where(inconsistent).order_by(touched.c.event_id)).scalars().all())


def _previous_output(conn: Connection, who: RunIdentity) -> tuple[str, int] | None:
    row = conn.execute(
        select(partition_state.c.partition_key, partition_state.c.output_count)
        .where(and_(partition_state.c.dataset == who.dataset, partition_state.c.partition_key < who.partition,
                    partition_state.c.status.in_(("succeeded", "held"))))
        .order_by(partition_state.c.partition_key.desc()).limit(1)
    ).first()
    return (row.partition_key, row.output_count) if row else None


def observe(conn: Connection, spec: DatasetSpec, who: RunIdentity, counts: RunCounts, entities: pl.Series,
            newest: datetime | None, window_end: datetime, field_sample: dict[str, int],
            sampled_records: int) -> Observations:
    """Measure the partition as the run's transaction sees it: `entities` those of its accepted events,
    `newest` the greatest ordering value of its valid records."""
    keys = entities.unique().sort()
    touched = stage_keys(conn, ENTITY_STAGE, keys.to_list())
    if is_postgres(conn.engine):
        conn.exec_driver_sql(f"ANALYZE {quote(conn, ENTITY_STAGE)}")  # a temp table has no statistics; the joins need them
    rows, distinct, nulls = _silver_profile(conn, spec, touched)
    contract = set(spec.field_names)
    required = {f.name for f in spec.fields if not f.nullable}
    observed = Observations(
        counts=counts, window_end=window_end, touched_entities=keys.len(), silver_rows=rows,
        duplicate_entity_keys=rows - distinct, null_counts=nulls, previous=_previous_output(conn, who),
        newest_event=newest,  # type: ignore[arg-type]
        unknown_fields=sorted(set(field_sample) - contract),
        absent_fields=sorted(required - set(field_sample)) if sampled_records else [],
        inconsistent_entities=inconsistent_entities(conn, spec, touched),
    )
    drop_temp(conn, ENTITY_STAGE)
    return observed


# --- judging -------------------------------------------------------------------------------------

Measure = tuple[float | None, str]  # (observed value, or None when there is nothing to measure; detail)


def _named(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def _reconcile(o: Observations) -> Measure:
    gaps = o.counts.unexplained()
    explained = [e for e in o.counts.equations() if not e.holds and e.explained_by]
    if gaps:
        return len(gaps), "; ".join(f"{e.left} {e.left_value} != {e.right} {e.right_value}" for e in gaps)
    note = "".join(f"; {e.name} explained by {e.explained_by}" for e in explained)
    return 0, f"{len(o.counts.equations())} equations hold{note}"


def _entity_key_unique(o: Observations) -> Measure:
    return o.duplicate_entity_keys, f"{o.silver_rows} silver rows for {o.touched_entities} touched entities"


def _null_ratio(o: Observations) -> Measure:
    if o.silver_rows == 0:
        return None, "no silver rows to profile"
    ratio = max(o.null_counts.values(), default=0) / o.silver_rows
    if ratio == 0:
        return 0.0, f"{len(o.null_counts)} required columns, no nulls in {o.silver_rows} rows"
    nulls = {c: n for c, n in o.null_counts.items() if n}
    return ratio, "nulls: " + ", ".join(f"{c} {n}/{o.silver_rows}" for c, n in nulls.items())


def _quarantine_ratio(o: Observations) -> Measure:
    if o.counts.total == 0:
        return None, "no records read"
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(o.counts.invalid_by_reason.items()))
    return o.counts.invalid / o.counts.total, f"{o.counts.invalid} of {o.counts.total} records quarantined" + (
        f" ({reasons})" if reasons else "")


def _row_count_change(o: Observations) -> Measure:
    if o.previous is None:
        return None, "no earlier partition with output to compare with"
    partition, before = o.previous
    now = o.counts.output_count
    if before == 0:
        return None, f"{partition} had no valid events"
    return abs(now - before) / before, f"{now} valid events against {before} in {partition} ({(now - before) / before:+.0%})"


def _freshness(o: Observations) -> Measure:
    if o.newest_event is None:
        return None, "no valid events"
    lag = (o.window_end - o.newest_event).total_seconds() / 3600
    return round(lag, 3), f"newest event {o.newest_event.isoformat()}, {lag:.1f} h before the window end"


def _schema_drift(o: Observations) -> Measure:
    parts = []
    if o.unknown_fields:  # the source's own names: any text at all, shown escaped and capped
        parts.append("fields outside the contract: " + _named([printable(f)[:64] for f in o.unknown_fields]))
    if o.absent_fields:
        parts.append("required fields no sampled record carried: " + ", ".join(o.absent_fields))
    return len(o.unknown_fields) + len(o.absent_fields), "; ".join(parts) or "source fields match the contract"


def _silver_consistency(o: Observations) -> Measure:
    bad = o.inconsistent_entities
    if bad:
        return len(bad), f"silver differs from the greatest bronze event for {_named(bad)}"
    return 0, f"silver is the greatest bronze event for all {o.touched_entities} touched entities"


MEASURES: dict[CheckName, Callable[[Observations], Measure]] = {
    CheckName.RECONCILE: _reconcile,
    CheckName.ENTITY_KEY_UNIQUE: _entity_key_unique,
    CheckName.NULL_RATIO: _null_ratio,
    CheckName.QUARANTINE_RATIO: _quarantine_ratio,
    CheckName.ROW_COUNT_CHANGE: _row_count_change,
    CheckName.FRESHNESS: _freshness,
    CheckName.SCHEMA_DRIFT: _schema_drift,
    CheckName.SILVER_CONSISTENCY: _silver_consistency,
}


def judge(spec: CheckSpec, observed: float | None) -> CheckStatus:
    if observed is None:
        return CheckStatus.SKIPPED
    if spec.error_above is not None and observed > spec.error_above:
        return CheckStatus.FAIL
    if spec.warn_above is not None and observed > spec.warn_above:
        return CheckStatus.WARN
    return CheckStatus.PASS


def evaluate(specs: tuple[CheckSpec, ...], observations: Observations) -> list[CheckOutcome]:
    """Every declared check's verdict; pure, so the limits are tested without a database."""
    outcomes = []
    for spec in specs:
        observed, detail = MEASURES[spec.name](observations)
        observed = None if observed is None else float(observed)
        outcomes.append(CheckOutcome(
            name=spec.name.value, severity=spec.severity.value, status=judge(spec, observed).value,
            observed=observed, warn_above=spec.warn_above, error_above=spec.error_above, detail=detail,
        ))
    return outcomes


def blocking(outcomes: list[CheckOutcome]) -> list[CheckOutcome]:
    """Failed error checks: they hold the partition."""
    return [o for o in outcomes if o.status == CheckStatus.FAIL and o.severity == Severity.ERROR]


# --- storing -------------------------------------------------------------------------------------

def record_results(conn: Connection, who: RunIdentity, outcomes: list[CheckOutcome], now: datetime) -> None:
    if not outcomes:
        return
    conn.execute(insert(check_result), [dict(
        dataset=who.dataset, partition_key=who.partition, batch_id=who.batch_id, run_id=who.run_id,
        check_name=o.name, severity=o.severity, status=o.status, observed=o.observed, warn_above=o.warn_above,
        error_above=o.error_above, detail=o.detail, checked_at=now,
    ) for o in outcomes])


def stored_results(conn: Connection, run_id: str) -> list[CheckOutcome]:
    rows = conn.execute(select(check_result).where(check_result.c.run_id == run_id).order_by(check_result.c.id))
    return [CheckOutcome(name=r.check_name, severity=r.severity, status=r.status, observed=r.observed,
                         warn_above=r.warn_above, error_above=r.error_above, detail=r.detail) for r in rows]
