"""Pulled sources: pull runs and their pages (checkpoints), the forward cursor and its event log.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, DateTime, ForeignKey, Index, Integer, MetaData, String, Table, Text

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

metadata = MetaData()
Timestamp = DateTime(timezone=True)
KeyString = String().with_variant(String(collation="C"), "postgresql")

# One pull of a source: its window, fixed when it starts (a resumed pull keeps it), and its outcome.
Table(
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
Table(
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
Table(
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
Table(
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


def upgrade() -> None:
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
