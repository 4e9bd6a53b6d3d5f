"""Restore (DESIGN section 8): silver rebuilt from the lake's current snapshots, a pure function of the events.

The rule is the warehouse's: of each event key the earliest delivery wins (smallest delivery key);
of each entity the greatest (ordering column, event key) is its silver row.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl
from sqlalchemy import Connection

from schemas.datasets import DatasetSpec
from schemas.tables import SILVER
from tasks.lake import Lake, committed_partitions, current_manifest, read_files
from tasks.staging import bulk_load, stage_keys


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
