"""Silver: per entity, the greatest accepted event by (ordering column, event key), newer wins only."""

from __future__ import annotations

from datetime import datetime

import polars as pl
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from schemas.datasets import DatasetSpec
from schemas.tables import SILVER
from tasks.dedup import take
from tasks.errors import TransientError
from tasks.ledger import RunIdentity
from tasks.staging import bulk_load, stage
from tasks.validate import typed_from_payloads


def silver_candidates(spec: DatasetSpec, events: pl.DataFrame, who: RunIdentity, now: datetime) -> pl.DataFrame:
    """Per entity, the batch's greatest event by (ordering column, event key), shaped as silver."""
    order = events.select(spec.entity_key, spec.ordering_column, spec.event_key).with_row_index("_i")
    picks = (order.sort([spec.ordering_column, spec.event_key], descending=True)
             .unique(subset=[spec.entity_key], keep="first", maintain_order=True)["_i"].sort())
    best = events[picks]  # gather only the winning rows, not a sorted copy of the whole batch
    return best.select(
        *[pl.col(f.name).alias(spec.silver_name(f.name)) for f in spec.fields],
        pl.lit(who.partition).alias("_partition_key"),
        pl.lit(who.batch_id).alias("_batch_id"),
        pl.col("_manifest_id"),
        pl.lit(now).dt.convert_time_zone("UTC").alias("_ingested_at"),
    )


def _silver_guard(spec: DatasetSpec, new: str, old: str) -> str:
    order, last = spec.ordering_column, spec.silver_name(spec.event_key)
    return f'({new}."{order}", {new}."{last}") > ({old}."{order}", {old}."{last}")'


def write_silver(conn: Connection, spec: DatasetSpec, candidates: pl.DataFrame) -> dict[str, int]:
    """Classify the batch's per-entity winners against silver, insert new entities, upsert the rest."""
    entity, order, last = spec.entity_key, spec.ordering_column, spec.silver_name(spec.event_key)
    stage(conn, "_stg_silver", spec.silver_table, candidates.select(entity, order, last))
    counts = classify_silver(conn, spec)
    known = conn.exec_driver_sql(
        f'SELECT s."{entity}" FROM _stg_silver s JOIN {spec.silver_table} f ON f."{entity}" = s."{entity}"'
    ).scalars().all()
    is_new = ~candidates[entity].is_in(pl.Series(known, dtype=pl.String).implode())
    try:  # new entities go straight in; the key check above ran under the partition lock
        bulk_load(conn, spec.silver_table, take(candidates, is_new))
    except IntegrityError as exc:
        raise TransientError(
            f"{spec.silver_table}: another partition's run created some of these entities first; retry resolves it"
        ) from exc
    if known:
        stage(conn, "_stg_silver", spec.silver_table, candidates.filter(~is_new))
        upsert_silver(conn, spec)
    return counts


def classify_silver(conn: Connection, spec: DatasetSpec) -> dict[str, int]:
    """How each staged entity relates to current silver: new, newer, the same event, or older."""
    entity, order, last = spec.entity_key, spec.ordering_column, spec.silver_name(spec.event_key)
    same = f'(s."{order}" = f."{order}" AND s."{last}" = f."{last}")'
    row = conn.exec_driver_sql(
        "SELECT "
        f'COALESCE(SUM(CASE WHEN f."{entity}" IS NULL THEN 1 ELSE 0 END), 0), '
        f"COALESCE(SUM(CASE WHEN f.\"{entity}\" IS NOT NULL AND {_silver_guard(spec, 's', 'f')} THEN 1 ELSE 0 END), 0), "
        f"COALESCE(SUM(CASE WHEN f.\"{entity}\" IS NOT NULL AND {same} THEN 1 ELSE 0 END), 0), "
        f"COALESCE(SUM(CASE WHEN f.\"{entity}\" IS NOT NULL AND {_silver_guard(spec, 'f', 's')} THEN 1 ELSE 0 END), 0) "
        f'FROM _stg_silver s LEFT JOIN {spec.silver_table} f ON f."{entity}" = s."{entity}"'
    ).one()
    return dict(zip(("silver_inserted", "silver_updated", "silver_unchanged", "silver_stale_skipped"),
                    map(int, row)))


def upsert_silver(conn: Connection, spec: DatasetSpec) -> None:
    """Newer wins by (ordering column, event key); an older or equal event never rewrites a row."""
    table = SILVER[spec.name]
    columns = [c.name for c in table.columns]
    names = ", ".join(f'"{c}"' for c in columns)
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c != spec.entity_key)
    conn.exec_driver_sql(
        f"INSERT INTO {spec.silver_table} ({names}) SELECT {names} FROM _stg_silver WHERE true "
        f'ON CONFLICT ("{spec.entity_key}") DO UPDATE SET {updates} '
        f"WHERE {_silver_guard(spec, 'excluded', spec.silver_table)}"
    )


def rebuild_silver(conn: Connection, spec: DatasetSpec, entities: list[str], now: datetime) -> None:
    """Recompute silver rows of some entities from bronze: the greatest event of each, or no row."""
    if not entities:
        return
    entity, order, key = spec.entity_key, spec.ordering_column, spec.event_key
    winners = []
    for value in entities:
        conn.execute(text(f'DELETE FROM {spec.silver_table} WHERE "{entity}" = :v'), {"v": value})
        row = conn.execute(text(
            f"SELECT _raw_payload, _partition_key, _batch_id, _manifest_id FROM {spec.bronze_table} "
            f'WHERE "{entity}" = :v ORDER BY "{order}" DESC, "{key}" DESC LIMIT 1'), {"v": value}).first()
        if row is not None:
            winners.append(row)
    if not winners:
        return
    typed = typed_from_payloads(spec, [w._raw_payload for w in winners])
    rows = typed.select(
        *[pl.col(f.name).alias(spec.silver_name(f.name)) for f in spec.fields],
        pl.Series("_partition_key", [w._partition_key for w in winners], dtype=pl.String),
        pl.Series("_batch_id", [w._batch_id for w in winners], dtype=pl.String),
        pl.Series("_manifest_id", [w._manifest_id for w in winners], dtype=pl.String),
        pl.lit(now).dt.convert_time_zone("UTC").alias("_ingested_at"),
    )
    stage(conn, "_stg_rebuilt", spec.silver_table, rows)
    names = ", ".join(f'"{c}"' for c in rows.columns)
    conn.exec_driver_sql(f"INSERT INTO {spec.silver_table} ({names}) SELECT {names} FROM _stg_rebuilt")
