"""Benchmark: our ingest path vs the practical limit (plain COPY), on a throwaway PostgreSQL (fsync on).

    python bench/ingest.py [--events 1000000] [--tickets N]

Generates N events as one JSONL partition, ingests it through the functions partition_flow's tasks
wrap (manifest verification, read, contract validation, one transaction with staging + upserts,
checks, and the partition's lake snapshot on a local folder),
then measures the limit on the same file: Polars read_ndjson and COPY of the rows straight into
empty copies of the bronze table (its typed keys and the raw line) and the silver table (every typed
field), with the same primary keys: no validation, no dedup, no conflict handling, no lineage.
Prints rows/s for both, ratio = ours / limit, and peak RSS. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from datetime import time as dtime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl  # noqa: E402
import psycopg  # noqa: E402

from schemas.datasets import get_dataset  # noqa: E402
from tasks.commit import commit_partition  # noqa: E402
from tasks.database import get_engine  # noqa: E402
from tasks.generate import synthetic_events, write_jsonl, write_manifest  # noqa: E402
from tasks.manifests import read_manifests  # noqa: E402
from tasks.lake import Lake  # noqa: E402
from tasks.ledger import RunIdentity  # noqa: E402
from tasks.manifests import batch_id_for, partition_manifests, source_fingerprint  # noqa: E402
from tasks.staging import COPY_CHUNK_ROWS, copy_text  # noqa: E402
from tasks.storage import LocalStorage  # noqa: E402
from tasks.validate import validate_batch  # noqa: E402
from tests.pgcluster import start_cluster  # noqa: E402

DAY = date(2026, 4, 17)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ours(url: str, root: Path) -> float:
    spec = get_dataset("tickets")
    started = time.perf_counter()
    manifests = partition_manifests(root, "tickets", DAY)
    batch = validate_batch(spec, read_manifests(spec, manifests, root), DAY)
    fingerprint = source_fingerprint(manifests)
    who = RunIdentity("tickets", DAY, batch_id_for("tickets", DAY, fingerprint), "", fingerprint,
                      tuple(m.manifest_id for m in manifests), "run", "execute", "operator_request", "bench", None)
    lake = Lake(LocalStorage(root / "lake"))  # the partition flow commits a lake snapshot too
    done = commit_partition(get_engine(url), spec, batch, who, dry_run=False, force=False, lake=lake)
    result, rejected = done.result, done.rejected
    elapsed = time.perf_counter() - started
    print(f"  ours: bronze_inserted={result.bronze_inserted} silver_inserted={result.silver_inserted} "
          f"rejected={rejected} in {elapsed:.1f}s")
    return elapsed


def limit(cluster_port: int, database: str, source: Path) -> float:
    """Parse with Polars and COPY straight into empty keyed copies of bronze and silver."""
    spec = get_dataset("tickets")
    started = time.perf_counter()
    data = source.read_bytes()
    frame = pl.read_ndjson(data)
    frame = frame.with_columns(pl.col("tags").list.join(","))  # flat text, as the tables store it
    silver = frame.sort("updated_at", "event_id", descending=True).unique("ticket_id", keep="first")
    lines = pl.Series("_raw_payload", data.split(b"\n")[: frame.height], dtype=pl.Binary).cast(pl.String)
    bronze_keys = [f.name for f in spec.bronze_fields]
    bronze = frame.select(bronze_keys).with_columns(lines)
    with psycopg.connect(host="127.0.0.1", port=cluster_port, user="postgres", dbname=database) as conn:
        fields = ", ".join([*bronze_keys, "_raw_payload"])
        silver_fields = ", ".join(spec.silver_name(f) for f in spec.field_names)
        conn.execute(f"CREATE TABLE limit_bronze AS SELECT {fields} FROM {spec.bronze_table} WHERE false")
        conn.execute("ALTER TABLE limit_bronze ADD PRIMARY KEY (event_id)")
        conn.execute(f"CREATE TABLE limit_silver AS SELECT {silver_fields} FROM {spec.silver_table} WHERE false")
        conn.execute("ALTER TABLE limit_silver ADD PRIMARY KEY (ticket_id)")
        for table, rows, rename in (("limit_bronze", bronze, {}), ("limit_silver", silver,
                                    {"event_id": "last_event_id", "event_type": "last_event_type"})):
            rows = rows.rename(rename)
            columns = ", ".join(rows.columns)
            # the same COPY text format and chunking as ours, so the limit is as fast as we know how
            with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for offset in range(0, rows.height, COPY_CHUNK_ROWS):
                    copy.write(copy_text(rows.slice(offset, COPY_CHUNK_ROWS)))
        conn.commit()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tickets", type=int, default=None, help="distinct tickets (default events/4)")
    args = parser.parse_args()
    tickets = args.tickets or max(1, args.events // 4)

    with tempfile.TemporaryDirectory(prefix="factory-bench-") as tmp:
        root = Path(tmp)
        source = root / "sources" / "events.jsonl"
        t0 = time.perf_counter()
        write_jsonl(source, synthetic_events(DAY, args.events, tickets, seed=1))
        write_manifest(root, "bench", "tickets", DAY, datetime.combine(DAY, dtime(23), tzinfo=timezone.utc), [source])
        print(f"generated {args.events:,} events ({source.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f}s")

        cluster = start_cluster(fsync=True)
        try:
            with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", dbname="postgres",
                                 autocommit=True) as conn:
                conn.execute("CREATE DATABASE bench")
            ours_s = ours(cluster.url("bench"), root)
            rss_ours = peak_rss_mib()
            limit_s = limit(cluster.port, "bench", source)
        finally:
            cluster.stop()

    ours_rate, limit_rate = args.events / ours_s, args.events / limit_s
    print(f"ours:  {ours_rate:,.0f} rows/s ({ours_s:.1f}s)")
    print(f"limit: {limit_rate:,.0f} rows/s ({limit_s:.1f}s; Polars read_ndjson + COPY into keyed bronze and silver)")
    print(f"ratio = ours / limit = {ours_rate / limit_rate:.2f}")
    print(f"peak RSS (ours, before the limit run): {rss_ours:,.0f} MiB")


if __name__ == "__main__":
    main()
