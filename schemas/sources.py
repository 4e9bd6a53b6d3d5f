"""Where a dataset's records come from: delivered files (the default), or pulled from an HTTP API or an
SQL table behind a forward-only cursor (flows/pull.py).

A pulled source is declared with its dataset (`DatasetSpec(source=HttpSource(...))`). Its partitions are
the UTC days of its cursor field; a pull reads the window from the cursor minus `lookback` up to the
source's own clock minus `settle` (rows committed late, with an older cursor value, are re-read by the
next pull; the event key makes the overlap free), lands each page as a file with a manifest, and ingests
the days it touched exactly as delivered files are ingested.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


class Paging(StrEnum):
    PAGE_NUMBER = "page_number"  # ?page=1,2,… until a short or empty page
    OFFSET = "offset"  # ?offset=0,size,… until a short or empty page
    CURSOR_TOKEN = "cursor_token"  # the body names the next page's token; none ends
    LINK_HEADER = "link_header"  # the `Link: <…>; rel="next"` header names the next page's URL


@dataclass(frozen=True)
class PulledSource:
    """What every pulled source declares: its cursor (a timestamp field, with the primary key breaking
    ties) and how far behind the source's clock and the cursor a pull reads."""

    cursor_field: str  # a required timestamp field of the model: partitions are its UTC days
    key_field: str  # the record's primary key: the cursor is (cursor_field, key_field), compared strictly
    # the event key is built from these fields when the source has no event id (`id@updated_at`)
    event_key_from: tuple[str, ...] = ()
    lookback: timedelta = timedelta(hours=1)  # each pull re-reads this much before the cursor
    settle: timedelta = timedelta(minutes=5)  # the cursor never passes the source's clock minus this
    page_size: int = 100
    name: str = "default"  # one cursor per (dataset, source name)

    @property
    def kind(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class HttpSource(PulledSource):
    """A JSON API. `url` may be overridden per deployment: FACTORY_SOURCE_URLS='{"dataset": "http://…"}'.
    Auth: a bearer token from a Prefect Secret block (`auth_secret_block`) or an environment variable
    (`auth_env`); read at every pull, so a rotated credential is used by the next pull."""

    url: str = ""
    paging: Paging = Paging.PAGE_NUMBER
    records_path: str | None = "data"  # dotted path to the records in the body; None: the body is the list
    since_param: str | None = "updated_since"  # the window's start, ISO-8601 UTC; None: the API has no filter
    page_param: str = "page"  # page number, offset or cursor token
    size_param: str | None = "page_size"
    next_token_path: str = "next_cursor"  # CURSOR_TOKEN: the body's dotted path to the next token
    # the API's cursor tokens or next links are offsets in disguise (`?page=3`): a resumed pull reads its
    # window from the first page again, as it does for page-number and offset paging
    positional_tokens: bool = False
    auth_secret_block: str | None = None
    auth_env: str | None = None
    timeout_seconds: float = 30.0
    retries: int = 5  # per page, on 429, 5xx and connection errors only (Prefect task retries)
    backoff_seconds: float = 1.0  # the first retry's delay, doubling after (a Retry-After is waited out first)
    max_pages: int = 100_000  # a source that never stops paging is an error, not an endless run

    @property
    def kind(self) -> str:
        return "http"


@dataclass(frozen=True)
class SqlSource(PulledSource):
    """A table (or a view) on any SQLAlchemy URL, read in (cursor, key) order in one snapshot with the
    source's clock. `url` may be overridden: FACTORY_SOURCE_URLS='{"dataset": "postgresql+psycopg://…"}'."""

    url: str = ""
    table: str = ""
    schema: str | None = None

    @property
    def kind(self) -> str:
        return "sql"
