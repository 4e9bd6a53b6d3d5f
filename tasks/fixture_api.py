"""A small JSON API on loopback serving fixture records, page by page: what the demo pulls.

`GET /<anything>?updated_since=…&page=N&page_size=K` answers `{"data": [...], "page": N}`, records sorted
by (updated_at, customer key), those updated since the given instant. Like a real source it has defects:
the first request is throttled (429 with `Retry-After: 1`), a fixture entry may be no object at all (sent
once, among the records updated `at` an instant), and
an entry may become visible only from a later pull on (a row committed late, with an older `updated_at`).
A pull starts with a request for page 1.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse


def _instant(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _sortable(value: Any) -> str:
    moment = _instant(value)
    return "" if moment is None else moment.isoformat(timespec="microseconds")


class FixtureApi:
    def __init__(self, fixture: Path, throttle_first: bool = True) -> None:
        self.entries: list[dict[str, Any]] = json.loads(fixture.read_text())["entries"]
        self.pull = 0  # pulls seen so far (requests for page 1)
        self.throttle = throttle_first
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None

    def page(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        self.requests += 1
        if self.throttle:
            self.throttle = False
            return 429, {"Retry-After": "1"}, b'{"error": "slow down"}'
        number = int(query.get("page", ["1"])[0])
        size = int(query.get("page_size", ["100"])[0])
        if number == 1:
            self.pull += 1
        since = _instant(query.get("updated_since", [""])[0])
        visible = []
        for entry in self.entries:
            record = entry["record"]
            if not isinstance(record, dict):  # garbage the source sent once, among the records of `at`
                at = _instant(entry["at"])
                if entry["visible_from_pull"] == self.pull and (since is None or at is None or at >= since):
                    visible.append((entry["at"], "", record))
                continue
            moment = _instant(record.get("updated_at"))
            if entry["visible_from_pull"] <= self.pull and (since is None or moment is None or moment >= since):
                visible.append((record.get("updated_at", ""), record.get("customer_id", ""), record))
        visible.sort(key=lambda item: (_sortable(item[0]), str(item[1])))
        records = [record for _, _, record in visible[(number - 1) * size: number * size]]
        return 200, {"Content-Type": "application/json"}, json.dumps({"data": records, "page": number}).encode()

    def start(self) -> str:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                status, headers, body = api.page(parse_qs(urlparse(self.path).query))
                self.send_response(status)  # sends the Date header: the source's clock
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # quiet: the demo prints what matters
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/customers"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
