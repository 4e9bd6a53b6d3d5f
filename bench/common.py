"""What the benchmarks share: a realistic delivery, a throwaway PostgreSQL, and timing a command as a
user runs it (wall time from process start to exit, and that process's peak RSS)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from tasks.generate import realistic_lines, write_lines, write_manifest  # noqa: E402
from tests.pgcluster import Cluster, start_cluster  # noqa: E402

DAY = date(2026, 4, 17)
DATAFACTORY = str(Path(sys.executable).with_name("datafactory"))


def realistic_partition(manifest_dir: Path, events: int, defect_every: int, day: date = DAY,
                        dataset: str = "tickets") -> Path:
    """One day of `events` synthetic events of a dataset (entities = events / 4) with realistic defects, as
    one JSONL asset and its manifest; returns the asset."""
    source = manifest_dir / "sources" / f"{day}.jsonl"
    write_lines(source, realistic_lines(day, events, max(1, events // 4), seed=1, defect_every=defect_every,
                                        dataset=dataset))
    write_manifest(manifest_dir, f"bench-{day}", dataset, day,
                   datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc).replace(hour=23), [source])
    return source


def postgres() -> Cluster:
    """A throwaway PostgreSQL 15 cluster on a loopback port, fsync on (as a real warehouse runs)."""
    return start_cluster(fsync=True)


def new_database(cluster: Cluster, name: str) -> str:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return cluster.url(name)


@dataclass
class Timed:
    seconds: float
    peak_rss_mib: float
    returncode: int
    output: str


# Started by a small process, the measured one inherits no memory high-water mark: Linux carries the
# spawning process's peak into a child's ru_maxrss across exec, and this benchmark's own process is large.
_LAUNCHER = """
import os, subprocess, sys, time
result, command = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
child = subprocess.Popen(command)
_, status, usage = os.wait4(child.pid, 0)
with open(result, "w") as out:
    out.write(f"{time.perf_counter() - started} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def timed_command(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Timed:
    """Run a command to its end: wall seconds from its start to its exit, and its own peak RSS."""
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{os.getpid()}-{time.monotonic_ns()}"
    log, result = scratch.with_suffix(".log"), scratch.with_suffix(".result")
    with log.open("w+") as out:
        subprocess.run([sys.executable, "-c", _LAUNCHER, str(result), *command], env=env, cwd=cwd, stdout=out,
                       stderr=subprocess.STDOUT, check=False)
        out.seek(0)
        output = out.read()
    seconds, peak_kib, returncode = result.read_text().split()
    log.unlink(missing_ok=True)
    result.unlink(missing_ok=True)
    return Timed(float(seconds), int(peak_kib) / 1024, int(returncode), output)


def factory_env(workspace: Path, database_url: str, manifest_dir: Path, **extra: str) -> dict[str, str]:
    """The environment `datafactory` runs in: this workspace's warehouse, lake, reports; no Prefect API set
    (so Prefect's ephemeral server, as on a fresh machine) unless `extra` sets one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACTORY_", "PREFECT_API_URL"))}
    env.update(FACTORY_DATABASE_URL=database_url, FACTORY_MANIFEST_DIR=str(manifest_dir),
               # the benchmarks' deliveries are of one dataset: tickets, unless the bench was told otherwise
               FACTORY_DEFAULT_DATASET=os.environ.get("FACTORY_DEFAULT_DATASET", "tickets"),
               FACTORY_LAKE_URL=str(workspace / "lake"), FACTORY_REPORT_DIR=str(workspace / "reports"),
               PREFECT_HOME=str(workspace / "prefect-home"), **extra)
    return env
