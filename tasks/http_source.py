"""Reading one page of a JSON API (schemas/sources.py HttpSource): page number, offset, cursor token or
Link header paging, a bearer token from a Prefect Secret block or the environment.

`fetch_page_task` is the Prefect task a pull runs per page: Prefect retries it on throttling (429),
server errors (5xx) and connection errors only, with exponential backoff; a `Retry-After` the server
sends is waited out before the retry. Anything else (a 4xx, a body that is no JSON, records that are no
list) is a one-line error naming the URL and the page.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run
from prefect.tasks import exponential_backoff

from schemas.sources import HttpSource, Paging
from tasks.errors import FactoryError, TransientError
from tasks.materialize import retry_on_transient

MAX_RETRY_AFTER_S = 300.0  # a server asking for longer is treated as down: the pull fails and is resumed later


class SourceError(FactoryError):
    """The source answered something a pull cannot use; one line naming the URL and the page."""


@dataclass(frozen=True)
class Page:
    records: list[Any]
    next_token: str | None  # what asks for the next page; None: this was the last
    clock: datetime | None  # the source's clock (the response's Date header)
    attempts: int  # 1 + Prefect's retries of this page


def _dig(body: Any, path: str | None) -> Any:
    for part in (path.split(".") if path else []):
        body = body.get(part) if isinstance(body, dict) else None
    return body


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
        except (TypeError, ValueError):
            return None


def source_clock(response: httpx.Response) -> datetime | None:
    try:
        return parsedate_to_datetime(response.headers["Date"]).astimezone(timezone.utc)
    except (KeyError, TypeError, ValueError):
        return None


def bearer_token(source: HttpSource) -> str | None:
    """The credential, read now (a rotated secret is used by the next pull): a Prefect Secret block, else
    the environment variable the source names."""
    if source.auth_secret_block:
        from prefect.blocks.system import Secret

        return str(Secret.load(source.auth_secret_block).get())
    if source.auth_env:
        token = os.environ.get(source.auth_env)
        if not token:
            raise SourceError(f"{source.auth_env}: not set (the source's bearer token)")
        return token
    return None


def _request(source: HttpSource, url: str, token: str | None, window_start: datetime) -> tuple[str, dict[str, Any] | None]:
    """The URL and query of the page `token` names (None: the first page)."""
    if source.paging is Paging.LINK_HEADER and token is not None:
        return token, None  # the next link carries its whole query (httpx would replace it with params={})
    params: dict[str, Any] = {}
    if source.since_param:
        params[source.since_param] = window_start.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if source.size_param:
        params[source.size_param] = source.page_size
    if source.paging is Paging.PAGE_NUMBER:
        params[source.page_param] = token or "1"
    elif source.paging is Paging.OFFSET:
        params[source.page_param] = token or "0"
    elif source.paging is Paging.CURSOR_TOKEN and token is not None:
        params[source.page_param] = token
    return url, params


def _next_token(source: HttpSource, token: str | None, response: httpx.Response, body: Any, records: list[Any]) -> str | None:
    if source.paging is Paging.LINK_HEADER:
        link = response.links.get("next", {}).get("url")
        return str(response.url.join(link)) if link else None
    if source.paging is Paging.CURSOR_TOKEN:
        following = _dig(body, source.next_token_path)
        return None if following in (None, "") else str(following)
    if not records:  # an empty page is the last: a server may cap the page below the size we ask for
        return None
    if source.paging is Paging.PAGE_NUMBER:
        return str(int(token or "1") + 1)
    return str(int(token or "0") + len(records))


@cache
def _client() -> httpx.Client:
    """One client per process: its connections are kept alive between pages, and its TLS context is built
    once (building one per request cost more than fetching a local page)."""
    return httpx.Client()


def fetch_page(source: HttpSource, url: str, token: str | None, window_start: datetime, page: int) -> Page:
    """One page; raises TransientError (retried by Prefect) on 429, 5xx and connection errors."""
    target, params = _request(source, url, token, window_start)
    where = f"{target} (page {page})"
    headers = {"Accept": "application/json"}
    if (secret := bearer_token(source)) is not None:
        headers["Authorization"] = f"Bearer {secret}"
    try:
        response = _client().get(target, params=params, headers=headers, timeout=source.timeout_seconds,
                                 follow_redirects=True)
    except httpx.TransportError as exc:
        raise TransientError(f"{where}: {type(exc).__name__}: {exc}") from None
    if response.status_code == 429 or response.status_code >= 500:
        wait = _retry_after(response)
        if wait is not None:
            if wait > MAX_RETRY_AFTER_S:
                raise SourceError(f"{where}: HTTP {response.status_code}, Retry-After {wait:.0f} s (more than "
                                  f"{MAX_RETRY_AFTER_S:.0f}): try again later")
            time.sleep(wait)  # the server said when; Prefect's retry follows
        raise TransientError(f"{where}: HTTP {response.status_code}")
    if response.status_code >= 400:
        raise SourceError(f"{where}: HTTP {response.status_code} {response.reason_phrase}")
    try:
        body = json.loads(response.content, parse_float=Decimal)
    except ValueError as exc:
        raise SourceError(f"{where}: the body is no JSON ({exc})") from None
    records = body if source.records_path is None else _dig(body, source.records_path)
    if not isinstance(records, list):
        raise SourceError(f"{where}: {source.records_path or 'the body'} is no list of records")
    return Page(records, _next_token(source, token, response, body, records), source_clock(response),
                attempts=max(1, int(task_run.run_count or 1)))


@task(name="fetch-page", cache_policy=NO_CACHE, retries=5, retry_delay_seconds=exponential_backoff(backoff_factor=1),
      retry_jitter_factor=0.2, retry_condition_fn=retry_on_transient, task_run_name="{source.name}: page {page}")
def fetch_page_task(source: HttpSource, url: str, token: str | None, window_start: datetime, page: int) -> Page:
    return fetch_page(source, url, token, window_start, page)
