"""SQLAlchemy tables: the factory's own (quarantine, the ledger; versioned by schemas/migrations/) in
`metadata`, and bronze and silver per dataset, built from its contract (`dataset_tables`)."""

from __future__ import annotations

import json

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeEngine

from schemas.datasets import DATASETS, DatasetSpec, FieldSpec

metadata = MetaData()

# Keys that decide "newer wins" must compare bytewise on every database: PostgreSQL's default
# collation is locale-aware, SQLite's and Python's are not.
KeyString = String().with_variant(String(collation="C"), "postgresql")
Timestamp = DateTime(timezone=True)

LINEAGE_COLUMNS = ("_partition_key", "_batch_id", "_manifest_id", "_ingested_at")
BRONZE_EXTRA_COLUMNS = (
    "_content_hash",
    "_raw_payload",
    "_delivery_key",
    "_source_uri",
    "_line_number",
)


def _column_type(f: FieldSpec) -> TypeEngine:
    return f.rules.sql_type(f.dtype)


def _lineage() -> list[Column]:
    return [
        Column("_partition_key", String(10), nullable=False),
        Column("_batch_id", String(36), nullable=False),
        Column("_manifest_id", Text, nullable=False),
        Column("_ingested_at", Timestamp, nullable=False),
    ]


def _bronze(spec: DatasetSpec, metadata: MetaData) -> Table:
    """Bronze is the raw layer: the payload as delivered, plus the typed keys that dedup and ordering need."""
    columns = [
        Column(f.name, KeyString if f.name in (spec.event_key, spec.entity_key) else _column_type(f),
               primary_key=f.name == spec.event_key, nullable=f.nullable)
        for f in spec.bronze_fields
    ]
    return Table(
        spec.bronze_table,
        metadata,
        *columns,
        Column("_content_hash", String(32), nullable=False),
        Column("_raw_payload", Text, nullable=False),
        # (partition, produced_at, manifest, asset, line): the earliest delivery of an event wins
        Column("_delivery_key", KeyString, nullable=False),
        Column("_source_uri", Text, nullable=False),
        Column("_line_number", Integer, nullable=False),
        *_lineage(),
        # an entity's greatest event, one index probe away: the silver check and rebuild read no history
        Index(f"ix_{spec.bronze_table}_entity_order", spec.entity_key, spec.ordering_column, spec.event_key),
    )


def _silver(spec: DatasetSpec, metadata: MetaData) -> Table:
    columns = []
    for f in spec.fields:
        is_key = f.name in (spec.entity_key, spec.event_key)
        columns.append(
            Column(spec.silver_name(f.name), KeyString if is_key else _column_type(f),
                   primary_key=f.name == spec.entity_key, nullable=f.nullable)
        )
    return Table(spec.silver_table, metadata, *columns, *_lineage())


_BUILT: dict[tuple[str, ...], tuple[Table, Table]] = {}


def dataset_tables(spec: DatasetSpec) -> tuple[Table, Table]:
    """(bronze, silver) as the dataset's contract declares them: each contract its own MetaData, so a
    changed contract (schema evolution) gets tables of its own beside the registered one."""
    key = (spec.name, spec.bronze_table, spec.silver_table, json.dumps(spec.silver_renames, sort_keys=True),
           spec.event_key, spec.entity_key, spec.ordering_column, spec.contract_fingerprint)
    if key not in _BUILT:
        own = MetaData()
        _BUILT[key] = (_bronze(spec, own), _silver(spec, own))
    return _BUILT[key]


def bronze_table(spec: DatasetSpec) -> Table:
    return dataset_tables(spec)[0]


def silver_table(spec: DatasetSpec) -> Table:
    return dataset_tables(spec)[1]


BRONZE: dict[str, Table] = {name: bronze_table(spec) for name, spec in DATASETS.items()}
SILVER: dict[str, Table] = {name: silver_table(spec) for name, spec in DATASETS.items()}


def _delivered_at() -> list[Column]:
    """Where a record came from: its partition, batch, manifest, file and line."""
    return [
        Column("partition_key", String(10), nullable=False),
        Column("batch_id", String(36), nullable=False),
        Column("manifest_id", Text, nullable=False),
        Column("source_uri", Text, nullable=False),
        Column("line_number", Integer, nullable=False),
    ]


quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset", String(64), nullable=False),
    *_delivered_at(),
    Column("reason_code", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("event_id", Text, index=True),
    Column("raw_payload", Text, nullable=False),
    Column("quarantined_at", Timestamp, nullable=False),
    # one row per delivered record: a rerun or replay of the same manifest quarantines nothing twice
    UniqueConstraint("dataset", "manifest_id", "source_uri", "line_number", name="uq_quarantine_record"),
    Index("ix_quarantine_partition", "dataset", "partition_key"),
)

# Every valid delivery of an event that is not its bronze row: duplicates and conflicting versions.
# Conflicting-duplicate quarantine rows are derived from it against bronze, so they stay right when a
# partition processed late turns out to hold the earliest delivery of an event.
redelivery = Table(
    "redelivery",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset", String(64), nullable=False),
    Column("event_id", KeyString, nullable=False, index=True),
    Column("content_hash", String(32), nullable=False),
    Column("delivery_key", KeyString, nullable=False),
    *_delivered_at(),
    Column("raw_payload", Text, nullable=False),
    UniqueConstraint("dataset", "manifest_id", "source_uri", "line_number", name="uq_redelivery_record"),
)

ingest_batch = Table(
    "ingest_batch",
    metadata,
    Column("batch_id", String(36), primary_key=True),
    Column("dataset", String(64), nullable=False),
    Column("partition_key", String(10), nullable=False),
    Column("source_fingerprint", String(64), nullable=False),
    Column("manifest_ids", Text, nullable=False),  # JSON array
    Column("first_seen_at", Timestamp, nullable=False),
    UniqueConstraint("dataset", "partition_key", "source_fingerprint", name="uq_batch_inputs"),
)

ingest_run = Table(
    "ingest_run",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("batch_id", String(36), ForeignKey("ingest_batch.batch_id"), nullable=False),
    Column("dataset", String(64), nullable=False),
    Column("partition_key", String(10), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("action", String(16), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("reason_code", String(48), nullable=False),
    Column("status", String(16), nullable=False),  # running, succeeded, held, failed, skipped, abandoned
    Column("flow_run_id", String(36)),
    Column("started_at", Timestamp, nullable=False),
    Column("heartbeat_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp),
    Column("counts", Text),  # JSON of the run summary's counts
    Column("error", Text),
    UniqueConstraint("batch_id", "attempt", name="uq_run_attempt"),
    # a partition's attempts and a flow run's attempt are looked up on every run: by key, not by history
    Index("ix_ingest_run_partition", "dataset", "partition_key", "status"),
    Index("ix_ingest_run_flow_run", "flow_run_id"),
)

partition_state = Table(
    "partition_state",
    metadata,
    Column("dataset", String(64), primary_key=True),
    Column("partition_key", String(10), primary_key=True),
    Column("status", String(16), nullable=False),  # succeeded, failed, held
    Column("source_fingerprint", String(64), nullable=False),
    Column("batch_id", String(36), nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("output_count", Integer, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

decision_log = Table(
    "decision_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("decided_at", Timestamp, nullable=False),
    Column("action", String(16), nullable=False),
    Column("reason_code", String(48), nullable=False),
    Column("operator", String(128), nullable=False),
    Column("dataset", String(64), nullable=False),
    Column("partition_key", String(10), nullable=False),
    Column("batch_id", String(36)),
    Column("run_id", String(36)),
    Column("flow_run_id", String(36)),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text),
)

check_result = Table(
    "check_result",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset", String(64), nullable=False),
    Column("partition_key", String(10), nullable=False),
    Column("batch_id", String(36), nullable=False),
    Column("run_id", String(36), nullable=False, index=True),
    Column("check_name", String(48), nullable=False),
    Column("severity", String(8), nullable=False),  # warn, error
    Column("status", String(8), nullable=False),  # pass, warn, fail, skipped
    Column("observed", Float),
    Column("warn_above", Float),
    Column("error_above", Float),
    Column("detail", Text, nullable=False),
    Column("checked_at", Timestamp, nullable=False),
    UniqueConstraint("run_id", "check_name", name="uq_check_per_run"),
)

# The lake's commit record: the warehouse transaction that commits a partition also records the
# snapshot it wrote, so the warehouse is the decision and the lake's marker (manifest.json) follows it.
# A snapshot the ledger does not list was never committed: readers and restore ignore it, the next
# commit deletes it.
lake_snapshot = Table(
    "lake_snapshot",
    metadata,
    Column("snapshot_id", String(64), primary_key=True),
    Column("dataset", String(64), nullable=False),
    Column("partition_key", String(10), nullable=False),
    Column("run_id", String(64), nullable=False),  # the ledger run (or compaction) that committed it
    Column("rows", Integer, nullable=False),
    Column("files", Integer, nullable=False),
    Column("record_sha256", String(64), nullable=False),  # of _snapshots/{id}.json as written
    Column("committed_at", Timestamp, nullable=False),
    Column("retired_at", Timestamp),  # removed from the lake by retention
    Index("ix_lake_snapshot_partition", "dataset", "partition_key"),
)

lake_current = Table(
    "lake_current",
    metadata,
    Column("dataset", String(64), primary_key=True),
    Column("partition_key", String(10), primary_key=True),
    Column("snapshot_id", String(64), nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

# What the last verify of a partition found (tasks/verify.py): open findings make it untrusted until a
# later verify finds nothing or a run or restore commits a new state.
verify_finding = Table(
    "verify_finding",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset", String(64), nullable=False),
    Column("partition_key", String(10), nullable=False, index=True),
    Column("reason_code", String(48), nullable=False),
    Column("current", Integer, nullable=False),  # 1: about the current state (untrusted); 0: an older snapshot
    Column("location", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("found_at", Timestamp, nullable=False),
)


# What the warehouse's dataset tables hold now: the contract last applied to them (tasks/schema_evolution.py
# compares the code's contract with it before every write).
dataset_contract = Table(
    "dataset_contract",
    metadata,
    Column("dataset", String(64), primary_key=True),
    Column("fingerprint", String(16), nullable=False),
    Column("fields", Text, nullable=False),  # JSON: field -> kind as FieldSpec.describe() names it
    Column("applied_at", Timestamp, nullable=False),
)

# Every change applied to a dataset's tables, with what it was and what it became.
schema_change = Table(
    "schema_change",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset", String(64), nullable=False, index=True),
    Column("field", Text, nullable=False),
    Column("change", String(24), nullable=False),  # added, removed, kind_changed, now_required, now_nullable
    Column("before", Text),
    Column("after", Text),
    Column("from_fingerprint", String(16), nullable=False),
    Column("to_fingerprint", String(16), nullable=False),
    Column("how", Text, nullable=False),  # the statement or rebuild that applied it
    Column("run_id", String(36)),  # the run that applied it (additive changes), or none (schema apply)
    Column("operator", String(128), nullable=False),
    Column("applied_at", Timestamp, nullable=False),
)

# --- pulled sources (flows/pull.py) --------------------------------------------------------------------

# One pull of a source: its window, fixed when it starts (a resumed pull keeps it), and its outcome.
pull_run = Table(
    "pull_run",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("dataset", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    Column("direction", String(16), nullable=False),  # FORWARD, BACKFILL, REPLAY
    Column("window_start", Timestamp, nullable=False),
    Column("window_end", Timestamp, nullable=False),  # exclusive: the source's clock minus settle, or the day's end
    Column("source_clock", Timestamp),
    Column("status", String(16), nullable=False),  # RUNNING, LANDED, SUCCEEDED, FAILED
    Column("pages", Integer, nullable=False),
    Column("records", Integer, nullable=False),
    Column("already_ingested", Integer, nullable=False),
    Column("newest_seen", Timestamp),  # the newest cursor value the source showed, window or not
    Column("error", Text),
    Column("flow_run_id", String(36)),
    Column("started_at", Timestamp, nullable=False),
    Column("ended_at", Timestamp),
    Index("ix_pull_run_source", "dataset", "source", "started_at"),
)

# Every page a pull landed: the checkpoint a resumed pull continues after (batch_key is idempotent).
pull_page = Table(
    "pull_page",
    metadata,
    Column("batch_key", String(64), primary_key=True),  # {run_id}:{page number}
    Column("run_id", String(36), ForeignKey("pull_run.run_id"), nullable=False, index=True),
    Column("page", Integer, nullable=False),
    Column("token_before", Text),  # what asked for this page (page number, offset, token, URL, key)
    Column("token_after", Text),  # what asks for the next; null: this was the last page
    Column("record_count", Integer, nullable=False),  # landed: inside the window, not already in bronze
    Column("already_ingested", Integer, nullable=False),  # the same text bronze holds: nothing to land
    Column("attempts", Integer, nullable=False),  # 1 + the retries it took (throttling, 5xx)
    Column("newest_value", Timestamp),  # the page's newest (cursor, key) inside the window: where the cursor
    Column("newest_key", Text),  # may move once the pull's partitions are ingested
    Column("asset_uri", Text, nullable=False),
    Column("landed_at", Timestamp, nullable=False),
)

# The forward cursor of each pulled source: (value, key), moved only forward and only by compare-and-set.
source_cursor = Table(
    "source_cursor",
    metadata,
    Column("dataset", String(64), primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("cursor_value", Timestamp, nullable=False),
    Column("cursor_key", KeyString, nullable=False),
    Column("event_id", Integer, nullable=False),  # the cursor_event that set it
    Column("updated_at", Timestamp, nullable=False),
)

# Every cursor change, appended before the cursor moves (FORWARD), and every re-pull of a past window
# (BACKFILL, REPLAY: recorded, never moving the cursor back). The FORWARD events alone rebuild the cursor.
cursor_event = Table(
    "cursor_event",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("previous_value", Timestamp),
    Column("previous_key", Text),
    Column("new_value", Timestamp, nullable=False),
    Column("new_key", Text, nullable=False),
    Column("window_start", Timestamp, nullable=False),
    Column("window_end", Timestamp, nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("batch_key", String(64)),  # the page whose record set the new value
    Column("recorded_at", Timestamp, nullable=False),
    Index("ix_cursor_event_source", "dataset", "source", "id"),
)

# Marts (tasks/marts.py): each mart's gold table, each partition of each mart, the upstream snapshots it
# was computed from, and every computation. A mart's own snapshots live in lake_snapshot/lake_current under
# the mart's name.

# Each mart's gold table as last created: its grain and columns (name -> DuckDB type). A model whose columns
# changed re-creates the table once, under the mart's lock; the catalog reads the grains from here.
mart_table = Table(
    "mart_table",
    metadata,
    Column("mart", String(64), primary_key=True),
    Column("grain", String(64), nullable=False),
    Column("columns", Text, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

mart_partition = Table(
    "mart_partition",
    metadata,
    Column("mart", String(64), primary_key=True),
    Column("partition_key", String(10), primary_key=True),
    Column("status", String(16), nullable=False),  # succeeded, held, failed
    Column("model_fingerprint", String(64), nullable=False),  # the model file it was computed with
    Column("inputs_fingerprint", String(64), nullable=False),  # of its (upstream, partition, snapshot) list
    Column("snapshot_id", String(64)),  # its current lake snapshot (none while held before a first compute)
    Column("run_id", String(36), nullable=False),
    Column("rows", Integer),
    Column("held_by", Text),  # JSON list of held inputs ("upstream/partition") when an input holds it
    Column("detail", Text),  # why held or failed
    Column("updated_at", Timestamp, nullable=False),
)

mart_input = Table(
    "mart_input",
    metadata,
    Column("mart", String(64), primary_key=True),
    Column("partition_key", String(10), primary_key=True),
    Column("upstream", String(64), primary_key=True),
    Column("upstream_partition", String(10), primary_key=True),
    Column("snapshot_id", String(64), nullable=False),
    Column("good_fallback", Integer, nullable=False),  # 1: the input was held; its last good snapshot was read
    Index("ix_mart_input_upstream", "upstream", "upstream_partition"),
)

mart_run = Table(
    "mart_run",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("mart", String(64), nullable=False),
    Column("partition_key", String(10), nullable=False),
    Column("why", String(24), nullable=False),  # missing, stale, failed, released, operator_request
    Column("status", String(16), nullable=False),  # succeeded, held, failed
    Column("inputs", Text, nullable=False),  # JSON [[upstream, partition, snapshot], ...] it read
    Column("snapshot_id", String(64)),
    Column("rows", Integer),
    Column("flow_run_id", String(36)),
    Column("started_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp, nullable=False),
    Column("detail", Text),
    Index("ix_mart_run_partition", "mart", "partition_key"),
)

# the factory's own tables, versioned by the migrations in schemas/migrations/ (dataset tables are not)
FACTORY_TABLES = (quarantine, redelivery, ingest_batch, ingest_run, partition_state, decision_log, check_result,
                  lake_snapshot, lake_current, verify_finding, dataset_contract, schema_change, pull_run, pull_page,
                  source_cursor, cursor_event, mart_table, mart_partition, mart_input, mart_run)


def warehouse_tables() -> list[Table]:
    """Every table the code needs: the factory's own, then each registered dataset's bronze and silver."""
    return [*metadata.sorted_tables, *(t for name in sorted(DATASETS) for t in dataset_tables(DATASETS[name]))]
