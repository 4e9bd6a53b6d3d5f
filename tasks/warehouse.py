"""Write one partition to the warehouse in one transaction: bronze, silver, quarantine (DESIGN section 7).

Both databases stage the batch in temp tables (PostgreSQL by COPY, SQLite by executemany) and then
run the same INSERT ... SELECT ... ON CONFLICT statements, so the semantics cannot drift apart.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Callable

import polars as pl
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from schemas.datasets import DatasetSpec, FieldKind
from schemas.reason_codes import QuarantineReason
from schemas.tables import BRONZE, SILVER, quarantine as quarantine_table
from tasks.database import is_postgres
from tasks.errors import PartitionLockedError, TransientError
from tasks.ledger import RunIdentity, running_holder, succeeded_with
from tasks.dedup import EXISTING_SCHEMA, first_versions, resolve_versions, take
from tasks.validate import ValidatedBatch, partition_window, typed_from_payloads

log = logging.getLogger(__name__)

COPY_CHUNK_ROWS = 20_000
LOCK_TIMEOUT_S = 600


@dataclass
class WriteResult:
    bronze_inserted: int = 0
    bronze_existing: int = 0
    bronze_displaced: int = 0  # a later delivery's conflicting version, moved to quarantine
    silver_inserted: int = 0
    silver_updated: int = 0
    silver_unchanged: int = 0
    silver_stale_skipped: int = 0
    late_arriving: int = 0  # accepted events dated before the partition window
    distinct_entities: int = 0  # entities among the accepted events: the silver outcomes add up to it
    duplicate_in_batch: int = 0  # further records with an accepted event's content
    conflicting: int = 0  # records whose content differs from their event's earliest delivery
    quarantine_inserted: int = 0
    skipped: bool = False  # another run already produced this partition from these inputs
    waited_for: str | None = None  # the run that held the partition lock while we waited

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# --- locking -----------------------------------------------------------------------------------

def _lock_key(dataset: str, partition: str) -> int:
    digest = hashlib.blake2b(f"{dataset}|{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_partition(conn: Connection, who: RunIdentity) -> str | None:
    """Hold the partition for this transaction; wait for another holder, naming it. SQLite's
    BEGIN IMMEDIATE already serialized writers, so there the holder is only named when we waited."""
    if not is_postgres(conn.engine):
        return None
    key = _lock_key(who.dataset, who.partition)
    if conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar_one():
        return None
    found = running_holder(conn, who)
    holder = found[1] if found else "another session"
    log.warning("partition %s/%s is held by %s; waiting", who.dataset, who.partition, holder)
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_S}s'"))
    try:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
    except OperationalError as exc:
        raise PartitionLockedError(
            f"partition {who.dataset}/{who.partition} is held by {holder}; gave up after {LOCK_TIMEOUT_S}s"
        ) from exc
    return holder


# --- staging -----------------------------------------------------------------------------------

def _sql_text_frame(frame: pl.DataFrame, postgres: bool) -> pl.DataFrame:
    """Columns as the text the databases parse: timestamps in one fixed-width UTC form, lists as JSON."""
    ts_format = "%Y-%m-%d %H:%M:%S.%6f" + ("+00" if postgres else "")
    exprs = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime):
            exprs.append(pl.col(name).dt.convert_time_zone("UTC").dt.strftime(ts_format))
        elif isinstance(dtype, pl.List):
            exprs.append(
                pl.struct(pl.col(name)).struct.json_encode()
                .str.strip_prefix(f'{{"{name}":').str.strip_suffix("}").alias(name)
            )
        else:
            exprs.append(pl.col(name))
    return frame.select(exprs)


def copy_text(rows: pl.DataFrame) -> str:
    """Rows in COPY's text format: tab-separated, \\N for null, backslash escapes in values."""
    special = rows.select(pl.col(pl.String).str.contains(r"[\\\t\n\r]").any())
    needs = [name for name, flag in special.row(0, named=True).items() if flag] if special.width else []
    escaped = rows.with_columns(
        pl.col(needs).str.replace_all("\\", "\\\\", literal=True)
        .str.replace_all("\t", "\\t", literal=True)
        .str.replace_all("\n", "\\n", literal=True)
        .str.replace_all("\r", "\\r", literal=True)
    ) if needs else rows
    return escaped.write_csv(include_header=False, separator="\t", quote_style="never", null_value="\\N")


def stage(conn: Connection, spec: DatasetSpec | None, name: str, like: str, frame: pl.DataFrame) -> None:
    """Create temp table `name` shaped like table `like` (frame's columns only) and load the frame."""
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
    conn.exec_driver_sql(f"CREATE TEMP TABLE {name} AS SELECT {columns} FROM {like} WHERE 1 = 0")
    bulk_load(conn, name, frame)


def bulk_load(conn: Connection, name: str, frame: pl.DataFrame) -> None:
    """Append a frame to a table: COPY on PostgreSQL, executemany on SQLite."""
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    postgres = is_postgres(conn.engine)
    rows = _sql_text_frame(frame, postgres)
    if postgres:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        # Small chunks let the server parse one while we format the next (two cores, both busy).
        with cursor.copy(f"COPY {name} ({columns}) FROM STDIN") as copy:
            for offset in range(0, rows.height, COPY_CHUNK_ROWS):
                copy.write(copy_text(rows.slice(offset, COPY_CHUNK_ROWS)))
    else:
        marks = ", ".join("?" for _ in frame.columns)
        for offset in range(0, rows.height, COPY_CHUNK_ROWS):
            conn.exec_driver_sql(f"INSERT INTO {name} ({columns}) VALUES ({marks})",
                                 rows.slice(offset, COPY_CHUNK_ROWS).rows())


def _drop_stages(conn: Connection) -> None:
    for name in ("_stg_events", "_stg_silver", "_stg_quarantine", "_stg_replaced", "_stg_touched", "_stg_copies",
                 "_stg_rebuilt"):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


# --- bronze --------------------------------------------------------------------------------------

def _bronze_frame(spec: DatasetSpec, events: pl.DataFrame, who: RunIdentity, now: datetime) -> pl.DataFrame:
    table = BRONZE[spec.name]
    return events.with_columns(
        pl.lit(who.partition).alias("_partition_key"),
        pl.lit(who.batch_id).alias("_batch_id"),
        pl.lit(now).dt.convert_time_zone("UTC").alias("_ingested_at"),
    ).select([c.name for c in table.columns])


def _existing_events(conn: Connection, spec: DatasetSpec) -> pl.DataFrame:
    """Bronze versions of the staged event keys: key, content hash and delivery key."""
    bronze, key = spec.bronze_table, spec.event_key
    rows = conn.exec_driver_sql(
        f'SELECT b."{key}", b._content_hash, b._delivery_key '
        f'FROM _stg_events s JOIN {bronze} b ON b."{key}" = s."{key}"'
    ).all()
    return pl.DataFrame(rows, schema=EXISTING_SCHEMA, orient="row")


def _chunks(keys: list[str], size: int = 500) -> list[list[str]]:
    return [keys[i:i + size] for i in range(0, len(keys), size)]


def _stage_keys(conn: Connection, name: str, keys: list[str]) -> None:
    stage(conn, None, name, "redelivery", pl.DataFrame({"event_id": keys}, schema={"event_id": pl.String}))


def _entities_of(conn: Connection, spec: DatasetSpec, keys: list[str]) -> list[str]:
    entities: list[str] = []
    for chunk in _chunks(keys):
        params = {f"k{i}": k for i, k in enumerate(chunk)}
        entities += conn.execute(text(
            f'SELECT DISTINCT "{spec.entity_key}" FROM {spec.bronze_table} '
            f'WHERE "{spec.event_key}" IN ({", ".join(":" + p for p in params)})'), params).scalars().all()
    return entities


REDELIVERY_COLUMNS = ("dataset", "event_id", "content_hash", "delivery_key", "partition_key", "batch_id",
                      "manifest_id", "source_uri", "line_number", "raw_payload")


def _copy_bronze_rows_to_redelivery(conn: Connection, spec: DatasetSpec, keys_table: str) -> None:
    conn.execute(text(
        f"INSERT INTO redelivery ({', '.join(REDELIVERY_COLUMNS)}) "
        f'SELECT :dataset, "{spec.event_key}", _content_hash, _delivery_key, _partition_key, _batch_id, '
        f"_manifest_id, _source_uri, _line_number, _raw_payload FROM {spec.bronze_table} "
        f'WHERE "{spec.event_key}" IN (SELECT event_id FROM {keys_table}) '
        "ON CONFLICT (dataset, manifest_id, source_uri, line_number) DO NOTHING"
    ), {"dataset": spec.name})


def _insert_copies(conn: Connection, spec: DatasetSpec, copies: pl.DataFrame, who: RunIdentity) -> None:
    if copies.height == 0:
        return
    frame = copies.select(
        pl.lit(spec.name).alias("dataset"), pl.col(spec.event_key).alias("event_id"),
        pl.col("_content_hash").alias("content_hash"), pl.col("_delivery_key").alias("delivery_key"),
        pl.lit(who.partition).alias("partition_key"), pl.lit(who.batch_id).alias("batch_id"),
        pl.col("_manifest_id").alias("manifest_id"), pl.col("_source_uri").alias("source_uri"),
        pl.col("_line_number").alias("line_number"), pl.col("_raw_payload").alias("raw_payload"),
    )
    stage(conn, spec, "_stg_copies", "redelivery", frame)
    names = ", ".join(REDELIVERY_COLUMNS)
    conn.exec_driver_sql(f"INSERT INTO redelivery ({names}) SELECT {names} FROM _stg_copies WHERE true "
                         "ON CONFLICT (dataset, manifest_id, source_uri, line_number) DO NOTHING")


def derive_conflicts(conn: Connection, spec: DatasetSpec, keys_table: str, now: datetime) -> None:
    """Quarantine exactly the copies of these events whose content differs from the bronze row."""
    reason = QuarantineReason.CONFLICTING_DUPLICATE.value
    key = spec.event_key
    still_conflicting = (
        f'SELECT 1 FROM redelivery r JOIN {spec.bronze_table} b ON b."{key}" = r.event_id '
        "WHERE r.dataset = quarantine.dataset AND r.manifest_id = quarantine.manifest_id "
        "AND r.source_uri = quarantine.source_uri "
        "AND r.line_number = quarantine.line_number AND r.content_hash <> b._content_hash"
    )
    # rows stay untouched while they are still conflicting: a rerun rewrites nothing
    conn.execute(text(
        f"DELETE FROM quarantine WHERE dataset = :dataset AND reason_code = '{reason}' "
        f"AND event_id IN (SELECT event_id FROM {keys_table}) AND NOT EXISTS ({still_conflicting})"
    ), {"dataset": spec.name})
    conn.execute(text(
        "INSERT INTO quarantine (dataset, partition_key, batch_id, manifest_id, source_uri, line_number, "
        "reason_code, detail, event_id, raw_payload, quarantined_at) "
        f"SELECT r.dataset, r.partition_key, r.batch_id, r.manifest_id, r.source_uri, r.line_number, '{reason}', "
        f"'{key}: content differs from the earliest delivery of this event', r.event_id, r.raw_payload, :now "
        f'FROM redelivery r JOIN {spec.bronze_table} b ON b."{key}" = r.event_id '
        f"WHERE r.dataset = :dataset AND r.content_hash <> b._content_hash "
        f"AND r.event_id IN (SELECT event_id FROM {keys_table}) "
        "ON CONFLICT (dataset, manifest_id, source_uri, line_number) DO NOTHING"
    ), {"dataset": spec.name, "now": now})


# --- silver --------------------------------------------------------------------------------------

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
    stage(conn, spec, "_stg_silver", spec.silver_table, candidates.select(entity, order, last))
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
        stage(conn, spec, "_stg_silver", spec.silver_table, candidates.filter(~is_new))
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
    stage(conn, spec, "_stg_rebuilt", spec.silver_table, rows)
    names = ", ".join(f'"{c}"' for c in rows.columns)
    conn.exec_driver_sql(f"INSERT INTO {spec.silver_table} ({names}) SELECT {names} FROM _stg_rebuilt")


# --- quarantine ----------------------------------------------------------------------------------

def insert_quarantine(conn: Connection, spec: DatasetSpec, rows: pl.DataFrame, who: RunIdentity, now: datetime) -> int:
    if rows.height == 0:
        return 0
    frame = rows.with_columns(
        pl.lit(spec.name).alias("dataset"),
        pl.lit(who.partition).alias("partition_key"),
        pl.lit(who.batch_id).alias("batch_id"),
        pl.lit(now).dt.convert_time_zone("UTC").alias("quarantined_at"),
    ).select([c.name for c in quarantine_table.columns if c.name != "id"])
    stage(conn, spec, "_stg_quarantine", "quarantine", frame)
    names = ", ".join(frame.columns)
    result = conn.exec_driver_sql(
        f"INSERT INTO quarantine ({names}) SELECT {names} FROM _stg_quarantine WHERE true "
        "ON CONFLICT (dataset, manifest_id, source_uri, line_number) DO NOTHING"
    )
    return max(result.rowcount, 0)


# --- the transaction -----------------------------------------------------------------------------

def write_partition(
    conn: Connection,
    spec: DatasetSpec,
    batch: ValidatedBatch,
    who: RunIdentity,
    now: datetime,
    force: bool = False,
    before_silver: Callable[[], None] | None = None,
) -> tuple[WriteResult, pl.DataFrame]:
    """Bronze, silver and quarantine for one partition, inside the caller's transaction.

    Returns the counts and the rejected records of this batch (the validator's plus the versions that
    lost to an event's earliest delivery). The caller commits, or rolls back for a dry run.
    """
    result = WriteResult(waited_for=lock_partition(conn, who))
    if not force and succeeded_with(conn, who.dataset, who.partition_key, who.fingerprint):
        result.skipped = True  # the run we waited for already produced exactly this
        return result, batch.quarantine.head(0)

    key = spec.event_key
    first = first_versions(batch.events, key)
    stage(conn, spec, "_stg_events", spec.bronze_table, first.select(key, "_content_hash", "_delivery_key"))
    resolution = resolve_versions(batch.events, _existing_events(conn, spec), key)
    replaced = resolution.displaced + resolution.relineage
    displaced_entities = _entities_of(conn, spec, resolution.displaced)
    if replaced:
        # the later delivery leaves bronze but stays on record as a copy
        _stage_keys(conn, "_stg_replaced", replaced)
        _copy_bronze_rows_to_redelivery(conn, spec, "_stg_replaced")
        conn.exec_driver_sql(f'DELETE FROM {spec.bronze_table} WHERE "{key}" IN (SELECT event_id FROM _stg_replaced)')
    # Under the partition lock, which keys bronze lacks was decided against a staged key list, so the
    # winning rows go straight in: one write of the wide rows instead of staging them and copying again.
    winning = first.filter(~pl.col(key).is_in(pl.Series(resolution.bronze_kept, dtype=pl.String).implode()))
    try:
        bulk_load(conn, spec.bronze_table, _bronze_frame(spec, winning, who, now))
    except IntegrityError as exc:
        raise TransientError(
            f"{spec.bronze_table}: another partition's run wrote some of these events first; retry resolves it"
        ) from exc
    result.bronze_inserted = resolution.bronze_inserted
    result.bronze_existing = resolution.bronze_existing
    result.bronze_displaced = len(resolution.displaced)
    result.duplicate_in_batch = resolution.duplicate_in_batch
    result.conflicting = resolution.conflicting.height

    if before_silver is not None:
        before_silver()
    accepted = resolution.accepted
    window_start, _ = partition_window(who.partition_key)
    result.late_arriving = accepted.filter(pl.col(spec.partition_column) < window_start).height
    candidates = silver_candidates(spec, accepted, who, now)
    result.distinct_entities = candidates.height
    for name, value in write_silver(conn, spec, candidates).items():
        setattr(result, name, value)
    touched = set(displaced_entities) | set(
        accepted.filter(pl.col(key).is_in(resolution.displaced))[spec.entity_key].to_list())
    rebuild_silver(conn, spec, sorted(touched), now)

    touched_keys = sorted(set(resolution.copies[key].to_list()) | set(replaced))
    if touched_keys:
        _insert_copies(conn, spec, resolution.copies, who)
        _stage_keys(conn, "_stg_touched", touched_keys)
        derive_conflicts(conn, spec, "_stg_touched", now)

    lost_rows = resolution.conflicting.select(
        pl.col("_manifest_id").alias("manifest_id"), pl.col("_source_uri").alias("source_uri"),
        pl.col("_line_number").alias("line_number"),
        pl.lit(QuarantineReason.CONFLICTING_DUPLICATE.value).alias("reason_code"),
        pl.lit(f"{key}: content differs from the earliest delivery of this event").alias("detail"),
        pl.col(key).alias("event_id"), pl.col("_raw_payload").alias("raw_payload"),
    )
    rejected = pl.concat([batch.quarantine, lost_rows.cast(batch.quarantine.schema)])
    result.quarantine_inserted = insert_quarantine(conn, spec, batch.quarantine, who, now)
    _drop_stages(conn)
    return result, rejected
