"""The factory's tables as release 0.1 created them (the baseline every later migration builds on).

A frozen copy, not an import of schemas/tables.py: that module moves on, this revision does not.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op
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

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

metadata = MetaData()
KeyString = String().with_variant(String(collation="C"), "postgresql")
Timestamp = DateTime(timezone=True)


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


def upgrade() -> None:
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
