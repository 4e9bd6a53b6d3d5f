"""Benchmark: pulling a paged JSON API and an SQL table into `customers`, beside what reading alone costs.

    python bench/pull.py [--records 200000] [--page-size 1000] [--defect-every 10000]

Serves N customer versions (over three days; per `defect-every` records one that is no object, one that
breaks the contract, timestamps with and without fractions) from a paged JSON API on loopback, and the
same rows from a PostgreSQL table, then times on a fresh database of one throwaway PostgreSQL 15
(fsync on) each:

  http, pull:   `datafactory pull` as a subprocess (Prefect's ephemeral server), the dataset declared with
                `page_size` (what a user's module says): pages landed, three partitions ingested, cursor moved
  http, read:   the same pages fetched and parsed, nothing else: the limit a pull cannot beat
  sql, pull:    the same as a subprocess, from a PostgreSQL table (SqlSource)
  sql, read:    the window's rows read with yield_per, nothing else

Prints seconds, records/s, the ratio to the read limit and each pull's peak RSS. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, factory_env, new_database, postgres, timed_command  # noqa: E402

START = datetime(2026, 4, 15, tzinfo=timezone.utc)


def records(count: int, defect_every: int) -> list[Any]:
    out: list[Any] = []
    for n in range(count):
        moment = START + timedelta(seconds=n * 3 * 86_400 // count)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{n % 1000:03d}Z" if n % 2 else "Z")
        record: Any = {"customer_id": f"CUST-{n % (count // 2 or 1):06d}", "name": f"Customer {n}",
                       "email": f"c{n}@example.com", "tier": "pro", "country": "US", "updated_at": stamp}
        if defect_every and n % defect_every == 1:
            record = "not a record"
        elif defect_every and n % defect_every == 2:
            record["tier"] = "platinum"
        out.append(record)
    return out


def serve(rows: list[Any]) -> tuple[ThreadingHTTPServer, str]:
    bodies: dict[tuple[int, int], bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            query = parse_qs(urlparse(self.path).query)
            page, size = int(query["page"][0]), int(query["page_size"][0])
            body = bodies.get((page, size))
            if body is None:
                body = json.dumps({"data": rows[(page - 1) * size: page * size]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/customers"


# `datafactory pull` with the customers dataset declared with another source (as a user's module would)
_PULL = """
import sys
from dataclasses import replace
from datetime import timedelta
from schemas.datasets import DATASETS
from schemas.sources import HttpSource, SqlSource
kind, page_size = sys.argv[1], int(sys.argv[2])
base = DATASETS["customers"]
common = dict(cursor_field="updated_at", key_field="customer_id", event_key_from=("customer_id", "updated_at"),
              page_size=page_size, lookback=timedelta(hours=1))
source = HttpSource(url="", **common) if kind == "http" else SqlSource(url="", table="crm_customer", **common)
DATASETS["customers"] = replace(base, source=source)
from flows.cli import main
sys.exit(main(["pull", "--dataset", "customers"]))
"""


def read_http(url: str, page_size: int) -> float:
    import httpx

    began, page = time.perf_counter(), 1
    while True:
        body = httpx.get(url, params={"page": page, "page_size": page_size}).json()
        if len(body["data"]) < page_size:
            return time.perf_counter() - began
        page += 1


def read_sql(url: str, page_size: int) -> float:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    began = time.perf_counter()
    with engine.connect() as conn:
        for _ in conn.execution_options(yield_per=page_size).execute(
                text("SELECT * FROM crm_customer ORDER BY updated_at, customer_id")).partitions(page_size):
            pass
    engine.dispose()
    return time.perf_counter() - began


def load_table(url: str, rows: list[Any]) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    valid = [r for r in rows if isinstance(r, dict)]
    latest = {r["customer_id"]: r for r in valid}  # a table holds each customer's current row
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE crm_customer (customer_id TEXT PRIMARY KEY, name TEXT, email TEXT, tier TEXT, "
                          "country TEXT, updated_at TIMESTAMPTZ NOT NULL)"))
        conn.execute(text("INSERT INTO crm_customer VALUES (:customer_id, :name, :email, :tier, :country, "
                          "CAST(:updated_at AS TIMESTAMPTZ))"), list(latest.values()))
    engine.dispose()
    return len(latest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--defect-every", type=int, default=10_000)
    args = parser.parse_args()
    rows = records(args.records, args.defect_every)
    server, url = serve(rows)
    cluster = postgres()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch)
            results = []
            limit = read_http(url, args.page_size)
            warehouse = new_database(cluster, "pull_http")
            env = factory_env(root / "http", warehouse, root / "none", FACTORY_LANDING_DIR=str(root / "http" / "landing"),
                              FACTORY_SOURCE_URLS=json.dumps({"customers": url}), PYTHONPATH=str(REPO))
            pulled = timed_command([sys.executable, "-c", _PULL, "http", str(args.page_size)], env=env, cwd=REPO)
            results.append(("http", len(rows), pulled, limit))
            source = new_database(cluster, "crm")
            table_rows = load_table(source, rows)
            limit = read_sql(source, args.page_size)
            warehouse = new_database(cluster, "pull_sql")
            env = factory_env(root / "sql", warehouse, root / "none", FACTORY_LANDING_DIR=str(root / "sql" / "landing"),
                              FACTORY_SOURCE_URLS=json.dumps({"customers": source}), PYTHONPATH=str(REPO))
            pulled = timed_command([sys.executable, "-c", _PULL, "sql", str(args.page_size)], env=env, cwd=REPO)
            results.append(("sql", table_rows, pulled, limit))
    finally:
        server.shutdown()
        cluster.stop()
    print(f"{'source':<6} {'records':>8} {'pull s':>8} {'rec/s':>8} {'read s':>7} {'read/pull':>9} {'peak MiB':>8}")
    for kind, count, pulled, limit in results:
        if pulled.returncode != 0:
            print(f"{kind}: datafactory pull failed ({pulled.returncode}):\n{pulled.output[-2000:]}")
            continue
        print(f"{kind:<6} {count:>8} {pulled.seconds:>8.1f} {count / pulled.seconds:>8.0f} {limit:>7.1f} "
              f"{limit / pulled.seconds:>9.2f} {pulled.peak_rss_mib:>8.0f}")


if __name__ == "__main__":
    main()
