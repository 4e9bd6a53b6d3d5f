"""Benchmark: one day of N events against the same events spread over P partitions and backfilled.

    python bench/split.py [--events 300000] [--partitions 40] [--defect-every 10000] [--sqlite]

Generates N events with realistic defects (as bench/ingest.py) dated on one day D. Delivery A is all of
them as partition D; delivery B is the same lines cut into P consecutive slices, slice k delivered as
partition D+k (the events are then late-arriving for every partition after D: valid, as in A). Each goes
into a fresh warehouse (a throwaway PostgreSQL 15, fsync on; or SQLite with --sqlite) through the
command line as a user runs it: `datafactory run` for A, `datafactory backfill --mode execute` for B,
both with a shared local Prefect server (`datafactory server start`). Prints both times, the ratio B / A
and the overhead per partition. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATAFACTORY, DAY, factory_env, new_database, postgres, timed_command  # noqa: E402

from tasks.generate import realistic_lines, write_lines, write_manifest  # noqa: E402
from tests.pgcluster import free_port  # noqa: E402


def deliveries(root: Path, events: int, partitions: int, defect_every: int) -> None:
    lines = list(realistic_lines(DAY, events, max(1, events // 4), seed=1, defect_every=defect_every))
    one, split = root / "one", root / "split"
    write_lines(one / "sources" / "all.jsonl", lines)
    write_manifest(one, "all", "tickets", DAY, datetime.combine(DAY, datetime.min.time(), timezone.utc).replace(hour=23),
                   [one / "sources" / "all.jsonl"])
    size = -(-len(lines) // partitions)
    for k in range(partitions):
        day = DAY + timedelta(days=k)
        source = split / "sources" / f"{day}.jsonl"
        write_lines(source, lines[k * size:(k + 1) * size])
        write_manifest(split, f"slice-{day}", "tickets", day,
                       datetime.combine(day, datetime.min.time(), timezone.utc).replace(hour=23), [source])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=40)
    parser.add_argument("--defect-every", type=int, default=10_000)
    parser.add_argument("--sqlite", action="store_true", help="SQLite warehouses instead of PostgreSQL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="factory-split-") as tmp:
        root = Path(tmp)
        deliveries(root, args.events, args.partitions, args.defect_every)
        cluster = None if args.sqlite else postgres()
        try:
            times = {}
            for name in ("one", "split"):
                workspace = root / f"{name}-workspace"
                workspace.mkdir()
                url = f"sqlite:///{workspace / 'warehouse.db'}" if cluster is None else new_database(cluster, name)
                env = factory_env(workspace, url, root / name, FACTORY_PARTITION_START_DATE=DAY.isoformat())
                timed_command([DATAFACTORY, "server", "start", "--port", str(free_port())], env=env, cwd=workspace)
                try:
                    last = DAY + timedelta(days=args.partitions - 1)
                    command = ([DATAFACTORY, "run", "--partition", DAY.isoformat()] if name == "one" else
                               [DATAFACTORY, "backfill", "--start", DAY.isoformat(), "--end", last.isoformat(),
                                "--mode", "execute"])
                    done = timed_command(command, env=env, cwd=workspace)
                finally:
                    timed_command([DATAFACTORY, "server", "stop"], env=env, cwd=workspace)
                if done.returncode not in (0, 1):
                    raise SystemExit(done.output[-3000:])
                times[name] = done.seconds
                print(f"{' '.join(command[1:2])} {name}: {done.seconds:.1f}s, peak RSS {done.peak_rss_mib:,.0f} MiB")
        finally:
            if cluster is not None:
                cluster.stop()
    ratio = times["split"] / times["one"]
    print(f"\n{args.events:,} events: one partition {times['one']:.1f}s; {args.partitions} partitions backfilled "
          f"{times['split']:.1f}s; ratio {ratio:.2f}; "
          f"overhead {(times['split'] - times['one']) / args.partitions:+.2f}s per partition")


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    main()
