"""Benchmark: backfill planning at scale and execution overhead per partition, on SQLite and PostgreSQL.

    python bench/backfill.py [--plan-partitions 10000] [--partitions 365] [--events 1000] [--skip-postgres]

1. Plans a window of N daily partitions, each declared by its own manifest (prints seconds).
2. Generates P partitions of E events, then on each database: loads them through the plain functions
   one after another, lake snapshot included (the pure load time), starts the Prefect server the
   flows will use (prints its start-up, a fixed cost per process), runs `backfill_flow` in execute mode
   on an empty warehouse (prints total seconds and overhead per partition over the pure load: task
   runs, artifacts, asset events, evidence), and runs the same backfill again when everything is up
   to date (the no-op execute). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import psycopg  # noqa: E402

from schemas.datasets import get_dataset  # noqa: E402
from tasks.database import get_engine  # noqa: E402
from tasks.generate import generate_partitions, write_jsonl, write_manifest  # noqa: E402
from tasks.lake import Lake  # noqa: E402
from tasks.manifests import discover_manifests  # noqa: E402
from tasks.plan import plan_backfill, write_plan  # noqa: E402
from tasks.storage import LocalStorage  # noqa: E402
from tests.helpers import commit  # noqa: E402
from tests.pgcluster import start_cluster  # noqa: E402

START = date(2026, 1, 1)


def bench_plan(partitions: int, root: Path, url: str) -> float:
    source = root / "sources" / "one.jsonl"
    write_jsonl(source, [])
    for n in range(partitions):
        day = date(2000, 1, 1) + timedelta(days=n)
        write_manifest(root, f"p-{day}", "tickets", day, datetime.combine(day, datetime.min.time(), timezone.utc),
                       [source])
    spec, engine = get_dataset("tickets"), get_engine(url)
    end = date(2000, 1, 1) + timedelta(days=partitions - 1)
    started = time.perf_counter()
    manifests = discover_manifests(root)
    write_plan(root / "reports", "tickets", date(2000, 1, 1), end, "dry-run", True, "bench", None,
               lambda path: plan_backfill(engine, spec, manifests, date(2000, 1, 1), end, date(2000, 1, 1),
                                          "dry-run", True, "bench", path))
    return time.perf_counter() - started


def bench_execute(name: str, url_for, root: Path, partitions: int) -> None:  # type: ignore[no-untyped-def]
    from flows.backfill import backfill_flow

    end = START + timedelta(days=partitions - 1)
    pure_url = url_for("pure")
    lake = Lake(LocalStorage(root.parent / f"{name}-pure-lake"))
    started = time.perf_counter()
    for n in range(partitions):
        commit(pure_url, root, START + timedelta(days=n), lake=lake)
    pure = time.perf_counter() - started

    os.environ["FACTORY_MANIFEST_DIR"] = str(root)
    os.environ["FACTORY_PARTITION_START_DATE"] = START.isoformat()
    print(f"{name}: pure load {pure:.1f}s ({pure / partitions:.2f}s per partition, one after another)")
    for concurrency in (1, 2):  # 1: the bookkeeping per partition; 2: what a user's default backfill takes
        flow = f"flow{concurrency}"
        os.environ["FACTORY_DATABASE_URL"] = url_for(flow)
        os.environ["FACTORY_REPORT_DIR"] = str(root.parent / f"{name}-{flow}-reports")
        os.environ["FACTORY_LAKE_URL"] = str(root.parent / f"{name}-{flow}-lake")
        started = time.perf_counter()
        backfill_flow(dataset="tickets", start=START, end=START, mode="dry-run")  # the server starts here, once
        ready = time.perf_counter() - started
        started = time.perf_counter()
        summary = backfill_flow(dataset="tickets", start=START, end=end, mode="execute", max_concurrency=concurrency)
        total = time.perf_counter() - started
        started = time.perf_counter()
        again = backfill_flow(dataset="tickets", start=START, end=end, mode="execute", max_concurrency=concurrency)
        noop = time.perf_counter() - started
        print(f"{name}, max_concurrency={concurrency}: backfill execute {total:.1f}s for {len(summary.results)} "
              f"partitions ({len(summary.failed)} failed), overhead {(total - pure) / partitions:+.2f}s per partition "
              f"over the pure load; no-op execute {noop:.1f}s ({again.to_ingest} to ingest); "
              f"first dry run (server start-up) {ready:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan-partitions", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=365)
    parser.add_argument("--events", type=int, default=1_000)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="factory-bench-") as tmp:
        base = Path(tmp)
        (base / "plan").mkdir()
        seconds = bench_plan(args.plan_partitions, base / "plan", f"sqlite:///{base / 'plan.db'}")
        print(f"plan: {args.plan_partitions:,} partitions in {seconds:.1f}s")

        data = base / "data"
        data.mkdir()
        generate_partitions(data, START, args.partitions, args.events)
        bench_execute("sqlite", lambda db: f"sqlite:///{base / (db + '.db')}", data, args.partitions)
        if not args.skip_postgres:
            cluster = start_cluster(fsync=True)
            try:
                with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", dbname="postgres",
                                     autocommit=True) as conn:
                    for database in ("pure", "flow1", "flow2"):
                        conn.execute(f"CREATE DATABASE {database}")
                bench_execute("postgresql", cluster.url, data, args.partitions)
            finally:
                cluster.stop()


if __name__ == "__main__":
    main()
