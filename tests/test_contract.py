"""The ticket contract and the reader, without a database: each rule a user relies on."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import date, datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from schemas.datasets import get_dataset
from tasks.generate import write_manifest
from tasks.manifests import read_manifests
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
    ("created_at", "2026-04-17T08:00:00+02:00", "not an ISO-8601 UTC timestamp"),
    ("created_at", "2026-02-30T08:00:00Z", "not an ISO-8601 UTC timestamp"),
    ("created_at", "2026-04-16T23:59:60Z", "not an ISO-8601 UTC timestamp"),
    ("tags", ["a", None], "no_null_items"),
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


def _csv_delivery(tmp_path: Path, data: bytes) -> ValidatedBatch:
    source = tmp_path / "sources" / "events.csv"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(data)
    write_manifest(tmp_path, "m-1", "tickets", DAY, datetime(2026, 4, 17, 23, tzinfo=timezone.utc), [source])
    return validate_batch(SPEC, read_manifests(SPEC, partition_manifests(tmp_path, "tickets", DAY), tmp_path), DAY)


def _csv_bytes(events: list[dict], header: list[str] | None = None) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header or list(events[0]))
    for e in events:
        writer.writerow([json.dumps(v) if isinstance(v, list) else ("" if v is None else v) for v in e.values()])
    return out.getvalue().encode()


def test_a_csv_header_with_a_byte_order_mark_reads_like_one_without(tmp_path: Path) -> None:
    batch = _csv_delivery(tmp_path, b"\xef\xbb\xbf" + _csv_bytes([event(), event(event_id="E-2")]))
    assert (batch.quarantine.height, batch.events["event_id"].to_list()) == (0, ["E-1", "E-2"])


def test_invalid_utf8_in_a_csv_cell_is_quarantined_not_replaced(tmp_path: Path) -> None:
    data = _csv_bytes([event(), event(event_id="E-2", subject="BAD")]).replace(b"BAD", b"B\xffD")
    batch = _csv_delivery(tmp_path, data)
    [(line, code, detail)] = reasons(batch)
    assert (line, code, detail) == (3, "malformed_record", "not valid UTF-8 text in column 'subject'")
    assert "\\udcff" in batch.quarantine["raw_payload"][0]  # the byte is kept, escaped, not replaced
    assert batch.events["event_id"].to_list() == ["E-1"]


def test_a_nul_in_a_csv_cell_is_a_violation_of_that_column(tmp_path: Path) -> None:
    batch = _csv_delivery(tmp_path, _csv_bytes([event(subject="a\x00b")]))
    assert reasons(batch) == [(2, "schema_violation", "subject: no_nul_characters")]


def test_a_csv_header_naming_a_column_twice_makes_every_row_malformed(tmp_path: Path) -> None:
    header = [*event(), "subject"]
    rows = _csv_bytes([event()], header).decode().splitlines()
    data = ("\n".join([rows[0], rows[1] + ",other"]) + "\n").encode()
    [(line, code, detail)] = reasons(_csv_delivery(tmp_path, data))
    assert (line, code, detail) == (2, "malformed_record", "the header names 'subject' twice")


def test_a_parquet_asset_that_is_not_parquet_is_one_error_naming_the_manifest(tmp_path: Path) -> None:
    from tasks.errors import InputError

    source = tmp_path / "sources" / "events.parquet"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"PAR1 this is not parquet")
    manifest = write_manifest(tmp_path, "m-1", "tickets", DAY, datetime(2026, 4, 17, 23, tzinfo=timezone.utc), [])
    data = json.loads(manifest.read_text())
    data["assets"] = [{"uri": "sources/events.parquet", "format": "parquet",
                       "sha256": hashlib.sha256(source.read_bytes()).hexdigest(), "record_count": 1}]
    manifest.write_text(json.dumps(data, indent=2))
    with pytest.raises(InputError) as err:
        partition_manifests(tmp_path, "tickets", DAY)
    assert err.value.field == "assets[0].format" and "is not a readable Parquet file" in str(err.value)


def test_a_wrong_json_type_is_a_violation_however_the_key_is_spelled(tmp_path: Path) -> None:
    """`"\\u0073ubject": 12345` is the key subject: its number is a type violation, never coerced."""
    line = json.dumps(event()).replace('"subject": "s"', '"\\u0073ubject": 12345')
    assert reasons(deliver(tmp_path, [line])) == [(1, "schema_violation", "subject: dtype(string) got int")]


def test_a_record_naming_a_field_twice_is_malformed(tmp_path: Path) -> None:
    line = json.dumps(event()).replace('"subject": "s"', '"subject": "first", "subject": "last"')
    [(number, code, detail)] = reasons(deliver(tmp_path, [line]))
    assert (number, code) == (1, "malformed_record") and "'subject' appears twice" in detail


@pytest.mark.parametrize("spelling", [
    '"subject": null, "subject": "last"',  # the first is null: Polars decodes one field fewer
    '"subject": "same", "subject": "same"',  # both agree: still the same key twice
    '"subject": "s", "extra": 1, "extra": 2',  # a field outside the contract, repeated
    '"subject": "s", "extra": {"k": 1, "k": 2}',  # repeated inside a nested object
], ids=["first-null", "equal-values", "extra-field", "nested"])
def test_a_repeated_key_is_malformed_wherever_it_hides(tmp_path: Path, spelling: str) -> None:
    """Beside ordinary lines (the bulk decoder's path), each of these is refused one by one."""
    plain = [json.dumps(event(event_id=f"e-{n}")) for n in range(3)]
    line = json.dumps(event(event_id="e-dup")).replace('"subject": "s"', spelling)
    found = reasons(deliver(tmp_path, [*plain, line]))
    assert [(number, code) for number, code, _ in found] == [(4, "malformed_record")]


def test_pandera_settings_in_the_environment_cannot_switch_the_contract_off(tmp_path: Path) -> None:
    """PANDERA_VALIDATION_ENABLED=False or DEPTH=SCHEMA_ONLY (read at import) leave our validation on."""
    from pandera.config import PanderaConfig, ValidationDepth, reset_config_context

    reset_config_context(PanderaConfig(validation_enabled=False, validation_depth=ValidationDepth.SCHEMA_ONLY))
    try:
        batch = deliver(tmp_path, [json.dumps(event(priority="p0"))])
    finally:
        reset_config_context()
    assert [code for _, code, _ in reasons(batch)] == ["schema_violation"]


def test_a_check_that_cannot_run_fails_the_run_as_a_broken_contract() -> None:
    """A frame-level failure (no row to blame) is a bug in schemas/, never silently dropped."""
    import pandera.polars as pa

    from tasks.errors import ContractDefinitionError
    from tasks.validate import contract_failures, parse_fields

    class Broken(SPEC.model):  # type: ignore[misc, valid-type]
        @pa.dataframe_check(name="explodes")
        @classmethod
        def explodes(cls, data: pa.PolarsData) -> pl.LazyFrame:
            raise RuntimeError("a check with a bug")

    from dataclasses import replace

    from tasks.read import raw_schema

    frame = parse_fields(SPEC, pl.DataFrame([event()], schema=raw_schema(SPEC)).with_columns(
        pl.lit(None, dtype=pl.String).alias("_type_errors")))
    with pytest.raises(ContractDefinitionError, match="explodes"):
        contract_failures(replace(SPEC, model=Broken), frame)


def test_a_csv_cell_longer_than_128_kib_stays_one_cell(tmp_path: Path) -> None:
    """Python's csv stops at 131,072 characters a field by default; past such an error, text inside a
    cell could pass for a record of its own. The limit is raised: the long cell is one record's body."""
    forged = ",".join(str(v) for v in event(event_id="E-FORGED").values())
    long_body = "x" * 140_000 + "\n" + forged
    batch = _csv_delivery(tmp_path, _csv_bytes([event(body=long_body)]))
    assert (batch.quarantine.height, batch.events["event_id"].to_list()) == (0, ["E-1"])
    assert batch.events["body"][0] == long_body


def test_a_parquet_integer_wider_than_64_bits_is_kept_in_the_raw_payload(tmp_path: Path) -> None:
    """orjson refuses 128-bit integers; the payload falls back to strict JSON that keeps the value."""
    path = tmp_path / "sources" / "events.parquet"
    path.parent.mkdir(parents=True)
    pl.DataFrame([event()], schema_overrides={"product_line": pl.String, "tags": pl.List(pl.String)}).with_columns(
        extra=pl.lit(2**100, dtype=pl.Int128)).write_parquet(path)
    write_manifest(tmp_path, "m-1", "tickets", DAY, datetime(2026, 4, 17, 23, tzinfo=timezone.utc), [path])
    batch = validate_batch(SPEC, read_manifests(SPEC, partition_manifests(tmp_path, "tickets", DAY), tmp_path), DAY)
    assert batch.quarantine.height == 0
    assert json.loads(batch.events["_raw_payload"][0])["extra"] == 2**100
