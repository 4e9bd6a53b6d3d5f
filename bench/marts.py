"""Benchmark: marts over many days of realistic tickets, through `datafactory` as users run it.

    python bench/marts.py [--days 14] [--events 50000] [--postgres]

1. Generates D days of E ticket events each (realistic defects, mixed timestamp precision) and commits
   them through the plain functions (no marts yet).
2. `datafactory marts run` as a subprocess (Prefect's ephemeral server): every partition of the two
   ticket marts computed (both read every day up to their own: [all:0], the heavy case).
3. The limit: the same two models' SQL run by DuckDB straight over the committed Parquet files for every
   day (no staging, checks, commit, ledger, lake snapshot or Prefect).
4. `datafactory marts run` again with nothing to do (the plan alone), and `datafactory marts plan`.
5. One old day committed again (a new snapshot): `datafactory marts run` recomputes exactly the
   partitions whose windows read it.
6. The catalog regenerated, and a query through it.
Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DATAFACTORY, factory_env, new_database, postgres, realistic_partition, timed_command  # noqa: E402
from schemas.datasets import DATASETS  # noqa: E402
from tasks.database import get_engine, reading  # noqa: E402
from tasks.duck import duckdb_connection, literal  # noqa: E402
from tasks.lake import Lake  # noqa: E402
from tasks.lake_state import current_records  # noqa: E402
from tasks.mart_models import load_models  # noqa: E402
from tasks.storage import LocalStorage  # noqa: E402
from tests.helpers import commit  # noqa: E402

FIRST = date(2026, 4, 1)
MARTS = Path(__file__).resolve().parent.parent / "schemas" / "marts"


def _limit(url: str, lake: Lake, days: list[date]) -> float:
    """The two ticket marts' SQL for every day, DuckDB over the committed files directly."""
    graph = load_models(MARTS, DATASETS)
    with reading(get_engine(url)) as conn:
        records = current_records(conn, lake, "tickets")
    began = time.perf_counter()
    con = duckdb_connection()
    for day in days:
        files = [str(Path(lake.storage.url) / lake.prefix("tickets", d) / f["path"])
                 for d, r in records.items() if d <= day for f in r["files"]]
        con.execute(f"CREATE OR REPLACE TEMP VIEW tickets AS SELECT NULL::DATE AS dt, * FROM read_parquet("
                    f"[{', '.join(literal(f) for f in files)}], hive_partitioning = false)")
        breaches = con.execute(f"CREATE OR REPLACE TEMP TABLE ticket_sla_breaches AS "
                               f"{graph.models['ticket_sla_breaches'].sql}", {"dt": day})
        con.execute(graph.models["ticket_daily_metrics"].sql, {"dt": day}).fetchall()
        del breaches
    con.close()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--postgres", action="store_true", help="the warehouse on a throwaway PostgreSQL 15")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-marts-") as folder:
        workspace = Path(folder)
        manifests = workspace / "manifests"
        cluster = postgres() if args.postgres else None
        url = new_database(cluster, "marts") if cluster else f"sqlite:///{workspace / 'warehouse.db'}"
        try:
            days = [FIRST + timedelta(days=n) for n in range(args.days)]
            for day in days:
                realistic_partition(manifests, args.events, defect_every=10_000, day=day)
            lake = Lake(LocalStorage(workspace / "lake"))
            began = time.perf_counter()
            for day in days:
                commit(url, manifests, day, lake=lake)
            print(f"{args.days} days x {args.events:,} ticket events committed in {time.perf_counter() - began:.1f} s "
                  f"({'PostgreSQL' if cluster else 'SQLite'})")
            env = factory_env(workspace, url, manifests, FACTORY_PARTITION_START_DATE=FIRST.isoformat())

            def marts(*extra: str) -> tuple[float, float, list[dict[str, object]]]:
                done = timed_command([DATAFACTORY, "marts", *extra, "--json"], env=env, cwd=workspace)
                if done.returncode not in (0, 1):
                    raise SystemExit(done.output[-2000:])
                payload = json.loads(done.output[done.output.index("{"):])
                return done.seconds, done.peak_rss_mib, payload.get("outcomes", payload.get("partitions", []))

            seconds, rss, outcomes = marts("run", "--dataset", "tickets")
            print(f"datafactory marts run, {len(outcomes)} partitions computed: {seconds:.1f} s, {rss:.0f} MiB "
                  f"({seconds / max(1, len(outcomes)):.2f} s per partition, Prefect's ephemeral server included)")
            limit = _limit(url, lake, days)
            print(f"limit, the same SQL by DuckDB over the committed files: {limit:.1f} s "
                  f"({limit / max(1, len(outcomes)):.3f} s per partition)")
            seconds, rss, outcomes = marts("run", "--dataset", "tickets")
            print(f"datafactory marts run with nothing due: {seconds:.1f} s, {rss:.0f} MiB ({len(outcomes)} computed)")
            seconds, _, plans = marts("plan")
            print(f"datafactory marts plan ({len(plans)} partitions): {seconds:.1f} s")
            restated = days[len(days) // 2]
            commit(url, manifests, restated, force=True, lake=lake)
            seconds, rss, outcomes = marts("run", "--dataset", "tickets")
            print(f"{restated} committed again; datafactory marts run recomputed {len(outcomes)} partitions "
                  f"({len([d for d in days if d >= restated]) * 2} read it): {seconds:.1f} s")
            from tasks.catalog import catalog_location, refresh_catalog

            began = time.perf_counter()
            refresh_catalog(get_engine(url), lake)
            print(f"catalog regenerated: {time.perf_counter() - began:.2f} s")
            import duckdb

            began = time.perf_counter()
            with duckdb.connect(catalog_location(lake), read_only=True) as con:
                rows = con.execute("SELECT count(*) FROM ticket_fact").fetchone()
            print(f"SELECT count(*) FROM ticket_fact through the catalog ({rows[0]:,} tickets): "
                  f"{time.perf_counter() - began:.2f} s")
        finally:
            if cluster:
                cluster.stop()


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    main()
