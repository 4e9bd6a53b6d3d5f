"""The ticket contract and the reader, without a database: each rule a user relies on."""

from __future__ import annotations

import csv
import json
from datetime import date, datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from schemas.datasets import get_dataset
from tasks.generate import write_manifest
from tasks.ingest import read_manifests
from tasks.manifests import partition_manifests
from tasks.validate import ValidatedBatch, validate_batch

DAY = date(2026, 4, 17)
SPEC = get_dataset("tickets")


def event(**overrides: object) -> dict:
    base = {"event_id": "E-1", "ticket_id": "TCK-000001", "event_type": "created",
            "created_at": "2026-04-17T08:00:00Z", "updated_at": "2026-04-17T09:00:00Z", "status": "new",
            "priority": "low", "channel": "web", "customer_id": "C-1", "subject": "s", "body": "",
            "product_line": None, "tags": []}
    return {**base, **overrides}


def deliver(tmp_path: Path, lines: list[str], name: str = "events.jsonl") -> ValidatedBatch:
    source = tmp_path / "sources" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("\n".join(lines) + "\n")
    write_manifest(tmp_path, "m-1", "tickets", DAY, datetime(2026, 4, 17, 23, tzinfo=timezone.utc), [source])
    manifests = partition_manifests(tmp_path, "tickets", DAY)
    return validate_batch(SPEC, read_manifests(SPEC, manifests, tmp_path), DAY)


def reasons(batch: ValidatedBatch) -> list[tuple[int, str, str]]:
    return [(r["line_number"], r["reason_code"], r["detail"]) for r in batch.quarantine.iter_rows(named=True)]


def test_unparseable_lines_are_quarantined_with_their_line_numbers(tmp_path: Path) -> None:
    """Not JSON, a JSON array: malformed, at their own line numbers; blank lines are not records."""
    batch = deliver(tmp_path, [json.dumps(event()), "", "{oops", "[1, 2]", json.dumps(event(event_id="E-2"))])
    assert [(line, code) for line, code, _ in reasons(batch)] == [(3, "malformed_record"), (4, "malformed_record")]
    assert (batch.total, batch.events.height) == (4, 2)


def test_invalid_utf8_line_is_malformed_and_the_rest_is_read(tmp_path: Path) -> None:
    source = tmp_path / "sources" / "events.jsonl"
    source.parent.mkdir(parents=True)
    source.write_bytes(json.dumps(event()).encode() + b"\n\xff\xfe{}\n" + json.dumps(event(event_id="E-2")).encode() + b"\n")
    write_manifest(tmp_path, "m-1", "tickets", DAY, datetime(2026, 4, 17, 23, tzinfo=timezone.utc), [source])
    batch = validate_batch(SPEC, read_manifests(SPEC, partition_manifests(tmp_path, "tickets", DAY), tmp_path), DAY)
    assert [(line, code) for line, code, _ in reasons(batch)] == [(2, "malformed_record")]
    assert batch.events["event_id"].to_list() == ["E-1", "E-2"]


def test_utc_offsets_and_fractions_are_accepted(tmp_path: Path) -> None:
    batch = deliver(tmp_path, [
        json.dumps(event(created_at="2026-04-17T08:00:00.123456+00:00", updated_at="2026-04-17T09:00:00.5Z")),
    ])
    assert batch.quarantine.height == 0
    assert batch.events["updated_at"][0] == datetime(2026, 4, 17, 9, 0, 0, 500000, tzinfo=timezone.utc)


@pytest.mark.parametrize(("field", "value", "check"), [
    ("created_at", "2026-04-17T08:00:00+02:00", "str_matches"),
    ("created_at", "2026-02-30T08:00:00Z", "is_real_utc_instant"),
    ("created_at", "2026-04-16T23:59:60Z", "str_matches"),
    ("tags", ["a", None], "no_null_tags"),
    ("event_type", "deleted", "isin"),
    ("channel", "fax", "isin"),
    ("status", "archived", "isin"),
    ("event_id", "", "str_length"),
    ("body", None, "not_nullable"),
    ("ticket_id", "TCK-12345", "str_matches"),
    ("priority", 3, "dtype(string) got int"),
])
def test_each_rule_names_its_column_and_check(tmp_path: Path, field: str, value: object, check: str) -> None:
    batch = deliver(tmp_path, [json.dumps(event(**{field: value}))])
    [(line, code, detail)] = reasons(batch)
    assert (line, code) == (1, "schema_violation")
    assert detail.startswith(f"{field}: ") and check in detail


def test_all_failures_of_a_record_are_reported_at_once(tmp_path: Path) -> None:
    batch = deliver(tmp_path, [json.dumps(event(priority="p0", channel="fax", subject=""))])
    [(_, _, detail)] = reasons(batch)
    assert [part.split(":")[0] for part in detail.split("; ")] == ["priority", "channel", "subject"]


def test_null_product_line_and_empty_body_are_valid(tmp_path: Path) -> None:
    batch = deliver(tmp_path, [json.dumps(event(product_line=None, body=""))])
    assert batch.quarantine.height == 0


def test_event_at_the_window_end_is_a_future_event(tmp_path: Path) -> None:
    """The window is [day 00:00, next day 00:00) UTC; an event stamped at the end is already outside."""
    batch = deliver(tmp_path, [json.dumps(event(updated_at="2026-04-18T00:00:00Z")),
                               json.dumps(event(event_id="E-2", updated_at="2026-04-17T23:59:59.999999Z"))])
    assert [(line, code) for line, code, _ in reasons(batch)] == [(1, "future_event")]


def test_csv_and_parquet_assets_read_like_jsonl(tmp_path: Path) -> None:
    """The same events as JSONL, CSV and Parquet give the same content hashes."""
    events = [event(), event(event_id="E-2", tags=["x", "y"], product_line="billing")]
    jsonl = deliver(tmp_path / "j", [json.dumps(e) for e in events])

    csv_path = tmp_path / "c" / "sources" / "events.csv"
    csv_path.parent.mkdir(parents=True)
    with csv_path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(events[0]))
        writer.writeheader()
        for e in events:
            writer.writerow({**e, "tags": json.dumps(e["tags"]), "product_line": e["product_line"] or ""})
    write_manifest(tmp_path / "c", "m-1", "tickets", DAY, datetime(2026, 4, 17, 23, tzinfo=timezone.utc), [csv_path])
    from_csv = validate_batch(SPEC, read_manifests(SPEC, partition_manifests(tmp_path / "c", "tickets", DAY),
                                                   tmp_path / "c"), DAY)

    parquet_path = tmp_path / "p" / "sources" / "events.parquet"
    parquet_path.parent.mkdir(parents=True)
    pl.DataFrame(events, schema_overrides={"product_line": pl.String, "tags": pl.List(pl.String)}).write_parquet(parquet_path)
    write_manifest(tmp_path / "p", "m-1", "tickets", DAY, datetime(2026, 4, 17, 23, tzinfo=timezone.utc), [parquet_path])
    from_parquet = validate_batch(SPEC, read_manifests(SPEC, partition_manifests(tmp_path / "p", "tickets", DAY),
                                                       tmp_path / "p"), DAY)

    hashes = [b.events["_content_hash"].to_list() for b in (jsonl, from_csv, from_parquet)]
    assert hashes[0] == hashes[1] == hashes[2] and len(hashes[0]) == 2
