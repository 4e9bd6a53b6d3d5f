"""The warehouse adapter: statements are built from Table objects by SQLAlchemy Core (identifiers quoted
by the dialect, so a field named `order` or `Group` is just a column), and the few places SQLite and
PostgreSQL differ are decided here: which INSERT has ON CONFLICT, and how rows are bulk-loaded (COPY on
PostgreSQL, executemany on SQLite, both taking the text form schemas/kinds.py gives each value)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Connection, MetaData, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateTable, DropTable


def insert_for(conn: Connection, table: Table) -> Any:
    """INSERT with the dialect's ON CONFLICT clauses (`on_conflict_do_update(..., where=...)`)."""
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def quote(conn: Connection, name: str) -> str:
    """An identifier as the dialect spells it (for the statements Core does not build: COPY, ANALYZE)."""
    return conn.dialect.identifier_preparer.quote(name)


def temp_table(conn: Connection, name: str, like: Table, columns: Sequence[str] | None = None,
               key: Sequence[str] = ()) -> Table:
    """A new, empty temp table `name` with `like`'s columns (all, or the named ones), their types and
    collations included (PostgreSQL keys compare bytewise), primary key `key`, for the rest of the
    transaction."""
    names = [c.name for c in like.columns] if columns is None else list(columns)
    table = Table(name, MetaData(), *[Column(c, like.c[c].type, primary_key=c in key) for c in names],
                  prefixes=["TEMPORARY"])
    conn.execute(DropTable(table, if_exists=True))
    conn.execute(CreateTable(table))
    return table


def drop_temp(conn: Connection, *names: str) -> None:
    for name in names:
        conn.execute(DropTable(Table(name, MetaData()), if_exists=True))
