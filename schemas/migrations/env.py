"""Alembic environment for the factory's own tables (ledger, quarantine, checks, lake records, schema log).

Dataset tables (bronze, silver) are not migrated here: they evolve with their contract
(tasks/schema_evolution.py). Migrations run on the connection the caller hands over, inside its
transaction (tasks/migrations.py); the version lives in `datafactory_revision`, so a warehouse that
also holds another application's `alembic_version` is left alone."""

from __future__ import annotations

from alembic import context

from tasks.migrations import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, version_table=VERSION_TABLE,
                  transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
