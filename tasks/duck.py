"""DuckDB, as the marts and the catalog use it: an in-memory connection in UTC, and SQL quoting."""

from __future__ import annotations

from typing import Any


def quoted(name: str) -> str:
    """An identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A string literal (DuckDB's DDL takes no prepared parameters)."""
    return "'" + text.replace("'", "''") + "'"


def duckdb_connection() -> Any:
    """An in-memory DuckDB whose dates are UTC days whatever the machine's time zone."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con
