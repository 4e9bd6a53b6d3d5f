"""Fault injection at every step boundary of a partition run and of a restore: raise there, or kill -9
the process there, then run again as an operator would. The rerun must converge: the oracle's state,
no RUNNING attempt, no temp file, and a lake whose marker and objects are exactly what the ledger
committed."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select, text

from schemas.tables import ingest_run, partition_state
from tasks.database import get_engine, reading
from tasks.lake import Lake, read_marker, read_record
from tasks.lake_state import snapshot_listing
from tasks.storage import open_storage
from tests.conftest import REPO, sqlite_only
from tests.faults import Injected, inject
from tests.helpers import DAYS, commit, restore
from tests.test_oracle import assert_matches_oracle

D14, D16, D17 = DAYS
FINAL = {"succeeded", "held", "failed", "skipped", "abandoned"}

# Every boundary of one attempt, in order, as the calling module looks the step up.
RUN_BOUNDARIES = [
    "tasks.ledger:start_run:after",  # RUNNING recorded, nothing written
    "tasks.warehouse:bulk_load:after",  # bronze rows written (uncommitted)
    "tasks.warehouse:write_silver:after",
    "tasks.warehouse:insert_quarantine:after",
    "tasks.commit:write_partition:after",
    "tasks.checks:record_results:after",
    "tasks.lake:_write_temp:after",  # temp Parquet written
    "tasks.lake:_validate_temp:after",
    "tasks.storage:LocalStorage.move:after",  # published, no record yet
    "tasks.lake:SnapshotWriter.stage:after",  # record written, the ledger does not know it
    "tasks.ledger:record_snapshot:after",
    "tasks.ledger:finish_run:after",  # everything written, not committed
    "tasks.commit:settle_lake:before",  # committed; the marker has not moved
    "tasks.lake_state:publish_marker:before",
    "tasks.lake_state:apply_retention:before",  # marker moved, retention not run
]
# Where a kill differs from a raise (no except or finally runs) or lands inside a write.
KILL_BOUNDARIES = [
    "tasks.ledger:start_run:after",  # a RUNNING attempt nobody will close
    "os:replace:before",  # inside an atomic write: a .partial file left behind
    "tasks.lake:SnapshotWriter.stage:after",  # a staged snapshot no ledger row names
    "tasks.commit:settle_lake:before",  # committed; marker behind the ledger
    "tasks.storage:LocalStorage.write:after:3",  # manifest.json moved, _SUCCESS not
]
RESTORE_BOUNDARIES = [
    "tasks.ledger:start_run:after",
    "tasks.restore:silver_from_partition:after",
    "tasks.restore:replace_silver:after",
    "tasks.checks:record_results:after",
    "tasks.ledger:set_current_snapshot:after",
    "tasks.ledger:finish_run:after",
    "tasks.restore:settle_lake:before",  # committed; the marker still on the replaced snapshot
]


# PostgreSQL differs from SQLite in its locks (a killed holder's session must release its advisory
# lock) and its bulk path: these boundaries run on both, the rest on SQLite
ON_BOTH = {"tasks.ledger:start_run:after", "tasks.warehouse:bulk_load:after", "tasks.ledger:finish_run:after",
           "tasks.commit:settle_lake:before", "tasks.restore:replace_silver:after", "tasks.restore:settle_lake:before"}


def _where(boundaries: list[str]) -> list:
    """Each boundary on SQLite, and on PostgreSQL too when it is one of ON_BOTH."""
    return [pytest.param(b, db, marks=[pytest.mark.postgres] if db == "postgres" else [], id=f"{db}-{b}")
            for b in boundaries for db in ("sqlite", "postgres") if db == "sqlite" or b in ON_BOTH]


def _lake(tmp_path: Path) -> Lake:
    return Lake(open_storage(str(tmp_path / "lake")), retention=3)


def assert_converged(url: str, lake: Lake, root: Path, days: list[date] = DAYS) -> None:
    """The oracle's tables; every attempt closed; each partition's lake prefix holds its marker, _SUCCESS,
    and the committed snapshots' records and files: nothing else (no _tmp, no .partial, no stray record)."""
    assert_matches_oracle(url, root)
    engine = get_engine(url)
    with reading(engine) as conn:
        statuses = set(conn.execute(select(ingest_run.c.status)).scalars())
        states = dict(conn.execute(select(partition_state.c.partition_key, partition_state.c.status)).all())
    assert statuses <= FINAL, statuses
    assert states == {d.isoformat(): "succeeded" for d in days}
    for day in days:
        listing = snapshot_listing(engine, lake, "tickets", day)
        [current] = [m["snapshot_id"] for m in listing if m["current"]]
        assert read_marker(lake, "tickets", day)["snapshot_id"] == current
        assert lake.storage.read(f"{lake.prefix('tickets', day)}/_SUCCESS") == current.encode()
        expected = {"manifest.json", "_SUCCESS"}
        for entry in listing:
            assert entry["problem"] is None
            expected |= {f"_snapshots/{entry['snapshot_id']}.json"} | {
                f["path"] for f in read_record(lake, "tickets", day, entry["snapshot_id"])["files"]}
        prefix = lake.prefix("tickets", day)
        assert {k[len(prefix) + 1:] for k in lake.storage.list(prefix, partial=True)} == expected


@pytest.mark.parametrize(("boundary", "warehouse_url"), _where(RUN_BOUNDARIES), indirect=["warehouse_url"])
def test_a_run_failing_at_any_boundary_converges_when_rerun(warehouse_url: str, sample_dir: Path, tmp_path: Path,
                                                            boundary: str, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = _lake(tmp_path)
    for day in (D14, D16):
        commit(warehouse_url, sample_dir, day, lake=lake)
    with monkeypatch.context() as patch:
        inject(patch, boundary)
        with pytest.raises(Injected):
            commit(warehouse_url, sample_dir, D17, lake=lake)
    commit(warehouse_url, sample_dir, D17, lake=lake)  # the operator's rerun: no force
    assert_converged(warehouse_url, lake, sample_dir)


def _killed(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.faults", *arguments], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize(("boundary", "warehouse_url"), _where(KILL_BOUNDARIES), indirect=["warehouse_url"])
def test_a_run_killed_at_any_boundary_converges_when_rerun(warehouse_url: str, sample_dir: Path, tmp_path: Path,
                                                           boundary: str) -> None:
    lake = _lake(tmp_path)
    for day in (D14, D16):
        commit(warehouse_url, sample_dir, day, lake=lake)
    killed = _killed(boundary, "--", "commit", warehouse_url, str(sample_dir), D17.isoformat(), lake.storage.url)
    assert killed.returncode == -9, killed.stderr
    commit(warehouse_url, sample_dir, D17, lake=lake)
    assert_converged(warehouse_url, lake, sample_dir)


@sqlite_only
@pytest.mark.parametrize("boundary", KILL_BOUNDARIES[:3])
def test_a_killed_forced_rerun_leaves_the_committed_partition_as_it_was(warehouse_url: str, sample_dir: Path,
                                                                        tmp_path: Path, boundary: str) -> None:
    """Killed before its commit, a forced rerun of a good partition changes nothing a reader sees."""
    lake = _lake(tmp_path)
    for day in DAYS:
        commit(warehouse_url, sample_dir, day, lake=lake)
    before = read_marker(lake, "tickets", D17)
    killed = _killed(boundary, "--", "commit", warehouse_url, str(sample_dir), D17.isoformat(), lake.storage.url,
                     "force")
    assert killed.returncode == -9, killed.stderr
    assert read_marker(lake, "tickets", D17) == before
    assert_matches_oracle(warehouse_url, sample_dir)
    commit(warehouse_url, sample_dir, D17, lake=lake)  # up to date: a skip that cleans up
    assert_converged(warehouse_url, lake, sample_dir)


def _restorable(url: str, root: Path, lake: Lake) -> str:
    """Every partition committed twice; silver of 2026-04-17's tickets corrupted by hand. Returns the
    first snapshot of 2026-04-17 (a restore target that is not current)."""
    first = ""
    for day in DAYS:
        first = commit(url, root, day, lake=lake).snapshot["snapshot_id"]
    commit(url, root, D17, force=True, lake=lake)
    with get_engine(url).begin() as conn:
        conn.execute(text("UPDATE ticket_fact SET status = 'closed', last_event_id = 'E-BOGUS' "
                          "WHERE _partition_key = '2026-04-17'"))
    return first


@pytest.mark.parametrize(("boundary", "warehouse_url"), _where(RESTORE_BOUNDARIES), indirect=["warehouse_url"])
def test_a_restore_failing_at_any_boundary_converges_when_run_again(warehouse_url: str, sample_dir: Path,
                                                                    tmp_path: Path, boundary: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    lake = _lake(tmp_path)
    target = _restorable(warehouse_url, sample_dir, lake)
    with monkeypatch.context() as patch:
        inject(patch, boundary)
        with pytest.raises(Injected):
            restore(warehouse_url, lake, D17, target)
    restore(warehouse_url, lake, D17, target)
    assert_converged(warehouse_url, lake, sample_dir)
    assert read_marker(lake, "tickets", D17)["snapshot_id"] == target


def test_a_restore_killed_after_its_commit_is_finished_by_the_next_run(warehouse_url: str, sample_dir: Path,
                                                                       tmp_path: Path) -> None:
    """The warehouse moved to the target; the marker did not. The partition's next run moves it."""
    lake = _lake(tmp_path)
    target = _restorable(warehouse_url, sample_dir, lake)
    killed = _killed("tasks.restore:settle_lake:before", "--", "restore", warehouse_url, D17.isoformat(),
                     lake.storage.url, target)
    assert killed.returncode == -9, killed.stderr
    assert read_marker(lake, "tickets", D17)["snapshot_id"] != target
    commit(warehouse_url, sample_dir, D17, lake=lake)  # a skip: same inputs
    assert_converged(warehouse_url, lake, sample_dir)
    assert read_marker(lake, "tickets", D17)["snapshot_id"] == target


def test_a_report_file_a_killed_writer_left_is_removed_by_the_next_writer(tmp_path: Path) -> None:
    """Killed between writing its temp file and renaming it, a writer leaves `.name.PID.TID.tmp`; the
    next write in that folder removes it (its process is gone)."""
    script = ("import os, signal, sys; from pathlib import Path; from tasks import atomic;"
              "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL);"
              f"atomic.write_atomic(Path({str(tmp_path / 'evidence.json')!r}), '{{}}')")
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert killed.returncode == -9 and [p.name for p in tmp_path.glob(".*.tmp")]
    from tasks.atomic import write_atomic

    write_atomic(tmp_path / "other.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json"]


@pytest.mark.flow
@sqlite_only
def test_the_command_killed_between_commit_and_evidence_converges_when_rerun(warehouse_url: str, sample_dir: Path,
                                                                             tmp_path: Path, prefect_harness: None) -> None:
    """`datafactory run` killed after its warehouse commit, before its evidence: the rerun is a skip
    that leaves evidence and moves nothing, no temp file stays, no attempt stays RUNNING."""
    from prefect.settings import PREFECT_API_URL

    from tests.test_cli import datafactory

    workspace = sample_dir.parent
    env = {"PREFECT_API_URL": str(PREFECT_API_URL.value())}
    url = f"sqlite:///{workspace / 'warehouse.db'}"
    for day in (D14, D16):
        commit(url, sample_dir, day, lake=Lake(open_storage(str(workspace / "lake"))))
    killed = subprocess.run(
        [sys.executable, "-m", "tests.faults", "tasks.report:write_evidence:before", "--", "cli", "run", "--dataset", "tickets", "--partition",
         "2026-04-17"], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("FACTORY_", "PREFECT_"))}, **env,
             "PREFECT_HOME": str(workspace / "prefect-home"), "FACTORY_MANIFEST_DIR": str(workspace / "manifests"),
             "FACTORY_DATABASE_URL": f"sqlite:///{workspace / 'warehouse.db'}",
             "FACTORY_REPORT_DIR": str(workspace / "reports"), "FACTORY_LAKE_URL": str(workspace / "lake"),
             "PYTHONPATH": str(REPO)})
    assert killed.returncode == -9, killed.stderr
    assert not (workspace / "reports/run_evidence/tickets/2026-04-17").exists()
    again = datafactory(workspace, "run", "--partition", "2026-04-17", api_url=env["PREFECT_API_URL"])
    assert again.returncode == 0 and "skipped" in again.stdout, again.stderr
    assert_converged(url, Lake(open_storage(str(workspace / "lake"))), sample_dir)
    assert list((workspace / "reports").rglob(".*.tmp")) == []
    assert len(list((workspace / "reports/run_evidence/tickets/2026-04-17").glob("*.json"))) == 1


@pytest.mark.postgres
def test_postgres_going_down_mid_run_is_transient_and_the_rerun_converges(sample_dir: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The warehouse server crashes while a partition is being written (its partition lock dies with its
    session): the failure is transient (Prefect would retry it); once the server is back, the operator's
    rerun closes the dead attempt and converges."""
    import psycopg

    from tasks import warehouse
    from tasks.commit import is_transient
    from tests.pgcluster import find_pg_bin, start_cluster

    if find_pg_bin() is None:
        pytest.skip("PostgreSQL server binaries not found")
    cluster = start_cluster(fsync=True)  # a crash keeps what was committed, as on a real server
    try:
        with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE crashing")
        url, lake = cluster.url("crashing"), _lake(tmp_path)
        for day in (D14, D16):
            commit(url, sample_dir, day, lake=lake)
        real = warehouse.bulk_load

        def crash_then_load(*args: object) -> object:
            cluster.crash()
            return real(*args)

        monkeypatch.setattr(warehouse, "bulk_load", crash_then_load)
        with pytest.raises(Exception) as err:
            commit(url, sample_dir, D17, lake=lake)
        assert is_transient(err.value), repr(err.value)
        monkeypatch.setattr(warehouse, "bulk_load", real)
        cluster.resume()
        get_engine.cache_clear()
        commit(url, sample_dir, D17, lake=lake)
        assert_converged(url, lake, sample_dir)
    finally:
        get_engine.cache_clear()
        cluster.stop()
