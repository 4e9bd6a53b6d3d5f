"""Dataset tables evolve with their contract: the contract each dataset's tables hold, and a log of changes.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

metadata = MetaData()
Timestamp = DateTime(timezone=True)

Table(
    "dataset_contract",
    metadata,
    Column("dataset", String(64), primary_key=True),
    Column("fingerprint", String(16), nullable=False),
    Column("fields", Text, nullable=False),
    Column("applied_at", Timestamp, nullable=False),
)
Table(
    "schema_change",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset", String(64), nullable=False, index=True),
    Column("field", Text, nullable=False),
    Column("change", String(24), nullable=False),
    Column("before", Text),
    Column("after", Text),
    Column("from_fingerprint", String(16), nullable=False),
    Column("to_fingerprint", String(16), nullable=False),
    Column("how", Text, nullable=False),
    Column("run_id", String(36)),
    Column("operator", String(128), nullable=False),
    Column("applied_at", Timestamp, nullable=False),
)


def upgrade() -> None:
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
