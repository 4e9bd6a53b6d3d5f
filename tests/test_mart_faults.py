"""A marts run that fails (or is killed) at any step boundary converges when run again: the same gold
rows as an undisturbed run, every partition fresh and succeeded, the lake holding only committed
snapshots of each mart partition (no temp files), the marker on the ledger's current snapshot."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select, text

from flows.marts import load_graph, marts_flow, plan_marts
from schemas.settings import load_settings
from schemas.tables import mart_partition
from tasks.database import get_engine
from tasks.lake import open_lake, read_marker, read_record
from tasks.lake_state import snapshot_listing
from tests.faults import inject
from tests.helpers import DAYS, commit

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.flow, pytest.mark.marts]
BOUNDARIES = [
    "tasks.marts:compute:after",  # computed, nothing staged
    "tasks.mart_commit:SnapshotWriter.stage:after",  # snapshot staged, no transaction yet
    "tasks.mart_commit:ledger.record_snapshot:after",  # inside the transaction: rows written, snapshot recorded
    "tasks.marts:settle_lake:before",  # committed, the marker not moved yet
    "tasks.marts:write_mart_evidence:before",  # committed and settled, no evidence yet
]
sqlite_only = pytest.mark.parametrize("warehouse_url", ["sqlite"], indirect=True)


def _gold(url: str) -> dict[str, list[tuple]]:
    with get_engine(url).connect() as conn:
        return {m: [tuple(r) for r in conn.execute(text(f'SELECT * FROM "{m}" ORDER BY 1, 2, 3'))]
                for m in ("ticket_state", "ticket_sla_breaches", "ticket_daily_metrics")}


def _stale_everything(url: str, sample_dir: Path) -> dict[str, list[tuple]]:
    """Tickets committed (no marts yet), marts computed undisturbed, then 04-14 committed again: a new
    snapshot every ticket mart partition has read. Returns the undisturbed gold rows."""
    lake = open_lake(load_settings())
    for day in DAYS:
        commit(url, sample_dir, day, lake=lake)
    marts_flow(dataset="tickets")
    expected = _gold(url)
    commit(url, sample_dir, DAYS[0], force=True, lake=lake)
    return expected


def assert_converged(url: str, expected: dict[str, list[tuple]]) -> None:
    settings = load_settings()
    engine, lake = get_engine(url), open_lake(settings)
    assert _gold(url) == expected
    with engine.connect() as conn:
        states = conn.execute(select(mart_partition.c.mart, mart_partition.c.partition_key, mart_partition.c.status,
                                     mart_partition.c.snapshot_id)).all()
    assert {s.status for s in states} == {"succeeded"} and len(states) == 9
    graph = load_graph(settings)
    assert {p.freshness.value for p in plan_marts(engine, graph, list(graph.models.values()), None, None)} == {"fresh"}
    for mart, partition, _, current in states:
        day = date.fromisoformat(partition)
        assert read_marker(lake, mart, day)["snapshot_id"] == current
        listing = snapshot_listing(engine, lake, mart, day)
        expected_keys = {"manifest.json", "_SUCCESS"}
        for entry in listing:
            expected_keys |= {f"_snapshots/{entry['snapshot_id']}.json"} | {
                f["path"] for f in read_record(lake, mart, day, entry["snapshot_id"])["files"]}
        prefix = lake.prefix(mart, day)
        assert {k[len(prefix) + 1:] for k in lake.storage.list(prefix, partial=True)} == expected_keys


@sqlite_only
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_a_marts_run_failing_at_any_boundary_converges_when_run_again(factory_env: str, sample_dir: Path, boundary: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _stale_everything(factory_env, sample_dir)
    with monkeypatch.context() as patch:
        inject(patch, boundary)
        marts_flow(dataset="tickets", return_state=True)
    marts_flow(dataset="tickets")
    assert_converged(factory_env, expected)


@sqlite_only
def test_a_marts_run_killed_inside_its_transaction_converges_when_run_again(factory_env: str, sample_dir: Path,
                                                                            tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    expected = _stale_everything(factory_env, sample_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    killed = subprocess.run(
        [sys.executable, "-m", "tests.faults", "tasks.mart_commit:ledger.record_snapshot:after", "--", "cli", "marts",
         "run", "--dataset", "tickets"], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**env, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT_HOME": str(tmp_path / "prefect-home"),
             "PYTHONPATH": str(REPO)})
    assert killed.returncode == -9, killed.stderr
    marts_flow(dataset="tickets")
    assert_converged(factory_env, expected)
