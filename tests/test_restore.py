"""The lake through the partition flow, on a local folder and on S3; restore back to the oracle state."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text

from flows.partition import run_partition, summary_of
from flows.restore import restore_flow
from schemas.settings import load_settings
from schemas.tables import decision_log
from tasks.database import get_engine
from tasks.generate import write_manifest
from tasks.database import reading
from tasks.lake import Lake, open_lake, read_files
from tasks.lake_state import current_record
from tests.conftest import sqlite_only
from tests.helpers import DAYS, commit, data_tables
from tests.test_oracle import assert_matches_oracle

pytestmark = pytest.mark.flow
D17 = date(2026, 4, 17)


def current_manifest(lake: Lake, dataset: str, day: date) -> dict:
    """The partition's current snapshot record, as the ledger committed it."""
    with reading(get_engine(load_settings().database_url)) as conn:
        return current_record(conn, lake, dataset, day)


def read_partition(lake: Lake, dataset: str, day: date):  # type: ignore[no-untyped-def]
    return read_files(lake, dataset, day, current_manifest(lake, dataset, day))


def ingest_samples() -> list:
    return [run_partition(dataset="tickets", partition_key=day) for day in DAYS]


def corrupt_silver_of(url: str, tickets: list[str]) -> None:
    with get_engine(url).begin() as conn:
        for ticket in tickets:
            conn.execute(text("UPDATE ticket_fact SET status = 'closed', last_event_id = 'E-BOGUS' "
                              "WHERE ticket_id = :t"), {"t": ticket})


def test_restore_brings_hand_corrupted_silver_back_to_the_oracle_state(factory_env: str, sample_dir: Path,
                                                                       lake_url: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """On a local lake and on S3, with either warehouse: restore undoes a hand-made silver corruption."""
    monkeypatch.setenv("FACTORY_LAKE_URL", lake_url)
    ingest_samples()
    lake = open_lake(load_settings())
    corrupt_silver_of(factory_env, sorted(set(read_partition(lake, "tickets", D17)["ticket_id"].to_list())))
    snapshot = current_manifest(lake, "tickets", D17)["snapshot_id"]
    summary = summary_of(restore_flow(dataset="tickets", partition_key=D17, snapshot_id=snapshot, return_state=True))
    assert summary.status == "succeeded"
    assert_matches_oracle(factory_env, sample_dir)


@sqlite_only
def test_restore_is_logged_as_an_action_with_evidence_naming_the_snapshot(factory_env: str) -> None:
    ingest_samples()
    snapshot = current_manifest(open_lake(load_settings()), "tickets", D17)["snapshot_id"]
    summary = summary_of(restore_flow(dataset="tickets", partition_key=D17, snapshot_id=snapshot, return_state=True))
    with get_engine(factory_env).connect() as conn:
        last = conn.execute(select(decision_log).order_by(decision_log.c.id.desc())).first()
    evidence = json.loads(Path(summary.evidence_path).read_text())
    assert (last.action, last.reason_code, last.outcome) == ("restore", "untrusted_state", "succeeded")
    assert evidence["outputs"]["lake_snapshot"]["snapshot_id"] == snapshot


@sqlite_only
def test_restore_of_an_older_snapshot_puts_its_rows_back_in_the_lake(factory_env: str) -> None:
    ingest_samples()
    lake = open_lake(load_settings())
    first = current_manifest(lake, "tickets", D17)
    run_partition(dataset="tickets", partition_key=D17, force=True)  # a second snapshot, same rows
    summary_of(restore_flow(dataset="tickets", partition_key=D17, snapshot_id=first["snapshot_id"], return_state=True))
    assert current_manifest(lake, "tickets", D17)["snapshot_id"] == first["snapshot_id"]


@pytest.mark.s3
@sqlite_only
def test_on_s3_every_manifest_lists_the_partitions_valid_events(factory_env: str, s3_bucket_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORY_LAKE_URL", s3_bucket_url)
    summaries = ingest_samples()
    lake = open_lake(load_settings())
    listed = {s.partition_key: sum(f["rows"] for f in current_manifest(lake, "tickets", s.partition_key)["files"])
              for s in summaries}
    assert listed == {s.partition_key: s.bronze_inserted + s.bronze_existing for s in summaries}
    assert data_tables(factory_env)["bronze"]  # and the warehouse has them


@pytest.mark.s3
def test_s3_source_assets_are_read_through_the_same_storage(warehouse_url: str, sample_dir: Path,
                                                             s3_bucket_url: str) -> None:
    import boto3

    bucket = s3_bucket_url.removeprefix("s3://").split("/")[0]
    source = sample_dir / "sources/tickets/2026-04-14/events.jsonl"
    boto3.client("s3").put_object(Bucket=bucket, Key="drops/events.jsonl", Body=source.read_bytes())
    manifest_path = write_manifest(sample_dir, "tickets-2026-04-14-a", "tickets", date(2026, 4, 14),
                                   datetime(2026, 4, 14, 23, tzinfo=timezone.utc), [source])
    manifest = json.loads(manifest_path.read_text())
    manifest["assets"][0]["uri"] = f"s3://{bucket}/drops/events.jsonl"
    manifest_path.write_text(json.dumps(manifest))
    source.unlink()  # only the S3 copy exists now
    done = commit(warehouse_url, sample_dir, date(2026, 4, 14))
    assert done.result.bronze_inserted == 8
