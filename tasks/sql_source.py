"""Reading a window of an SQL table (schemas/sources.py SqlSource) in (cursor, key) order.

The source's clock, the newest cursor value it holds and the window's rows are read in one transaction
(REPEATABLE READ on PostgreSQL: one snapshot), so the window's end (clock minus settle) and the rows
agree: a row a writer has not committed yet is not in this snapshot, and its cursor value (set when the
writer wrote it, so older than its commit) is re-read by a later pull's lookback. Rows stream with
`yield_per`; each page's token is the (cursor, key) of its last row, and a resumed pull reads the rows
after it (keyset pagination), so no page is read twice or skipped.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import MetaData, Table, create_engine, func, select, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from schemas.sources import SqlSource
from tasks.errors import TransientError
from tasks.http_source import SourceError
from tasks.ledger import as_utc


@dataclass(frozen=True)
class SqlPage:
    records: list[dict[str, Any]]
    token_after: str | None  # the page's last (cursor, key); None: the window is read


def _wire(value: Any) -> Any:
    """A column value as a JSON record carries it (timestamps as ISO-8601 UTC text, decimals exact)."""
    if isinstance(value, datetime):
        return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if value is None or isinstance(value, (str, int, bool, list, dict)):
        return value
    return str(value)  # UUID, time, interval, inet…: their text


def _utc(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite's CURRENT_TIMESTAMP: 'YYYY-MM-DD HH:MM:SS', UTC
        value = datetime.fromisoformat(value)
    return as_utc(value)


def _token(cursor: Any, key: Any) -> str:
    return json.dumps([_wire(cursor) if not isinstance(cursor, str) else cursor, key], default=str)


def _table(conn: Connection, source: SqlSource) -> Table:
    try:
        return Table(source.table, MetaData(), schema=source.schema, autoload_with=conn)
    except NoSuchTableError:
        raise SourceError(f"{source.table}: no such table in the source") from None


class SqlWindow:
    """One transaction on the source: its clock, then the rows of a window, page by page."""

    def __init__(self, url: str, source: SqlSource) -> None:
        self.source = source
        self.engine = create_engine(url, pool_pre_ping=True)
        self._conn: Connection | None = None

    def __enter__(self) -> "SqlWindow":
        try:
            conn = self.engine.connect()
            if self.engine.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            conn.begin()
            if self.engine.dialect.name == "postgresql":
                # a `timestamp without time zone` column holds UTC (as our bounds and _wire assume) only if
                # the session says so: a server in Europe/Berlin would shift the window by two hours
                conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
            self._conn = conn
            self.table = _table(conn, self.source)
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise TransientError(f"sql source {self.engine.url.render_as_string(hide_password=True)}: {exc}".splitlines()[0]) from None
        for name in (self.source.cursor_field, self.source.key_field):
            if name not in self.table.c:
                raise SourceError(f"{self.source.table}: no column {name!r} (the source's cursor or key)")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.rollback()
            self._conn.close()
        self.engine.dispose()

    @property
    def conn(self) -> Connection:
        assert self._conn is not None
        return self._conn

    def clock(self) -> datetime:
        """The source's time, in this snapshot (PostgreSQL: the transaction's start)."""
        return _utc(self.conn.execute(select(func.current_timestamp())).scalar_one())

    def newest(self) -> datetime | None:
        value: Any = self.conn.execute(select(func.max(self.table.c[self.source.cursor_field]))).scalar_one()
        return None if value is None else _utc(value)

    def pages(self, window: tuple[datetime, datetime], after: str | None) -> Iterator[SqlPage]:
        cursor, key = self.table.c[self.source.cursor_field], self.table.c[self.source.key_field]
        query = select(self.table).where(cursor >= self._bound(window[0]), cursor < self._bound(window[1]))
        if after is not None:
            last_cursor, last_key = json.loads(after)
            query = query.where(tuple_(cursor, key) > tuple_(self._bound(_utc(datetime.fromisoformat(
                last_cursor.replace("Z", "+00:00")))), last_key))
        result = self.conn.execution_options(yield_per=self.source.page_size).execute(query.order_by(cursor, key))
        for rows in result.mappings().partitions(self.source.page_size):
            records = [{name: _wire(value) for name, value in row.items()} for row in rows]
            last = rows[-1]
            yield SqlPage(records, _token(last[self.source.cursor_field], last[self.source.key_field]))

    def _bound(self, moment: datetime) -> Any:
        """A window bound as the cursor column compares: SQLite keeps timestamps as text without a zone."""
        if self.engine.dialect.name == "sqlite":
            return moment.astimezone(timezone.utc).replace(tzinfo=None)
        return moment

