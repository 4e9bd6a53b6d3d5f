"""Marts: each mart partition's state, the upstream snapshots it consumed, and its computations.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, Text

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

metadata = MetaData()
Timestamp = DateTime(timezone=True)

# Each mart's gold table as last created: its grain and columns (name -> DuckDB type). A model whose columns
# changed re-creates the table once, under the mart's lock; the catalog reads the grains from here.
Table(
    "mart_table",
    metadata,
    Column("mart", String(64), primary_key=True),
    Column("grain", String(64), nullable=False),
    Column("columns", Text, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

Table(
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

Table(
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

Table(
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


def upgrade() -> None:
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
