"""A paged JSON API for tests, served by pytest-httpserver (a real HTTP server on loopback), and an
independent oracle of what a pulled `customers` warehouse must hold.

The API keeps its records in memory; a test changes them between pulls (updates, late commits) and
chooses the paging style, throttling and failures. The oracle shares no code with the factory.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable

from werkzeug import Request, Response

from schemas.datasets import DATASETS, DatasetSpec
from schemas.sources import HttpSource, Paging

CUSTOMER = re.compile(r"CUST-[0-9]{6}")
TIERS = {"free", "pro", "enterprise"}


def customer(n: int, moment: str, tier: str = "pro", name: str | None = None) -> dict[str, Any]:
    return {"customer_id": f"CUST-{n:06d}", "name": name or f"Customer {n}", "email": f"c{n}@example.com",
            "tier": tier, "country": "US", "updated_at": moment}


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


@dataclass
class PagedApi:
    """The source: records, a paging style, and the defects a test asks for."""

    paging: Paging = Paging.PAGE_NUMBER
    page_size: int = 3
    records: list[Any] = field(default_factory=list)
    # request number (1-based) -> (status, headers): answered instead of the page, once
    faults: dict[int, tuple[int, dict[str, str]]] = field(default_factory=dict)
    log: list[tuple[float, int, dict[str, str]]] = field(default_factory=list)  # (time, status, query)
    repeat_last_on_next_page: bool = False  # the classic offset-paging defect: a record shows up twice
    token: str | None = None  # when set, a request without `Authorization: Bearer <token>` gets a 401

    def visible(self, since: str | None) -> list[Any]:
        def key(record: Any) -> tuple[str, str]:
            if not isinstance(record, dict):
                return "", ""
            return _instant(record["updated_at"]).isoformat(), str(record["customer_id"])
        chosen = [r for r in self.records if not isinstance(r, dict) or since is None
                  or _instant(r["updated_at"]) >= _instant(since)]
        return sorted(chosen, key=key)

    def handle(self, request: Request) -> Response:
        query = dict(request.args)
        number = len(self.log) + 1
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            self.log.append((time.monotonic(), 401, query))
            return Response('{"error": "unauthorized"}', status=401, content_type="application/json")
        if number in self.faults:
            status, headers = self.faults.pop(number)
            self.log.append((time.monotonic(), status, query))
            return Response("{}", status=status, headers=headers, content_type="application/json")
        self.log.append((time.monotonic(), 200, query))
        rows = self.visible(query.get("updated_since"))
        size = self.page_size
        if self.paging is Paging.PAGE_NUMBER:
            start = (int(query.get("page", "1")) - 1) * size
        elif self.paging is Paging.OFFSET:
            start = int(query.get("page", "0"))
        else:
            start = int(query.get("page", "0")) if self.paging is Paging.CURSOR_TOKEN else int(query.get("from", "0"))
        if self.repeat_last_on_next_page and start > 0:
            start -= 1
        page = rows[start:start + size]
        body: dict[str, Any] = {"data": page}
        headers = {}
        following = start + size if start + size < len(rows) else None
        if self.paging is Paging.CURSOR_TOKEN:
            body["next_cursor"] = None if following is None else str(following)
        if self.paging is Paging.LINK_HEADER and following is not None:
            since = query.get("updated_since", "")
            headers["Link"] = f'<{request.base_url}?from={following}&updated_since={since}>; rel="next"'
        return Response(json.dumps(body), headers=headers, content_type="application/json")

    def requests_for_pages(self) -> list[dict[str, str]]:
        return [query for _, status, query in self.log if status == 200]


def serve(httpserver: Any, api: PagedApi) -> str:
    httpserver.expect_request("/customers").respond_with_handler(api.handle)
    return httpserver.url_for("/customers")


def with_source(spec: DatasetSpec, **changes: Any) -> DatasetSpec:
    """The dataset with its source declared otherwise (paging, sizes, retries): what a user's module says."""
    assert isinstance(spec.source, HttpSource)
    return replace(spec, source=replace(spec.source, **changes))


def declare(monkeypatch: Any, **changes: Any) -> DatasetSpec:
    spec = with_source(DATASETS["customers"], **changes)
    monkeypatch.setitem(DATASETS, "customers", spec)
    return spec


# --- the oracle ---------------------------------------------------------------------------------

def valid(record: Any) -> bool:
    """The customers contract, restated in plain Python."""
    if not isinstance(record, dict):
        return False
    try:
        _instant(record["updated_at"])
    except (KeyError, TypeError, ValueError):
        return False
    email = record.get("email")
    return (isinstance(record.get("customer_id"), str) and CUSTOMER.fullmatch(record["customer_id"]) is not None
            and isinstance(record.get("name"), str) and record["name"] != ""
            and (email is None or isinstance(email, str) and re.fullmatch(r"[^@\s]+@[^@\s]+", email) is not None)
            and record.get("tier") in TIERS and isinstance(record.get("country"), str)
            and re.fullmatch(r"[A-Z]{2}", record["country"]) is not None
            and str(record["updated_at"]).endswith("Z"))


def expected_silver(records: list[Any]) -> dict[str, tuple[str, str, datetime]]:
    """customer -> (name, tier, updated_at) of its newest valid version ever served."""
    best: dict[str, dict[str, Any]] = {}
    for record in records:
        if not valid(record):
            continue
        current = best.get(record["customer_id"])
        mine = (_instant(record["updated_at"]), f"{record['customer_id']}@{record['updated_at']}")
        if current is None or mine > (_instant(current["updated_at"]),
                                      f"{current['customer_id']}@{current['updated_at']}"):
            best[record["customer_id"]] = record
    return {cid: (r["name"], r["tier"], _instant(r["updated_at"])) for cid, r in best.items()}


def silver_state(url: str) -> dict[str, tuple[str, str, datetime]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT customer_id, name, tier, updated_at FROM customer_dim")).all()
    finally:
        engine.dispose()
    out = {}
    for cid, name, tier, moment in rows:
        if isinstance(moment, str):
            moment = datetime.fromisoformat(moment)
        out[cid] = (name, tier, moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None
                    else moment.astimezone(timezone.utc))
    return out


def count(url: str, sql: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


Pull = Callable[..., Any]
