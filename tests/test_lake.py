"""The lake's commit protocol on a local folder and on a real S3 endpoint (moto on loopback, via prefect-aws)."""

from __future__ import annotations

from datetime import date, datetime, timezone

import polars as pl
import pytest

from schemas.datasets import get_dataset
from tasks import lake as lake_module
from tasks.lake import (
    Lake,
    commit_snapshot,
    compact_month,
    current_manifest,
    list_snapshots,
    make_current,
    read_partition,
)
from tasks.storage import open_storage

SPEC = get_dataset("tickets")
DAY = date(2026, 4, 17)


def events(first: int, count: int) -> pl.DataFrame:
    """`count` lake rows with event ids first, first+1, ..."""
    stamp = datetime(2026, 4, 17, 9, tzinfo=timezone.utc)
    n = range(first, first + count)
    return pl.DataFrame({
        "event_id": [f"E-{i:04d}" for i in n], "ticket_id": [f"TCK-{i:06d}" for i in n],
        "event_type": ["created"] * count, "created_at": [stamp] * count, "updated_at": [stamp] * count,
        "status": ["new"] * count, "priority": ["normal"] * count, "channel": ["web"] * count,
        "customer_id": ["C-1"] * count, "subject": ["s"] * count, "body": [""] * count,
        "product_line": [None] * count, "tags": [["a"]] * count,
        "_content_hash": [f"h{i}" for i in n], "_delivery_key": [f"dk{i:04d}" for i in n],
        "_manifest_id": ["m"] * count, "_source_uri": ["u"] * count, "_line_number": list(n),
    }, schema_overrides={"product_line": pl.String, "_line_number": pl.Int64})


@pytest.fixture
def lake(lake_url: str) -> Lake:
    return Lake(open_storage(lake_url), retention=3)


def test_a_committed_snapshot_reads_back_row_for_row(lake: Lake) -> None:
    written = events(1, 5)
    manifest = commit_snapshot(lake, SPEC, DAY, written, "run-1")
    assert read_partition(lake, "tickets", DAY).equals(written)
    assert (manifest["rows"], sum(f["rows"] for f in manifest["files"])) == (5, 5)


def test_a_failure_after_publish_leaves_readers_on_the_old_snapshot(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    commit_snapshot(lake, SPEC, DAY, events(1, 5), "run-1")

    def crash(*args: object) -> None:
        raise OSError("power cut before the manifest (injected)")

    with monkeypatch.context() as patch:
        patch.setattr(lake_module, "_write_marker", crash)
        with pytest.raises(OSError):
            commit_snapshot(lake, SPEC, DAY, events(100, 2), "run-2")
    assert read_partition(lake, "tickets", DAY).equals(events(1, 5))


def test_the_next_commit_deletes_what_a_failed_one_left(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(lake_module, "_write_marker", lambda *args: (_ for _ in ()).throw(OSError("injected")))
        with pytest.raises(OSError):
            commit_snapshot(lake, SPEC, DAY, events(100, 2), "run-1")
    manifest = commit_snapshot(lake, SPEC, DAY, events(1, 3), "run-2")
    data = [k for k in lake.storage.list(lake.prefix("tickets", DAY)) if "/data/" in k or "/_tmp/" in k]
    assert data == [f"{lake.prefix('tickets', DAY)}/{f['path']}" for f in manifest["files"]]


def test_a_rerun_replaces_the_rows_and_never_mixes_files(lake: Lake) -> None:
    commit_snapshot(lake, SPEC, DAY, events(1, 5), "run-1")
    second = commit_snapshot(lake, SPEC, DAY, events(3, 2), "run-2")
    assert read_partition(lake, "tickets", DAY).equals(events(3, 2))
    assert current_manifest(lake, "tickets", DAY)["files"] == second["files"]


def test_retention_keeps_the_newest_snapshots(lake: Lake) -> None:
    ids = [commit_snapshot(lake, SPEC, DAY, events(i, 1), f"run-{i}")["snapshot_id"] for i in range(5)]
    assert [m["snapshot_id"] for m in list_snapshots(lake, "tickets", DAY)] == ids[-3:]


def test_an_older_snapshot_can_be_made_current_again(lake: Lake) -> None:
    first = commit_snapshot(lake, SPEC, DAY, events(1, 4), "run-1")
    commit_snapshot(lake, SPEC, DAY, events(50, 1), "run-2")
    make_current(lake, "tickets", DAY, first["snapshot_id"])
    assert read_partition(lake, "tickets", DAY).equals(events(1, 4))


def test_compaction_rewrites_many_files_into_one_with_the_same_rows(lake_url: str) -> None:
    small = Lake(open_storage(lake_url), rows_per_file=3)
    before = commit_snapshot(small, SPEC, DAY, events(1, 10), "run-1")
    [report] = compact_month(Lake(open_storage(lake_url)), SPEC, "2026-04")
    after = current_manifest(small, "tickets", DAY)
    assert (len(before["files"]), report["files_after"], len(after["files"])) == (4, 1, 1)
    assert read_partition(small, "tickets", DAY).equals(events(1, 10))
