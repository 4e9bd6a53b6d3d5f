"""Restore (DESIGN section 8): silver rebuilt from the lake's current snapshots, a pure function of the events.

The rule is the warehouse's: of each event key the earliest delivery wins (smallest delivery key);
of each entity the greatest (ordering column, event key) is its silver row. The target snapshot is
checked completely before anything changes; the ledger then makes it current in the same transaction
that rebuilds silver, and the lake's marker follows only after that commits.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import polars as pl
from sqlalchemy import Connection, Engine, delete, select

from schemas.datasets import DatasetSpec
from schemas.reason_codes import Action, Mode
from schemas.summary import RunCounts
from schemas.tables import silver_table
from tasks import checks, ledger
from tasks.commit import HEARTBEAT_S, Committed
from tasks.database import reading
from tasks.errors import InputError
from tasks.lake import Lake, LakeError, check_files, conform_to_contract, is_snapshot_id, read_files, read_record
from tasks.lake_state import settle_lake
from tasks.ledger import RunIdentity
from tasks.locks import partition_lock
from tasks.sql import drop_temp
from tasks.staging import bulk_load, stage_keys
from tasks.validate import partition_window
from tasks.warehouse import WriteResult


def restore_target(engine: Engine, lake: Lake, dataset: str, day: date, snapshot_id: str) -> dict[str, Any]:
    """The record of a snapshot restore may return to, or one InputError saying why not.

    It must be a snapshot of this partition that the ledger committed and retention kept; its record
    unchanged since then and naming this dataset, partition and id; every file present with its
    sha256. Nothing is changed by looking."""
    where = lake.where(dataset, day, f"_snapshots/{snapshot_id}.json") if is_snapshot_id(snapshot_id) \
        else lake.where(dataset, day)
    if not is_snapshot_id(snapshot_id):
        raise InputError(where, None, "snapshot_id", f"{snapshot_id!r} is not a snapshot id "
                         "(list them with `datafactory lake snapshots`)")
    with reading(engine) as conn:
        known = {r.snapshot_id: r for r in ledger.snapshot_records(conn, dataset, day.isoformat(), retained_only=False)}
    found = known.get(snapshot_id)
    if found is None:
        raise InputError(where, None, "snapshot_id", f"{snapshot_id} is not a committed snapshot of "
                         f"{dataset}/{day} (list them with `datafactory lake snapshots`)")
    if found.retired_at is not None:
        raise InputError(where, None, "snapshot_id", f"{snapshot_id} was removed by retention on "
                         f"{found.retired_at:%Y-%m-%d %H:%M}")
    try:
        record = read_record(lake, dataset, day, snapshot_id, found.record_sha256)
        check_files(lake, dataset, day, record, deep=True)
    except LakeError as exc:
        raise InputError(exc.where, None, "snapshot_id", str(exc).removeprefix(f"{exc.where}: ")) from None
    return record


def restore_identity(engine: Engine, dataset: str, day: date, record: dict[str, Any], reason: str, operator: str,
                     flow_run_id: str | None) -> RunIdentity:
    """The restore runs as the batch that produced the snapshot (same inputs, same fingerprint)."""
    with reading(engine) as conn:
        batch = ledger.batch(conn, str(record.get("batch_id")))
    if batch is None:
        raise InputError(f"snapshot {record['snapshot_id']}", None, "batch_id",
                         f"batch {record.get('batch_id')!r} is unknown to this warehouse; restore needs the "
                         "warehouse that wrote the snapshot")
    return RunIdentity(
        dataset=dataset, partition_key=day, batch_id=batch.batch_id, run_id=ledger.new_run_id(),
        fingerprint=batch.source_fingerprint, manifest_ids=tuple(record.get("manifest_ids", [])),
        action=Action.RESTORE.value, mode=Mode.EXECUTE.value, reason_code=reason, operator=operator,
        flow_run_id=flow_run_id,
    )


def lake_events(lake: Lake, spec: DatasetSpec, entities: set[str],
                records: dict[date, dict[str, Any]]) -> pl.DataFrame:
    """The events of these entities in the given snapshots (one per partition), tagged with partition and batch."""
    frames = []
    wanted = pl.Series(sorted(entities), dtype=pl.String).implode()
    for day, record in sorted(records.items()):
        rows = conform_to_contract(spec, read_files(lake, spec.name, day, record))
        if rows.height == 0:
            continue
        frames.append(rows.filter(pl.col(spec.entity_key).is_in(wanted))
                      .with_columns(pl.lit(day.isoformat()).alias("_partition_key"),
                                    pl.lit(record.get("batch_id", "")).alias("_batch_id")))
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()


def silver_from_events(spec: DatasetSpec, events: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """Per entity, the greatest of the events' earliest deliveries, shaped as silver rows."""
    if events.height == 0:
        return pl.DataFrame(schema={c.name: pl.String for c in silver_table(spec).columns}).head(0)
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
    silver = silver_table(spec)
    keys = stage_keys(conn, "_stg_restore", entities)
    conn.execute(delete(silver).where(silver.c[spec.entity_key].in_(select(keys.c.event_id))))
    drop_temp(conn, keys.name)
    if rows.height:
        bulk_load(conn, silver, rows)


def silver_from_partition(conn: Connection, spec: DatasetSpec, partition: str) -> set[str]:
    """Entities whose silver row came from this partition: they may change when its snapshot does."""
    silver = silver_table(spec)
    return set(conn.execute(select(silver.c[spec.entity_key]).where(silver.c._partition_key == partition))
               .scalars().all())


def restore_partition(engine: Engine, lake: Lake, spec: DatasetSpec, who: RunIdentity, record: dict[str, Any],
                      heartbeat_s: float = HEARTBEAT_S) -> Committed:
    """Under the partition lock, one transaction: silver of the touched entities rebuilt from every
    partition's current snapshot (the target for this one), checks, the target made current, ledger.
    Then the lake's marker follows. Touched: the target's entities and those whose silver row came from
    this partition (the snapshot being replaced may be the damaged thing, so it is not read)."""
    day = who.partition_key
    holder = lambda: ledger.describe_holder(engine, who.dataset, who.partition)  # noqa: E731
    with partition_lock(engine, who.dataset, who.partition, holder):
        attempt = ledger.start_run(engine, who)
        committed = False
        try:
            with ledger.heartbeat(engine, who.run_id, heartbeat_s), engine.begin() as conn:
                restored = conform_to_contract(spec, read_files(lake, spec.name, day, record))
                entities = silver_from_partition(conn, spec, who.partition)
                if restored.height:
                    entities |= set(restored[spec.entity_key].to_list())
                others = other_current_records(conn, lake, spec.name, day)
                now = datetime.now(timezone.utc)
                rows = silver_from_events(spec, lake_events(lake, spec, entities, {**others, day: record}), now)
                in_snapshot = restored[spec.entity_key].n_unique() if restored.height else 0
                counts = RunCounts(declared_records=restored.height, total=restored.height, valid=restored.height,
                                   bronze_existing=restored.height, distinct_entities=in_snapshot,
                                   silver_updated=in_snapshot)
                replace_silver(conn, spec, sorted(entities), rows)
                _, window_end = partition_window(day)
                newest = restored[spec.ordering_column].max() if restored.height else None
                observed = checks.observe(conn, spec, who, counts,
                                          restored[spec.entity_key] if restored.height else pl.Series(dtype=pl.String),
                                          newest, window_end, {}, 0)  # type: ignore[arg-type]
                outcomes = checks.evaluate(spec.checks, observed)
                checks.record_results(conn, who, outcomes, now)
                held = bool(checks.blocking(outcomes))
                ledger.set_current_snapshot(conn, spec.name, who.partition, record["snapshot_id"])
                ledger.finish_run(conn, who, "held" if held else "succeeded", counts.model_dump(), restored.height,
                                  detail=f"restored snapshot {record['snapshot_id']}; {len(entities)} entities "
                                  "rebuilt from the lake")
            committed = True
        except BaseException as exc:
            if not committed:
                ledger.fail_run(engine, who, f"{type(exc).__name__}: {exc}")
            raise
        note = settle_lake(engine, lake, spec.name, day)
    return Committed(WriteResult(silver_updated=in_snapshot), 0, who, attempt, counts, outcomes,
                     record, lake_note=note)


def other_current_records(conn: Connection, lake: Lake, dataset: str, day: date) -> dict[date, dict[str, Any]]:
    """Every other partition's current snapshot record, as the ledger committed it; a damaged one fails
    the restore (restore that partition first)."""
    shas = {r.snapshot_id: r.record_sha256 for r in ledger.snapshot_records(conn, dataset, retained_only=False)}
    return {date.fromisoformat(p): read_record(lake, dataset, date.fromisoformat(p), i, shas.get(i))
            for p, i in sorted(ledger.current_snapshots(conn, dataset).items()) if p != day.isoformat()}
