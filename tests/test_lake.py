"""The lake's two-store commit, on a local folder and on a real S3 endpoint (moto on loopback, via
prefect-aws): the warehouse commit is the decision, the marker follows, leftovers are cleaned."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from schemas.datasets import get_dataset
from tasks import lake_state
from tasks.compact import compact_month
from tasks.database import get_engine, reading
from tasks.lake import Lake, read_files, read_marker, read_record
from tasks.lake_state import current_record, snapshot_listing
from tasks.storage import open_storage
from tests.conftest import sqlite_only
from tests.helpers import commit

SPEC = get_dataset("tickets")
D14, D17 = date(2026, 4, 14), date(2026, 4, 17)


@pytest.fixture
def lake(lake_url: str) -> Lake:
    return Lake(open_storage(lake_url), retention=3)


def _current(url: str, lake: Lake, day: date = D14) -> dict:
    with reading(get_engine(url)) as conn:
        record = current_record(conn, lake, "tickets", day)
    assert record is not None
    return record


def _objects(lake: Lake, day: date = D14) -> list[str]:
    prefix = lake.prefix("tickets", day)
    return [k[len(prefix) + 1:] for k in lake.storage.list(prefix, partial=True)]


@sqlite_only
def test_a_committed_snapshot_is_current_in_the_ledger_and_the_marker(warehouse_url: str, sample_dir: Path,
                                                                      lake: Lake) -> None:
    done = commit(warehouse_url, sample_dir, D14, lake=lake)
    record = _current(warehouse_url, lake)
    assert record["snapshot_id"] == done.snapshot["snapshot_id"]
    assert read_marker(lake, "tickets", D14) == record
    assert read_files(lake, "tickets", D14, record).height == 8


@sqlite_only
def test_a_crash_before_the_warehouse_commits_leaves_the_old_snapshot_current(
        warehouse_url: str, sample_dir: Path, lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """Staged files and a record exist, but no ledger row names them: readers and the marker stay put."""
    first = commit(warehouse_url, sample_dir, D14, lake=lake)
    from tasks import ledger

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("power cut before the commit (injected)")

    monkeypatch.setattr(ledger, "finish_run", crash)
    with pytest.raises(OSError):
        commit(warehouse_url, sample_dir, D14, force=True, lake=lake)
    monkeypatch.undo()
    assert _current(warehouse_url, lake)["snapshot_id"] == first.snapshot["snapshot_id"]
    assert read_marker(lake, "tickets", D14)["snapshot_id"] == first.snapshot["snapshot_id"]
    assert len([k for k in _objects(lake) if k.startswith("_snapshots/")]) == 2  # the staged one is left...


@sqlite_only
def test_the_next_commit_deletes_what_a_failed_one_left(warehouse_url: str, sample_dir: Path, lake: Lake,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import ledger

    commit(warehouse_url, sample_dir, D14, lake=lake)
    monkeypatch.setattr(ledger, "finish_run", lambda *a, **k: (_ for _ in ()).throw(OSError("injected")))
    with pytest.raises(OSError):
        commit(warehouse_url, sample_dir, D14, force=True, lake=lake)
    monkeypatch.undo()
    lake.storage.write(f"{lake.prefix('tickets', D14)}/_tmp/x/part-00000.parquet", b"half")  # a killed writer's
    done = commit(warehouse_url, sample_dir, D14, force=True, lake=lake)
    listed = {r["snapshot_id"] for r in snapshot_listing(get_engine(warehouse_url), lake, "tickets", D14)}
    expected = {"manifest.json", "_SUCCESS"} | {f"_snapshots/{i}.json" for i in listed} | {
        f["path"] for i in listed for f in read_record(lake, "tickets", D14, i)["files"]}
    assert set(_objects(lake)) == expected and done.snapshot["snapshot_id"] in listed and len(listed) == 2


@sqlite_only
def test_a_marker_left_behind_by_a_crash_is_moved_by_the_next_run(warehouse_url: str, sample_dir: Path,
                                                                   lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the warehouse committed, before the marker moved: the ledger is right, the next
    run (a skip) moves the marker."""
    first = commit(warehouse_url, sample_dir, D14, lake=lake)
    monkeypatch.setattr(lake_state, "publish_marker", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        commit(warehouse_url, sample_dir, D14, force=True, lake=lake)
    monkeypatch.undo()
    current = _current(warehouse_url, lake)["snapshot_id"]
    assert current != first.snapshot["snapshot_id"]
    assert read_marker(lake, "tickets", D14)["snapshot_id"] == first.snapshot["snapshot_id"]
    again = commit(warehouse_url, sample_dir, D14, lake=lake)
    assert again.result.skipped and read_marker(lake, "tickets", D14)["snapshot_id"] == current


def test_a_rerun_replaces_the_snapshot_and_never_mixes_files(warehouse_url: str, sample_dir: Path, lake: Lake) -> None:
    first = commit(warehouse_url, sample_dir, D17, lake=lake)
    second = commit(warehouse_url, sample_dir, D17, force=True, lake=lake)
    record = _current(warehouse_url, lake, D17)
    assert record["snapshot_id"] == second.snapshot["snapshot_id"] != first.snapshot["snapshot_id"]
    assert all(f["path"].startswith(f"data/{record['snapshot_id']}/") for f in record["files"])
    assert read_files(lake, "tickets", D17, record).height == second.counts.output_count


@sqlite_only
def test_retention_keeps_the_newest_snapshots_and_the_ledger_knows(warehouse_url: str, sample_dir: Path,
                                                                    lake: Lake) -> None:
    ids = [commit(warehouse_url, sample_dir, D14, force=True, lake=lake).snapshot["snapshot_id"] for _ in range(5)]
    listing = snapshot_listing(get_engine(warehouse_url), lake, "tickets", D14)
    assert [m["snapshot_id"] for m in listing] == ids[-3:]
    assert [m["current"] for m in listing] == [False, False, True]
    assert not [k for k in _objects(lake) if any(i in k for i in ids[:2])]


def test_compaction_rewrites_many_files_into_one_with_the_same_rows(warehouse_url: str, sample_dir: Path,
                                                                     lake_url: str) -> None:
    small = Lake(open_storage(lake_url), rows_per_file=3)
    before = commit(warehouse_url, sample_dir, D14, lake=small).snapshot
    [report] = compact_month(get_engine(warehouse_url), Lake(open_storage(lake_url)), SPEC, "2026-04")
    after = _current(warehouse_url, small)
    assert (len(before["files"]), report["files_after"], len(after["files"])) == (3, 1, 1)
    assert read_marker(small, "tickets", D14)["snapshot_id"] == after["snapshot_id"]
    assert read_files(small, "tickets", D14, after).sort("event_id").equals(
        read_files(small, "tickets", D14, before).sort("event_id"))
