"""Bulk movement of Polars frames into tables: COPY on PostgreSQL, executemany on SQLite; temp staging."""

from __future__ import annotations

import polars as pl
import psycopg
from sqlalchemy import Connection, Table
from sqlalchemy.exc import DBAPIError

from schemas.kinds import KINDS, kind_of
from schemas.tables import redelivery
from tasks.database import is_postgres
from tasks.sql import drop_temp, quote, temp_table

COPY_CHUNK_ROWS = 20_000  # small chunks let the server parse one while we format the next


def _sql_text_frame(frame: pl.DataFrame, postgres: bool) -> pl.DataFrame:
    """Columns as the text the databases parse, each by its kind (schemas/kinds.py): timestamps in one
    fixed-width UTC form, decimals and dates as text, lists as JSON."""
    exprs = []
    for name, dtype in frame.schema.items():
        try:
            rules = KINDS[kind_of(dtype)]
        except TypeError:  # lineage and ledger columns (Int64 line numbers, Int32) go as they are
            exprs.append(pl.col(name))
            continue
        exprs.append(rules.sql_text(pl.col(name), postgres).alias(name))
    return frame.select(exprs)


def copy_text(rows: pl.DataFrame) -> str:
    """Rows in COPY's text format: tab-separated, \\N for null, backslash escapes in values."""
    special = rows.select(pl.col(pl.String).str.contains(r"[\\\t\n\r]").any())
    needs = [name for name, flag in special.row(0, named=True).items() if flag] if special.width else []
    escaped = rows.with_columns(
        pl.col(needs).str.replace_all("\\", "\\\\", literal=True)
        .str.replace_all("\t", "\\t", literal=True)
        .str.replace_all("\n", "\\n", literal=True)
        .str.replace_all("\r", "\\r", literal=True)
    ) if needs else rows
    return escaped.write_csv(include_header=False, separator="\t", quote_style="never", null_value="\\N")


def stage(conn: Connection, name: str, like: Table, frame: pl.DataFrame) -> Table:
    """Temp table `name` with `like`'s columns that the frame has (their types), loaded with the frame."""
    staged = temp_table(conn, name, like, frame.columns)
    bulk_load(conn, staged, frame)
    return staged


def bulk_load(conn: Connection, table: Table, frame: pl.DataFrame) -> None:
    """Append a frame to a table: COPY on PostgreSQL, executemany on SQLite. Both take the text form of
    each value (schemas/kinds.py), so no driver or ORM type conversion stands between."""
    name = quote(conn, table.name)
    columns = ", ".join(quote(conn, c) for c in frame.columns)
    postgres = is_postgres(conn.engine)
    rows = _sql_text_frame(frame, postgres)
    if postgres:
        statement = f"COPY {name} ({columns}) FROM STDIN"
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            with cursor.copy(statement) as copy:
                for offset in range(0, rows.height, COPY_CHUNK_ROWS):
                    copy.write(copy_text(rows.slice(offset, COPY_CHUNK_ROWS)))
        except psycopg.Error as exc:  # the driver's own cursor: give callers SQLAlchemy's exception classes
            raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc
    else:
        marks = ", ".join("?" for _ in frame.columns)
        for offset in range(0, rows.height, COPY_CHUNK_ROWS):
            conn.exec_driver_sql(f"INSERT INTO {name} ({columns}) VALUES ({marks})",
                                 rows.slice(offset, COPY_CHUNK_ROWS).rows())


STAGES = ("_stg_events", "_stg_silver", "_stg_silver_rows", "_stg_quarantine", "_stg_replaced", "_stg_touched",
          "_stg_copies", "_stg_rebuilt", "_run_accepted")


def drop_stages(conn: Connection) -> None:
    drop_temp(conn, *STAGES)


def stage_keys(conn: Connection, name: str, keys: list[str]) -> Table:
    """Event or entity keys in a temp table of one column, `event_id`, typed as keys are (bytewise)."""
    return stage(conn, name, redelivery, pl.DataFrame({"event_id": keys}, schema={"event_id": pl.String}))
