"""The factory's own tables (ledger, quarantine, checks, lake records, schema log) carry a revision.

Alembic migrations in schemas/migrations/ take a warehouse from any earlier revision to the code's.
A new warehouse is created at the code's revision. An embedded SQLite warehouse behind the code is
upgraded at first use (it is one file, used by one machine); a PostgreSQL warehouse is never changed
behind its operator's back: every command refuses with one line naming both revisions until
`datafactory db upgrade` runs. A warehouse ahead of the code (a newer release wrote it) is refused
on both. Release 0.1 recorded no revision: its tables are revision 0001.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from tasks.errors import SchemaMismatchError

VERSION_TABLE = "datafactory_revision"
BASELINE = "0001"  # release 0.1's tables, which recorded no revision
MIGRATIONS = Path(__file__).resolve().parent.parent / "schemas" / "migrations"
MIGRATION_LOCK_KEY = 0x0DF5C4E3B  # PostgreSQL advisory lock held while migrating


def _config(conn: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def recorded_revision(conn: Connection) -> str | None:
    """The revision the warehouse records; BASELINE for release 0.1's tables; None for no factory tables."""
    revision = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    if revision is None and conn.dialect.has_table(conn, "ingest_run"):
        return BASELINE
    return revision


def stamp_head(conn: Connection) -> None:
    """Record the code's revision on a warehouse whose factory tables were just created at it."""
    command.stamp(_config(conn), "head")


def upgrade(conn: Connection) -> tuple[str | None, str]:
    """Migrate the factory tables to the code's revision in the caller's transaction: (before, after)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
    before = recorded_revision(conn)
    if before is None:
        raise SchemaMismatchError("the warehouse has no factory tables to upgrade; any command creates them")
    refuse_if_ahead(conn, before)
    if before == BASELINE and MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}).get_current_revision() is None:
        command.stamp(_config(conn), BASELINE)
    command.upgrade(_config(conn), "head")
    return before, head_revision()


def refuse_if_ahead(conn: Connection, revision: str) -> None:
    if revision not in known_revisions():
        raise SchemaMismatchError(
            f"{_where(conn)}: the warehouse's factory tables are at revision {revision}, which this code does not "
            f"know (its newest is {head_revision()}): a newer data-factory wrote it; install that release")


def needs_upgrade(conn: Connection) -> str | None:
    """The warehouse's revision when it is behind the code's (None when current or new)."""
    revision = recorded_revision(conn)
    if revision is None or revision == head_revision():
        return None
    refuse_if_ahead(conn, revision)
    return revision


def behind_message(conn: Connection, revision: str) -> str:
    return (f"{_where(conn)}: the warehouse's factory tables are at revision {revision}, this code needs "
            f"{head_revision()}: run `datafactory db upgrade` (nothing was changed)")


def _where(conn: Connection) -> str:
    return conn.engine.url.render_as_string(hide_password=True)
