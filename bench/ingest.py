"""Benchmark: a realistic delivery through the library and through `datafactory run`, beside the COPY limit.

    python bench/ingest.py [--events 1000000] [--defect-every 10000] [--skip-cli] [--skip-limit] [--dataset orders]

Generates N events as one JSONL partition with realistic defects (tasks/generate.py: per 10,000 lines a
malformed line, a contract violation, a future event, a duplicate, a conflicting duplicate and a late
update; timestamps with and without fractional seconds), then, each on a fresh database of one
throwaway PostgreSQL 15 (fsync on):

1. library: the functions partition_flow's tasks wrap (manifest verification, read/validate/write in
   chunks, checks, ledger, lake snapshot on a local folder), in a process of its own;
2. CLI: `datafactory run` as a subprocess, as a user runs it: with no Prefect server configured
   (Prefect's ephemeral server starts and stops inside the command), and with `datafactory server
   start` (one local server shared by later commands); then the no-op `datafactory run` of the same,
   now up-to-date partition;
3. limit: Polars `read_ndjson` and COPY of the rows straight into empty keyed copies of bronze (typed
   keys and the raw line) and silver (every typed field): no validation, dedup, conflicts or lineage.

Prints seconds, rows/s, ratio to the limit and each process's peak RSS. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DATAFACTORY,
    DAY,
    REPO,
    factory_env,
    new_database,
    postgres,
    realistic_partition,
    timed_command,
)


def library_child(manifest_dir: Path, url: str, lake_dir: Path, dataset: str = "tickets") -> None:
    """The library path (run in its own process by `library`, so its peak RSS is its own)."""
    import flows  # noqa: F401  (the allocator settings the CLI and the flows use)
    from schemas.datasets import get_dataset
    from schemas.settings import load_settings
    from tasks.commit import commit_partition
    from tasks.database import get_engine
    from tasks.delivery import Delivery
    from tasks.lake import Lake
    from tasks.ledger import RunIdentity
    from tasks.manifests import batch_id_for, partition_manifests, source_fingerprint
    from tasks.storage import LocalStorage

    spec = get_dataset(dataset)
    started = time.perf_counter()
    manifests = partition_manifests(manifest_dir, dataset, DAY)
    fingerprint = source_fingerprint(manifests)
    who = RunIdentity(dataset, DAY, batch_id_for(dataset, DAY, fingerprint), "", fingerprint,
                      tuple(m.manifest_id for m in manifests), "run", "execute", "operator_request", "bench", None)
    delivery = Delivery(spec, manifests, manifest_dir, DAY, load_settings().chunk_bytes,
                        read_ahead=os.environ.get("BENCH_READ_AHEAD", "1") == "1")
    done = commit_partition(get_engine(url), spec, delivery, who, dry_run=False, force=False,
                            lake=Lake(LocalStorage(lake_dir)))
    print(f"library: {time.perf_counter() - started:.2f}s total={done.counts.total} valid={done.counts.valid} "
          f"invalid={done.counts.invalid} bronze_inserted={done.counts.bronze_inserted} "
          f"silver_inserted={done.counts.silver_inserted} held={done.held}")


def limit(port: int, database: str, source: Path) -> float:
    """Parse with Polars and COPY straight into empty keyed copies of bronze and silver."""
    import polars as pl
    import psycopg

    from schemas.datasets import get_dataset
    from tasks.database import get_engine
    from tasks.staging import COPY_CHUNK_ROWS, copy_text

    spec = get_dataset("tickets")
    get_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}").dispose()  # the tables to copy the shape of
    started = time.perf_counter()
    data = source.read_bytes()
    lines = [line for line in data.split(b"\n") if line.endswith(b"}")]  # malformed lines skipped, unchecked
    frame = pl.read_ndjson(b"\n".join(lines)).with_columns(
        pl.Series("_raw_payload", lines, dtype=pl.Binary).cast(pl.String),
        pl.col("tags").list.join(","),  # flat text, as the tables store it
    ).unique("event_id", keep="first", maintain_order=True)  # the keys must be unique for COPY into keyed tables
    silver = frame.sort("updated_at", "event_id", descending=True).unique("ticket_id", keep="first").drop("_raw_payload")
    bronze_keys = [f.name for f in spec.bronze_fields]
    bronze = frame.select(*bronze_keys, "_raw_payload")
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=database) as conn:
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
    parser.add_argument("--defect-every", type=int, default=10_000)
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--skip-limit", action="store_true")
    parser.add_argument("--dataset", default="tickets", help="a dataset with synthetic data (the COPY limit: tickets only)")
    parser.add_argument("--library-child", nargs=3, metavar=("MANIFESTS", "URL", "LAKE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.library_child:
        manifests, url, lake = args.library_child
        library_child(Path(manifests), url, Path(lake), args.dataset)
        return
    os.environ["FACTORY_DEFAULT_DATASET"] = args.dataset  # factory_env passes it on to the CLI runs

    with tempfile.TemporaryDirectory(prefix="factory-bench-") as tmp:
        root = Path(tmp)
        manifest_dir = root / "manifests"
        started = time.perf_counter()
        source = realistic_partition(manifest_dir, args.events, args.defect_every, dataset=args.dataset)
        print(f"generated {args.events:,} events ({source.stat().st_size / 2**20:,.0f} MiB, one defect of each kind "
              f"per {args.defect_every:,} lines) in {time.perf_counter() - started:.1f}s")
        cluster = postgres()
        results: dict[str, tuple[float, float]] = {}
        try:
            lib = timed_command([sys.executable, __file__, "--dataset", args.dataset, "--library-child", str(manifest_dir),
                                 new_database(cluster, "library"), str(root / "library-lake")], cwd=REPO)
            print(lib.output.strip().splitlines()[-1] if lib.output.strip() else f"library failed: {lib.returncode}")
            results["library (functions, one process)"] = (lib.seconds, lib.peak_rss_mib)
            if not args.skip_cli:
                results.update(cli_runs(root, manifest_dir, cluster))
            limit_s = None if args.skip_limit or args.dataset != "tickets" else limit(
                cluster.port, _database(cluster, "copy_limit"), source)
        finally:
            cluster.stop()

    print(f"\n{'path':<58} {'seconds':>8} {'rows/s':>9} {'/ limit':>8} {'peak RSS':>10}")
    if limit_s is not None:
        print(f"{'limit (Polars read_ndjson + COPY into keyed bronze, silver)':<58} {limit_s:8.1f} "
              f"{args.events / limit_s:9,.0f} {1:8.2f} {'':>10}")
    for name, (seconds, rss) in results.items():
        ratio = f"{limit_s / seconds:8.2f}" if limit_s and seconds else f"{'':>8}"
        print(f"{name:<58} {seconds:8.1f} {args.events / seconds:9,.0f} {ratio} {rss:7,.0f} MiB")


def cli_runs(root: Path, manifest_dir: Path, cluster) -> dict[str, tuple[float, float]]:  # type: ignore[no-untyped-def]
    """`datafactory run` as a subprocess: ephemeral Prefect server, then a shared local server, then no-op."""
    results = {}
    for label, shared in (("datafactory run, Prefect's ephemeral server", False),
                          ("datafactory run, `datafactory server start` running", True)):
        workspace = root / ("shared" if shared else "ephemeral")
        workspace.mkdir()
        env = factory_env(workspace, new_database(cluster, "shared" if shared else "ephemeral"), manifest_dir)
        # Prefect's own database is created on first use: pay that outside the measurement, as a user has
        timed_command([DATAFACTORY, "run", "--partition", "2026-04-16"], env=env, cwd=workspace)
        if shared:
            server = timed_command([DATAFACTORY, "server", "start", "--port", str(_free_port())], env=env, cwd=workspace)
            print(f"datafactory server start: {server.seconds:.1f}s (once)")
        try:
            run = timed_command([DATAFACTORY, "run", "--partition", DAY.isoformat()], env=env, cwd=workspace)
            if run.returncode not in (0, 1):
                print(run.output)
            results[label] = (run.seconds, run.peak_rss_mib)
            print(f"{label}: {run.seconds:.1f}s, peak RSS {run.peak_rss_mib:,.0f} MiB")
            again = timed_command([DATAFACTORY, "run", "--partition", DAY.isoformat()], env=env, cwd=workspace)
            results[f"  no-op datafactory run of the same partition{' (shared)' if shared else ''}"] = (
                again.seconds, again.peak_rss_mib)
        finally:
            if shared:
                timed_command([DATAFACTORY, "server", "stop"], env=env, cwd=workspace)
    return results


def _database(cluster, name: str) -> str:  # type: ignore[no-untyped-def]
    new_database(cluster, name)
    return name


def _free_port() -> int:
    from tests.pgcluster import free_port

    return free_port()


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    main()
