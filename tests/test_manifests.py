"""Manifest validation: schema, business rules, asset fingerprints; errors name file, line and field."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from tasks.errors import InputError
from tasks.manifests import (
    batch_id_for,
    discover_manifests,
    partition_manifests,
    source_fingerprint,
)

D14 = date(2026, 4, 14)
MANIFEST = "tickets-2026-04-14-a.json"


def _edit(sample_dir: Path, change) -> Path:  # type: ignore[no-untyped-def]
    path = sample_dir / MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))
    return path


def test_shipped_manifests_are_valid(sample_dir: Path) -> None:
    manifests = discover_manifests(sample_dir)
    assert sorted(m.manifest_id for m in manifests) == [
        "orders-2026-04-14-a", "orders-2026-04-16-a", "orders-2026-04-17-a", "orders-2026-04-17-b",
        "tickets-2026-04-14-a", "tickets-2026-04-16-a", "tickets-2026-04-17-a", "tickets-2026-04-17-b"]
    assert [m.manifest_id for m in partition_manifests(sample_dir, "tickets", date(2026, 4, 17))] == [
        "tickets-2026-04-17-a", "tickets-2026-04-17-b"]


def test_changed_source_is_rejected_naming_the_sha256_line(sample_dir: Path) -> None:
    source = sample_dir / "sources/tickets/2026-04-14/events.jsonl"
    source.write_text(source.read_text().replace("Refund request", "Refund requested"))
    with pytest.raises(InputError) as err:
        partition_manifests(sample_dir, "tickets", D14)
    assert err.value.field == "assets[0].sha256" and err.value.line == 12
    assert err.value.reason_code == "source_fingerprint_changed"


def test_wrong_record_count_is_rejected(sample_dir: Path) -> None:
    _edit(sample_dir, lambda m: m["assets"][0].update(record_count=9))
    with pytest.raises(InputError, match=r"assets\[0\]\.record_count: declared 9 records but .* has 8"):
        partition_manifests(sample_dir, "tickets", D14)


def test_a_schema_version_the_dataset_does_not_read_is_one_line_naming_it(sample_dir: Path) -> None:
    _edit(sample_dir, lambda m: m.update(schema_version="2"))
    with pytest.raises(InputError) as err:
        partition_manifests(sample_dir, "tickets", D14)
    assert (err.value.field, err.value.line) == ("schema_version", 6)
    assert str(err.value).endswith("'2' is no schema version of dataset tickets (it reads 1; "
                                   "DatasetSpec.schema_versions)")


def test_uri_escaping_the_manifest_root_is_rejected(sample_dir: Path) -> None:
    _edit(sample_dir, lambda m: m["assets"][0].update(uri="../../outside.jsonl"))
    with pytest.raises(InputError, match=r"assets\[0\]\.uri: '../../outside.jsonl' escapes"):
        partition_manifests(sample_dir, "tickets", D14)


def test_schema_error_names_line_and_field(sample_dir: Path) -> None:
    path = _edit(sample_dir, lambda m: m["assets"][0].update(format="xml"))
    with pytest.raises(InputError) as err:
        discover_manifests(sample_dir)
    assert str(err.value) == f"{path}:11: assets[0].format: 'xml' is not one of ['jsonl', 'csv', 'parquet']"


def test_missing_field_is_named(sample_dir: Path) -> None:
    _edit(sample_dir, lambda m: m.pop("produced_at"))
    with pytest.raises(InputError, match="produced_at: 'produced_at' is a required property"):
        discover_manifests(sample_dir)


def test_same_inputs_are_the_same_batch(sample_dir: Path) -> None:
    """The batch id is a function of (dataset, partition, fingerprint): reruns reuse it."""
    first = partition_manifests(sample_dir, "tickets", D14)
    again = partition_manifests(sample_dir, "tickets", D14)
    assert batch_id_for("tickets", D14, source_fingerprint(first)) == batch_id_for("tickets", D14, source_fingerprint(again))


def test_an_asset_verified_before_is_not_read_again_until_it_changes(sample_dir: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The no-op run of a large delivery does not hash it again; a file rewritten in place, same size
    and its old mtime given back, is read again and its change found."""
    import os

    import tasks.manifests as manifests

    monkeypatch.setenv("FACTORY_DIGEST_CACHE", str(tmp_path / "digests.sqlite3"))
    partition_manifests(sample_dir, "tickets", D14)
    reads = []
    real = manifests.jsonl_blocks
    monkeypatch.setattr(manifests, "jsonl_blocks", lambda *a: reads.append(1) or real(*a))
    partition_manifests(sample_dir, "tickets", D14)
    assert reads == []

    source = sample_dir / "sources/tickets/2026-04-14/events.jsonl"
    before = source.stat()
    source.write_text(source.read_text().replace("Refund request", "Refund Request"))  # same size
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(InputError) as err:
        partition_manifests(sample_dir, "tickets", D14)
    assert (reads, err.value.reason_code) == ([1], "source_fingerprint_changed")


def test_manifests_write_declares_a_deliverys_files_as_every_run_checks_them(
        sample_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from tests.helpers import cli

    source = sample_dir / "sources" / "mine" / "events.csv"
    source.parent.mkdir(parents=True)
    source.write_text((sample_dir / "sources/orders/2026-04-17/orders-b.csv").read_text())
    code, out, _ = cli(monkeypatch, capsys, sample_dir.parent, "manifests", "write", "--dataset", "orders",
                       "--partition", "2026-04-18", "--manifest-id", "mine-1", str(source))
    assert (code, out.strip()) == (0, f"wrote {sample_dir.resolve() / 'mine-1.json'}: orders/2026-04-18, "
                                      "3 records in 1 asset(s)")
    [manifest] = partition_manifests(sample_dir, "orders", date(2026, 4, 18))
    assert (manifest.assets[0].uri, manifest.assets[0].format, manifest.schema_version) == (
        "sources/mine/events.csv", "csv", "1")
