"""dlt beside `datafactory run`: the same realistic events merged into one PostgreSQL, in one run.

    python bench/vs_dlt.py [--events 300000] [--defect-every 10000]

The first time, installs dlt[postgres]==1.31.0 into a venv of its own under .bench/ (not a project
dependency). Generates one partition with realistic defects (as bench/ingest.py), starts a throwaway
PostgreSQL 15 (fsync on), and times each side as a subprocess from process start to exit, on a fresh
database each:

  dlt, events:            the events merged on event_id (bench/dlt_job.py: csv loader, no child tables)
  dlt, events + tickets:  also each ticket's newest event merged on ticket_id: our job's shape
  ours:                   `datafactory run` with Prefect's ephemeral server; and with a shared local
                          server (`datafactory server start`): bronze, silver, quarantine, checks,
                          ledger, lake snapshot and evidence

Prints speedup = dlt_seconds / ours_seconds for each pair. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
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

DLT_VENV = REPO / ".bench" / "dlt-venv"
DLT = "dlt[postgres]==1.31.0"


def dlt_python() -> str:
    python = DLT_VENV / "bin" / "python"
    if not python.exists():
        print(f"installing {DLT} into {DLT_VENV} (once)")
        subprocess.run([sys.executable, "-m", "venv", str(DLT_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", DLT, "orjson"], check=True)
    return str(python)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--defect-every", type=int, default=10_000)
    args = parser.parse_args()
    python = dlt_python()
    with tempfile.TemporaryDirectory(prefix="factory-vs-dlt-") as tmp:
        root = Path(tmp)
        manifest_dir = root / "manifests"
        source = realistic_partition(manifest_dir, args.events, args.defect_every)
        print(f"{args.events:,} events, {source.stat().st_size / 2**20:,.0f} MiB, one defect of each kind per "
              f"{args.defect_every:,} lines")
        cluster = postgres()
        seconds: dict[str, float] = {}
        try:
            for job in ("events", "events+tickets"):
                url = new_database(cluster, "dlt_" + job.replace("+", "_")).replace("postgresql+psycopg://postgres@",
                                                                                     "postgresql://postgres:x@")
                done = timed_command([python, str(REPO / "bench" / "dlt_job.py"), str(source), url,
                                      str(root / f"pipelines-{job}"), job])
                if done.returncode != 0:
                    raise SystemExit(f"dlt failed:\n{done.output[-3000:]}")
                seconds[f"dlt, {job.replace('+', ' + ')}"] = done.seconds
                print(f"dlt, {job}: {done.seconds:.1f}s, peak RSS {done.peak_rss_mib:,.0f} MiB")
            for shared in (False, True):
                label = "ours, datafactory run" + (" (shared local server)" if shared else " (ephemeral Prefect server)")
                workspace = root / ("shared" if shared else "ephemeral")
                workspace.mkdir()
                env = factory_env(workspace, new_database(cluster, "ours_shared" if shared else "ours"), manifest_dir)
                timed_command([DATAFACTORY, "run", "--partition", "2026-04-16"], env=env, cwd=workspace)  # Prefect's DB
                if shared:
                    from tests.pgcluster import free_port

                    timed_command([DATAFACTORY, "server", "start", "--port", str(free_port())], env=env, cwd=workspace)
                try:
                    done = timed_command([DATAFACTORY, "run", "--partition", DAY.isoformat()], env=env, cwd=workspace)
                finally:
                    if shared:
                        timed_command([DATAFACTORY, "server", "stop"], env=env, cwd=workspace)
                if done.returncode not in (0, 1):
                    raise SystemExit(f"datafactory failed:\n{done.output[-3000:]}")
                seconds[label] = done.seconds
                print(f"{label}: {done.seconds:.1f}s, peak RSS {done.peak_rss_mib:,.0f} MiB")
        finally:
            cluster.stop()
    print()
    for dlt_label in [k for k in seconds if k.startswith("dlt")]:
        for ours_label in [k for k in seconds if k.startswith("ours")]:
            print(f"speedup = dlt_seconds / ours_seconds = {seconds[dlt_label]:.1f} / {seconds[ours_label]:.1f} = "
                  f"{seconds[dlt_label] / seconds[ours_label]:.2f}   ({dlt_label} vs {ours_label})")


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    main()
