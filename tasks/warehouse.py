"""Write one partition to the warehouse in one transaction: bronze, silver, quarantine (DESIGN section 7).

The batch's keys are staged and compared with bronze under the partition lock (tasks/locks.py, held by
the caller for the whole attempt); tasks/dedup.py decides which delivery of each event wins; winning
rows are written once; silver goes through tasks/silver.py.
Both databases run the same SQL; only how frames reach a table differs (tasks/staging.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Callable

import polars as pl

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    String,
    Table,
    and_,
    delete,
    exists,
    false,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.exc import IntegrityError

from schemas.datasets import DatasetSpec
from schemas.reason_codes import QuarantineReason
from schemas.tables import bronze_table
from schemas.tables import quarantine as quarantine_table
from schemas.tables import redelivery
from tasks.database import probing_by_index
from tasks.dedup import EXISTING_SCHEMA, first_versions, resolve_versions
from tasks.errors import TransientError
from tasks.ledger import RunIdentity, succeeded_with
from tasks.merging import Merging
from tasks.silver import SilverCandidates, rebuild_silver, silver_candidates, write_silver
from tasks.sql import insert_for, temp_table
from tasks.staging import bulk_load, drop_stages, stage, stage_keys
from tasks.validate import ValidatedBatch, partition_window

log = logging.getLogger(__name__)


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


# --- bronze --------------------------------------------------------------------------------------

def _bronze_frame(spec: DatasetSpec, events: pl.DataFrame, who: RunIdentity, now: datetime) -> pl.DataFrame:
    table = bronze_table(spec)
    return events.with_columns(
        pl.lit(who.partition).alias("_partition_key"),
        pl.lit(who.batch_id).alias("_batch_id"),
        pl.lit(now).dt.convert_time_zone("UTC").alias("_ingested_at"),
    ).select([c.name for c in table.columns])


def _chunks(keys: list[str], size: int = 500) -> list[list[str]]:
    return [keys[i:i + size] for i in range(0, len(keys), size)]


def _entities_of(conn: Connection, spec: DatasetSpec, keys: list[str]) -> list[str]:
    bronze = bronze_table(spec)
    entities: list[str] = []
    for chunk in _chunks(keys):
        entities += conn.execute(select(bronze.c[spec.entity_key]).distinct()
                                 .where(bronze.c[spec.event_key].in_(chunk))).scalars().all()
    return entities


REDELIVERY_COLUMNS = ("dataset", "event_id", "content_hash", "delivery_key", "partition_key", "batch_id",
                      "manifest_id", "source_uri", "line_number", "raw_payload")
RECORD_IDENTITY = ("dataset", "manifest_id", "source_uri", "line_number")  # one delivered line of one manifest


def _insert_latest_version(conn: Connection, table: Table, rows: Select[Any], columns: list[str],
                           changed: Callable[[Any], ColumnElement[bool]]) -> int:
    """INSERT ... SELECT, and for a record's line delivered again: a rerun of the same content writes
    nothing; a line whose content changed since (a manifest re-delivered with edited files) replaces the
    earlier verdict, so the record as it is now is never dropped. Returns the rows written."""
    # `WHERE true`: SQLite would read the ON of ON CONFLICT as a join of the SELECT without it
    insert = insert_for(conn, table).from_select(columns, rows.where(true()))
    result = conn.execute(insert.on_conflict_do_update(
        index_elements=[table.c[c] for c in RECORD_IDENTITY],
        set_={c: insert.excluded[c] for c in columns if c not in RECORD_IDENTITY},
        where=changed(insert.excluded)).execution_options(preserve_rowcount=True))  # kept for INSERTs too
    return max(result.rowcount, 0)


def _redelivery_changed(excluded: Any) -> ColumnElement[bool]:
    return or_(redelivery.c.content_hash != excluded.content_hash, redelivery.c.event_id != excluded.event_id)


def _copy_bronze_rows_to_redelivery(conn: Connection, spec: DatasetSpec, keys: Table) -> None:
    b = bronze_table(spec)
    rows = select(literal(spec.name, String()), b.c[spec.event_key], b.c._content_hash, b.c._delivery_key,
                  b.c._partition_key, b.c._batch_id, b.c._manifest_id, b.c._source_uri, b.c._line_number,
                  b.c._raw_payload).where(b.c[spec.event_key].in_(select(keys.c.event_id)))
    _insert_latest_version(conn, redelivery, rows, list(REDELIVERY_COLUMNS), _redelivery_changed)


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
    staged = stage(conn, "_stg_copies", redelivery, frame)
    _insert_latest_version(conn, redelivery, select(*[staged.c[c] for c in REDELIVERY_COLUMNS]),
                           list(REDELIVERY_COLUMNS), _redelivery_changed)


def derive_conflicts(conn: Connection, spec: DatasetSpec, keys: Table, now: datetime) -> None:
    """Quarantine exactly the copies of these events whose content differs from the bronze row."""
    reason = QuarantineReason.CONFLICTING_DUPLICATE.value
    b, r, q = bronze_table(spec), redelivery, quarantine_table
    conflicting = and_(r.c.dataset == spec.name, r.c.content_hash != b.c._content_hash)
    still_conflicting = select(literal(1)).select_from(r.join(b, b.c[spec.event_key] == r.c.event_id)).where(
        conflicting, r.c.dataset == q.c.dataset, r.c.manifest_id == q.c.manifest_id, r.c.source_uri == q.c.source_uri,
        r.c.line_number == q.c.line_number)
    # rows stay untouched while they are still conflicting: a rerun rewrites nothing
    conn.execute(delete(q).where(q.c.dataset == spec.name, q.c.reason_code == reason,
                                 q.c.event_id.in_(select(keys.c.event_id)), ~exists(still_conflicting)))
    columns = ["dataset", "partition_key", "batch_id", "manifest_id", "source_uri", "line_number", "reason_code",
               "detail", "event_id", "raw_payload", "quarantined_at"]
    rows = select(r.c.dataset, r.c.partition_key, r.c.batch_id, r.c.manifest_id, r.c.source_uri, r.c.line_number,
                  literal(reason, String()), literal(f"{spec.event_key}: content differs from the earliest delivery "
                                                     "of this event", String()),
                  r.c.event_id, r.c.raw_payload, literal(now, q.c.quarantined_at.type)).select_from(
        r.join(b, b.c[spec.event_key] == r.c.event_id)).where(conflicting, r.c.event_id.in_(select(keys.c.event_id)))
    insert = insert_for(conn, q).from_select(columns, rows.where(true()))
    conn.execute(insert.on_conflict_do_nothing(index_elements=[q.c[c] for c in RECORD_IDENTITY]))


# --- quarantine ----------------------------------------------------------------------------------

QUARANTINE_KEY_CHARS = 200  # quarantine.event_id is indexed: a rejected record's key may be any length


def insert_quarantine(conn: Connection, spec: DatasetSpec, rows: pl.DataFrame, who: RunIdentity, now: datetime) -> int:
    if rows.height == 0:
        return 0
    frame = rows.with_columns(
        # what the record claimed as its key, storable and indexable; the raw payload keeps it whole
        pl.col("event_id").str.replace_all("\x00", "\\u0000", literal=True).str.slice(0, QUARANTINE_KEY_CHARS),
        pl.col("detail").str.replace_all("\x00", "\\u0000", literal=True),
    ).with_columns(
        pl.lit(spec.name).alias("dataset"),
        pl.lit(who.partition).alias("partition_key"),
        pl.lit(who.batch_id).alias("batch_id"),
        pl.lit(now).dt.convert_time_zone("UTC").alias("quarantined_at"),
    ).select([c.name for c in quarantine_table.columns if c.name != "id"])
    staged = stage(conn, "_stg_quarantine", quarantine_table, frame)
    return _insert_latest_version(
        conn, quarantine_table, select(*[staged.c[c] for c in frame.columns]), frame.columns,
        lambda excluded: or_(quarantine_table.c.raw_payload != excluded.raw_payload,
                             quarantine_table.c.reason_code != excluded.reason_code))


# --- the transaction -----------------------------------------------------------------------------

@dataclass
class Tally:
    """What a partition's chunks add up to, beside the write counts: for the counts, checks and evidence."""

    total: int = 0
    declared_records: int = 0
    read_counts: Counter[str] = field(default_factory=Counter)
    field_sample: Counter[str] = field(default_factory=Counter)
    sampled_records: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    newest_event: datetime | None = None  # the greatest ordering value of the valid records
    _entities: Merging[pl.Series] = field(default_factory=lambda: Merging(lambda parts: pl.concat(parts).unique()))

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def add(self, batch: ValidatedBatch, spec: DatasetSpec) -> None:
        self.total += batch.total
        self.declared_records += batch.declared_records
        self.read_counts.update(batch.read_counts)
        self.field_sample.update(batch.field_sample)
        self.sampled_records += batch.sampled_records
        self.rejected_by_reason.update(batch.invalid_by_reason)
        if batch.events.height:
            newest = batch.events[spec.ordering_column].max()
            self.newest_event = newest if self.newest_event is None else max(self.newest_event, newest)  # type: ignore[type-var, assignment]
            self._entities.add(batch.events[spec.entity_key].unique())

    @property
    def entities(self) -> pl.Series | None:
        """The distinct entities of the valid records (the checks' touched entities)."""
        return self._entities.value


RUN_ACCEPTED = "_run_accepted"


class AcceptedKeys:
    """Event keys this run has accepted, for the chunks after the first: kept in a temp table of the
    transaction, not in memory, so memory does not grow with the partition. A partition of one chunk
    never creates it."""

    def __init__(self, conn: Connection, spec: DatasetSpec) -> None:
        self.conn, self.spec = conn, spec
        self.pending: pl.Series | None = None
        self.table: Table | None = None

    @property
    def created(self) -> bool:
        return self.table is not None

    def remember(self, keys: pl.Series) -> None:
        self.flush()
        self.pending = keys

    def flush(self) -> None:
        if self.pending is None or self.pending.len() == 0:
            return
        if self.table is None:  # probed by its key
            self.table = temp_table(self.conn, RUN_ACCEPTED, redelivery, ["event_id"], key=["event_id"])
        bulk_load(self.conn, self.table, self.pending.alias("event_id").to_frame())
        self.pending = None


def _existing_events(conn: Connection, spec: DatasetSpec, staged: Table,
                     accepted_before: AcceptedKeys) -> pl.DataFrame:
    """Bronze versions of the staged event keys: key, content hash, delivery key, and whether an
    earlier chunk of this run accepted the key."""
    bronze, key = bronze_table(spec), spec.event_key
    accepted_before.flush()
    joined = staged.join(bronze, bronze.c[key] == staged.c[key])
    done: ColumnElement[bool] = false()
    if accepted_before.table is not None:
        joined = joined.outerjoin(accepted_before.table, accepted_before.table.c.event_id == staged.c[key])
        done = accepted_before.table.c.event_id.is_not(None)
    with probing_by_index(conn):
        rows = conn.execute(select(bronze.c[key], bronze.c._content_hash, bronze.c._delivery_key, done)
                            .select_from(joined)).all()
    return pl.DataFrame(rows, schema=EXISTING_SCHEMA, orient="row")


def _write_chunk(conn: Connection, spec: DatasetSpec, batch: ValidatedBatch, who: RunIdentity, now: datetime,
                 result: WriteResult, tally: Tally, accepted_before: AcceptedKeys,
                 displaced_entities: set[str]) -> pl.DataFrame:
    """Bronze, copies, conflicts and quarantine for one chunk; returns its accepted events."""
    key = spec.event_key
    first = first_versions(batch.events, key)
    bronze = bronze_table(spec)
    staged = stage(conn, "_stg_events", bronze, first.select(key, "_content_hash", "_delivery_key"))
    resolution = resolve_versions(batch.events, _existing_events(conn, spec, staged, accepted_before), key)
    replaced = resolution.displaced + resolution.relineage
    displaced_entities.update(_entities_of(conn, spec, resolution.displaced))
    if replaced:
        # the later delivery leaves bronze but stays on record as a copy
        replaced_keys = stage_keys(conn, "_stg_replaced", replaced)
        _copy_bronze_rows_to_redelivery(conn, spec, replaced_keys)
        conn.execute(delete(bronze).where(bronze.c[key].in_(select(replaced_keys.c.event_id))))
    # Under the partition lock, which keys bronze lacks was decided against a staged key list, so the
    # winning rows go straight in: one write of the wide rows instead of staging them and copying again.
    winning = first.filter(~pl.col(key).is_in(pl.Series(resolution.bronze_kept, dtype=pl.String).implode()))
    try:
        bulk_load(conn, bronze, _bronze_frame(spec, winning, who, now))
    except IntegrityError as exc:
        raise TransientError(
            f"{spec.bronze_table}: another partition's run wrote some of these events first; retry resolves it"
        ) from exc
    result.bronze_inserted += resolution.bronze_inserted
    result.bronze_existing += resolution.bronze_existing
    result.bronze_displaced += len(resolution.displaced)
    result.duplicate_in_batch += resolution.duplicate_in_batch
    result.conflicting += resolution.conflicting.height

    accepted = resolution.accepted
    accepted_before.remember(accepted[key])
    window_start, _ = partition_window(who.partition_key)
    result.late_arriving += accepted.filter(pl.col(spec.partition_column) < window_start).height
    displaced_entities.update(accepted.filter(pl.col(key).is_in(resolution.displaced))[spec.entity_key].to_list())

    touched_keys = sorted(set(resolution.copies[key].to_list()) | set(replaced))
    if touched_keys:
        _insert_copies(conn, spec, resolution.copies, who)
        derive_conflicts(conn, spec, stage_keys(conn, "_stg_touched", touched_keys), now)

    tally.rejected_by_reason[QuarantineReason.CONFLICTING_DUPLICATE.value] += resolution.conflicting.height
    result.quarantine_inserted += insert_quarantine(conn, spec, batch.quarantine, who, now)
    return accepted


def write_partition(
    conn: Connection,
    spec: DatasetSpec,
    batches: Iterable[ValidatedBatch],
    who: RunIdentity,
    now: datetime,
    force: bool = False,
    before_silver: Callable[[], None] | None = None,
    on_accepted: Callable[[pl.DataFrame], None] | None = None,
) -> tuple[WriteResult, Tally]:
    """Bronze, silver and quarantine for one partition, inside the caller's transaction.

    The partition arrives in chunks (delivery order across them): each chunk's bronze, copies and
    quarantine are written as it comes, and its accepted events (one per event key: what the partition
    delivered) handed to `on_accepted` (the lake); silver is written once, at the end, from each
    entity's greatest event over all chunks. Returns the counts and the tally of the chunks (rejected
    records: the validator's plus the versions that lost to an event's earliest delivery). The caller
    commits, or rolls back for a dry run.
    """
    result, tally = WriteResult(), Tally()
    if not force and succeeded_with(conn, who.dataset, who.partition_key, who.fingerprint):
        result.skipped = True  # the run we waited for already produced exactly this
        return result, tally

    accepted_before = AcceptedKeys(conn, spec)
    displaced_entities: set[str] = set()
    with SilverCandidates(spec) as candidates:
        for batch in batches:
            tally.add(batch, spec)
            accepted = _write_chunk(conn, spec, batch, who, now, result, tally, accepted_before, displaced_entities)
            candidates.add(silver_candidates(spec, accepted, who, now))
            if on_accepted is not None:
                on_accepted(accepted)
            del batch, accepted
        if before_silver is not None:
            before_silver()
        result.distinct_entities = candidates.count
        for name, value in write_silver(conn, spec, candidates).items():
            setattr(result, name, value)
    rebuild_silver(conn, spec, sorted(displaced_entities), now)
    drop_stages(conn)
    return result, tally
