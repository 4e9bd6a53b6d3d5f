"""Restore (DESIGN section 8): silver rebuilt from the lake's current snapshots, a pure function of the events.

The rule is the warehouse's: of each event key the earliest delivery wins (smallest delivery key);
of each entity the greatest (ordering column, event key) is its silver row.
"""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Connection, Engine

from schemas.datasets import DatasetSpec
from schemas.summary import RunCounts
from schemas.tables import SILVER
from tasks import checks, ledger
from tasks.commit import Committed
from tasks.lake import (
    Lake,
    committed_partitions,
    current_manifest,
    make_current,
    read_files,
    read_partition,
)
from tasks.ledger import RunIdentity
from tasks.staging import bulk_load, stage_keys
from tasks.validate import partition_window
from tasks.warehouse import WriteResult, lock_partition


def lake_events(lake: Lake, spec: DatasetSpec, entities: set[str]) -> pl.DataFrame:
    """Every current snapshot's events of these entities, each tagged with its partition and batch."""
    frames = []
    for day in committed_partitions(lake, spec.name):
        manifest = current_manifest(lake, spec.name, day)
        if manifest is None:
            continue
        rows = read_files(lake, lake.prefix(spec.name, day), manifest)
        frames.append(rows.filter(pl.col(spec.entity_key).is_in(pl.Series(sorted(entities), dtype=pl.String).implode()))
                      .with_columns(pl.lit(day.isoformat()).alias("_partition_key"),
                                    pl.lit(manifest.get("batch_id", "")).alias("_batch_id")))
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()


def silver_from_events(spec: DatasetSpec, events: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """Per entity, the greatest of the events' earliest deliveries, shaped as silver rows."""
    if events.height == 0:
        return pl.DataFrame(schema={c.name: pl.String for c in SILVER[spec.name].columns}).head(0)
    earliest = events.sort("_delivery_key").unique(subset=[spec.event_key], keep="first")
    best = earliest.sort([spec.ordering_column, spec.event_key], descending=True).unique(
        subset=[spec.entity_key], keep="first")
    return best.select(
        *[pl.col(f.name).alias(spec.silver_name(f.name)) for f in spec.fields],
        pl.col("_partition_key"), pl.col("_batch_id"), pl.col("_manifest_id"),
        pl.lit(now).dt.convert_time_zone("UTC").alias("_ingested_at"),
    ).sort(spec.entity_key)


def replace_silver(conn: Connection, spec: DatasetSpec, entities: list[str], rows: pl.DataFrame) -> None:
    """The silver rows of `entities` become exactly `rows`, inside the caller's transaction."""
    stage_keys(conn, "_stg_restore", entities)
    conn.exec_driver_sql(f'DELETE FROM {spec.silver_table} WHERE "{spec.entity_key}" IN '
                         "(SELECT event_id FROM _stg_restore)")
    conn.exec_driver_sql("DROP TABLE IF EXISTS _stg_restore")
    if rows.height:
        bulk_load(conn, spec.silver_table, rows)


def touched_entities(spec: DatasetSpec, *frames: pl.DataFrame | None) -> set[str]:
    found: set[str] = set()
    for frame in frames:
        if frame is not None and frame.height:
            found |= set(frame[spec.entity_key].to_list())
    return found


def restore_partition(engine: Engine, lake: Lake, spec: DatasetSpec, who: RunIdentity, snapshot_id: str) -> Committed:
    """Snapshot current again, then one transaction: silver of the touched entities rebuilt, checks, ledger."""
    day = who.partition_key
    before = read_partition(lake, spec.name, day)
    manifest = make_current(lake, spec.name, day, snapshot_id)
    restored = read_files(lake, lake.prefix(spec.name, day), manifest)
    entities = touched_entities(spec, restored, before)
    now = datetime.now(timezone.utc)
    rows = silver_from_events(spec, lake_events(lake, spec, entities), now)
    in_snapshot = restored[spec.entity_key].n_unique() if restored.height else 0
    counts = RunCounts(declared_records=restored.height, total=restored.height, valid=restored.height,
                       bronze_existing=restored.height, distinct_entities=in_snapshot, silver_updated=in_snapshot)
    attempt = ledger.start_run(engine, who)
    try:
        with engine.begin() as conn:
            lock_partition(conn, who)
            replace_silver(conn, spec, sorted(entities), rows)
            _, window_end = partition_window(day)
            observed = checks.observe(conn, spec, who, counts, restored, window_end, {}, 0)
            outcomes = checks.evaluate(spec.checks, observed)
            checks.record_results(conn, who, outcomes, now)
            held = bool(checks.blocking(outcomes))
            ledger.finish_run(conn, who, "held" if held else "succeeded", counts.model_dump(), restored.height,
                              detail=f"restored snapshot {snapshot_id}; {len(entities)} entities rebuilt from the lake")
    except BaseException as exc:
        ledger.fail_run(engine, who, f"{type(exc).__name__}: {exc}")
        raise
    return Committed(WriteResult(silver_updated=in_snapshot), restored.head(0), who, attempt, counts, outcomes,
                     manifest)


@task(name="restore-partition", cache_policy=NO_CACHE)
def restore_partition_task(engine: Engine, lake: Lake, spec: DatasetSpec, who: RunIdentity,
                           snapshot_id: str) -> Committed:
    return restore_partition(engine, lake, spec, who, snapshot_id)
