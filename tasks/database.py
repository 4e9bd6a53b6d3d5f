"""Warehouse connections: one engine per URL, schema created on first use, dialect quirks handled here."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Index, Table, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from schemas.tables import warehouse_tables
from tasks.errors import InputError, SchemaMismatchError, printable

SQLITE_BUSY_TIMEOUT_S = 600
SCHEMA_LOCK_KEY = 0x0DF5C4E3A  # advisory lock taken while creating the factory's tables
# SQLite transactions: writers BEGIN IMMEDIATE (a second writer waits for the first, as PostgreSQL's
# lock does); readers BEGIN deferred and never wait behind a writer (WAL); "autocommit" connections
# issue no BEGIN at all (the heartbeat: one statement, never queued behind our own write transaction).
TRANSACTION = "factory_transaction"
READ, AUTOCOMMIT = "read", "autocommit"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        kind = connection.get_execution_options().get(TRANSACTION)
        if kind != AUTOCOMMIT:
            connection.exec_driver_sql("BEGIN" if kind == READ else "BEGIN IMMEDIATE")


def _switch_to_wal(cursor: Any) -> None:
    """PRAGMA journal_mode=WAL, waiting while another connection holds the file: SQLite answers "database
    is locked" at once there (no busy handler), as when two first connections to a new file race."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def safe_url(url: str) -> str:
    """A warehouse URL fit for a message: the password hidden; the text itself when it does not parse."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return printable(url)


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """The engine for a warehouse URL, its tables at the code's revision (tasks/migrations.py) and every
    table created if missing.

    The checks read without taking SQLite's write lock, so a command that only reads (status, checks,
    health) never waits behind a run that is writing."""
    engine = open_engine(url)
    _prepare(engine)
    return engine


def open_engine(url: str) -> Engine:
    """A new engine for a warehouse URL, as it is: no table created, no revision checked (`db upgrade`)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InputError(printable(url), None, "FACTORY_DATABASE_URL",
                         "is not a database URL (sqlite:///path or postgresql+psycopg://user@host/db)") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise InputError(safe_url(url), None, "FACTORY_DATABASE_URL",
                         f"{parsed.get_backend_name()} is not a supported warehouse (sqlite, postgresql)")
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        raise InputError(safe_url(url), None, "FACTORY_DATABASE_URL",
                         f"driver {parsed.get_driver_name()} is not installed: use postgresql+psycopg://")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(parsed.database, None, "FACTORY_DATABASE_URL",
                                 f"cannot create its folder: {exc.strerror or exc}") from None
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        _configure_sqlite(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def _prepare(engine: Engine) -> None:
    from tasks import migrations

    with reading(engine) as conn:
        behind = migrations.needs_upgrade(conn)
    if behind is not None:
        if is_postgres(engine):  # never changed behind its operator's back
            with reading(engine) as conn:
                raise SchemaMismatchError(migrations.behind_message(conn, behind))
        with engine.begin() as conn:  # the embedded SQLite warehouse upgrades itself (README, *Settings*)
            migrations.upgrade(conn)
    tables = warehouse_tables()
    with reading(engine) as conn:
        missing = [t for t in tables if not engine.dialect.has_table(conn, t.name)]
        unindexed = _missing_indexes(conn, [t for t in tables if t not in missing])
    if missing or unindexed:
        with engine.begin() as conn:
            if is_postgres(engine):  # two first runs at once: one creates, the other then finds the tables
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
            new_warehouse = not engine.dialect.has_table(conn, "ingest_run")
            for table in missing:  # checkfirst: another process may have made some
                table.create(conn, checkfirst=True)
            for index in unindexed:  # an index added since the warehouse was created
                index.create(conn, checkfirst=True)
            if new_warehouse:  # created at the code's revision
                migrations.stamp_head(conn)


def _missing_indexes(conn: Connection, tables: list[Table]) -> list[Index]:
    found: list[Index] = []
    inspector = inspect(conn)
    for table in tables:
        if table.indexes:
            present = {i["name"] for i in inspector.get_indexes(table.name)}
            found += [i for i in table.indexes if i.name not in present]
    return found


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def reading(engine: Engine) -> Connection:
    """A connection for reads only: on SQLite it does not take the write lock."""
    return engine.connect().execution_options(**{TRANSACTION: READ})


@contextmanager
def writing_briefly(engine: Engine, wait_s: float = 2.0) -> Iterator[Connection]:
    """A write transaction that waits at most `wait_s` for another writer, then raises OperationalError:
    for bookkeeping a later call can redo (verdicts), never for a partition's data."""
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        if not is_postgres(engine):
            raw.execute(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")
        try:
            with conn.begin():
                if is_postgres(engine):
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(wait_s * 1000)}ms'")
                yield conn
        finally:
            if not is_postgres(engine):
                raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")


@contextmanager
def probing_by_index(conn: Connection) -> Iterator[None]:
    """Join a small staged key list to a large keyed table by index lookups, not by hashing the table.

    Inside a write, the table's statistics do not know the rows this transaction added, and PostgreSQL
    may scan and hash all of it for every chunk of a partition (quadratic over its chunks); probing
    the primary key costs the same per key however large the table grows. SQLite always probes."""
    if not is_postgres(conn.engine):
        yield
        return
    before = conn.exec_driver_sql("SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin')").one()
    conn.exec_driver_sql("SET LOCAL enable_hashjoin = off")
    conn.exec_driver_sql("SET LOCAL enable_mergejoin = off")
    yield  # on an error the transaction rolls back, and SET LOCAL with it
    conn.exec_driver_sql("SELECT set_config('enable_hashjoin', %(h)s, true), set_config('enable_mergejoin', %(m)s, true)",
                         {"h": before[0], "m": before[1]})


def autocommitting(engine: Engine) -> Connection:
    """A connection whose statements commit one by one (PostgreSQL: AUTOCOMMIT; SQLite: no BEGIN)."""
    conn = engine.connect()
    if is_postgres(engine):
        return conn.execution_options(isolation_level="AUTOCOMMIT")
    return conn.execution_options(**{TRANSACTION: AUTOCOMMIT})
