"""Verify finds state changed behind the factory's back, each with its reason, on both databases and
both lakes; health finds it in its window; the partition is untrusted (held back) until repaired."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
from sqlalchemy import text

from schemas.datasets import get_dataset
from tasks.database import get_engine, reading
from tasks.lake import Lake
from tasks.lake_state import snapshot_listing
from tasks.status import partition_status
from tasks.storage import open_storage
from tasks.verify import untrusted_partitions, verify
from tests.conftest import sqlite_only
from tests.helpers import DAYS, commit_with_evidence

D14, D16, D17 = DAYS
SPEC = get_dataset("tickets")


class Factory:
    """Three committed partitions (2026-04-17 twice: a retained older snapshot), with their evidence."""

    def __init__(self, url: str, lake: Lake, root: Path, reports: Path) -> None:
        self.url, self.lake, self.root, self.reports = url, lake, root, reports
        for day in DAYS:
            commit_with_evidence(url, root, day, lake, reports)
        commit_with_evidence(url, root, D17, lake, reports, force=True)
        listing = snapshot_listing(get_engine(url), lake, "tickets", D17)
        self.older, self.current = listing[0]["snapshot_id"], listing[1]["snapshot_id"]

    def key(self, name: str, snapshot: str | None = None) -> str:
        return f"{self.lake.prefix('tickets', D17)}/" + name.format(snapshot=snapshot or self.current)

    def file_key(self, snapshot: str | None = None) -> str:
        record = json.loads(self.lake.storage.read(self.key("_snapshots/{snapshot}.json", snapshot)))
        return self.key(record["files"][0]["path"])

    def sql(self, statement: str) -> None:
        with get_engine(self.url).begin() as conn:
            conn.execute(text(statement))

    def findings(self, deep: bool = False) -> set[tuple[str, str, bool]]:
        found = verify(get_engine(self.url), self.lake, SPEC, self.reports, deep=deep)
        return {(f.reason, f.partition, f.current) for f in found}


@pytest.fixture
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Outside tmp_path: the evidence-contract fixture must not judge evidence a test tampered with."""
    return tmp_path_factory.mktemp("reports")


@pytest.fixture
def factory(warehouse_url: str, lake_url: str, sample_dir: Path, reports: Path) -> Factory:
    return Factory(warehouse_url, Lake(open_storage(lake_url), retention=3), sample_dir, reports)


def _flip(data: bytes) -> bytes:
    raw = bytearray(data)
    raw[len(raw) // 2] ^= 0xFF
    return bytes(raw)


def _write_record(f: Factory, change: Callable[[dict], None]) -> None:
    key = f.key("_snapshots/{snapshot}.json")
    record = json.loads(f.lake.storage.read(key))
    change(record)
    f.lake.storage.write(key, json.dumps(record, indent=2).encode())


TAMPERING: dict[str, tuple[Callable[[Factory], None], str, bool]] = {
    # name: (what is done behind the factory's back, the reason verify gives, deep)
    "marker_deleted": (lambda f: f.lake.storage.delete([f.key("manifest.json")]), "lake_marker_missing", False),
    "marker_edited": (lambda f: f.lake.storage.write(f.key("manifest.json"), json.dumps(
        {**json.loads(f.lake.storage.read(f.key("manifest.json"))), "rows": 0}).encode()), "lake_marker_invalid", False),
    "success_names_another": (lambda f: f.lake.storage.write(f.key("_SUCCESS"), f.older.encode()),
                              "lake_marker_stale", False),
    "record_deleted": (lambda f: f.lake.storage.delete([f.key("_snapshots/{snapshot}.json")]),
                       "snapshot_record_missing", False),
    "record_claims_other_partition": (lambda f: _write_record(f, lambda r: r.update(partition_key="2026-04-16")),
                                      "snapshot_record_changed", False),
    "data_file_deleted": (lambda f: f.lake.storage.delete([f.file_key()]), "lake_file_missing", False),
    "data_file_truncated": (lambda f: f.lake.storage.write(f.file_key(), f.lake.storage.read(f.file_key())[:-9]),
                            "lake_file_corrupt", False),
    "data_file_byte_flipped": (lambda f: f.lake.storage.write(f.file_key(), _flip(f.lake.storage.read(f.file_key()))),
                               "lake_file_corrupt", True),
    "bronze_rows_deleted": (lambda f: f.sql("DELETE FROM raw_ticket_event WHERE event_id = 'E-0304'"),
                            "warehouse_rows_missing", False),
    "bronze_row_edited": (lambda f: f.sql("UPDATE raw_ticket_event SET _content_hash = 'x' WHERE event_id = 'E-0304'"),
                          "warehouse_rows_changed", False),
    "silver_key_edited": (lambda f: f.sql("UPDATE ticket_fact SET last_event_id = 'E-BOGUS' "
                                          "WHERE ticket_id = 'TCK-000109'"), "silver_inconsistent", False),
    "silver_content_edited": (lambda f: f.sql("UPDATE ticket_fact SET status = 'closed', priority = 'low' "
                                              "WHERE _partition_key = '2026-04-17'"), "silver_rows_changed", True),
    "quarantine_rows_deleted": (lambda f: f.sql("DELETE FROM quarantine WHERE partition_key = '2026-04-17'"),
                                "quarantine_rows_missing", False),  # its one row is a conflicting copy
    "quarantine_row_added": (lambda f: f.sql(
        "INSERT INTO quarantine (dataset, partition_key, batch_id, manifest_id, source_uri, line_number, reason_code, "
        "detail, raw_payload, quarantined_at) VALUES ('tickets', '2026-04-17', 'b', 'm', 'u', 1, 'malformed_record', "
        "'by hand', '{', '2026-04-17 10:00:00')"), "quarantine_rows_unexpected", False),
    "ledger_run_replaced": (lambda f: f.sql("UPDATE partition_state SET run_id = 'not-a-run' "
                                            "WHERE partition_key = '2026-04-17'"), "ledger_run_missing", False),
    "check_results_deleted": (lambda f: f.sql("DELETE FROM check_result WHERE partition_key = '2026-04-17'"),
                              "checks_missing", False),
    "lake_current_deleted": (lambda f: f.sql("DELETE FROM lake_current WHERE partition_key = '2026-04-17'"),
                             "ledger_snapshot_missing", False),
    "evidence_deleted": (lambda f: [p.unlink() for p in (f.reports / "run_evidence/tickets/2026-04-17").glob("*.json")],
                         "evidence_missing", False),
    "evidence_truncated": (lambda f: [p.write_text(p.read_text()[:50]) for p in
                                      (f.reports / "run_evidence/tickets/2026-04-17").glob("*.json")],
                           "evidence_invalid", False),
}


def test_an_untouched_factory_verifies_clean_cheap_and_deep(factory: Factory) -> None:
    assert factory.findings() == set() and factory.findings(deep=True) == set()


# what a database does differently (its SQL, its types) shows in these; the lake's and the evidence's
# tampering is the same whatever the warehouse, and runs on SQLite
ON_POSTGRES = {"bronze_rows_deleted", "bronze_row_edited", "silver_key_edited", "silver_content_edited",
               "quarantine_rows_deleted", "quarantine_row_added", "ledger_run_replaced", "lake_current_deleted"}


def _warehouses(names: list[str]) -> list:
    return [pytest.param(db, name, marks=[pytest.mark.postgres] if db == "postgres" else [], id=f"{db}-{name}")
            for name in names for db in ("sqlite", "postgres") if db == "sqlite" or name in ON_POSTGRES]


@pytest.mark.parametrize(("warehouse_url", "tampering"), _warehouses(sorted(TAMPERING)), indirect=["warehouse_url"])
def test_each_tampering_is_found_with_its_reason(warehouse_url: str, sample_dir: Path, tmp_path: Path,
                                                 reports: Path, tampering: str) -> None:
    """Local lake: the one reason each tampering calls for, on 2026-04-17 only."""
    factory = Factory(warehouse_url, Lake(open_storage(str(tmp_path / "lake")), retention=3), sample_dir, reports)
    tamper, reason, deep = TAMPERING[tampering]
    tamper(factory)
    found = factory.findings(deep=deep)
    assert (reason, "2026-04-17", True) in found, found
    assert {p for _, p, _ in found} == {"2026-04-17"}


@pytest.mark.s3
@sqlite_only
@pytest.mark.parametrize("tampering", ["marker_deleted", "record_claims_other_partition", "data_file_deleted",
                                       "data_file_byte_flipped"])
def test_lake_tampering_is_found_on_s3(warehouse_url: str, sample_dir: Path, reports: Path, s3_bucket_url: str,
                                       tampering: str) -> None:
    factory = Factory(warehouse_url, Lake(open_storage(s3_bucket_url), retention=3), sample_dir, reports)
    tamper, reason, deep = TAMPERING[tampering]
    tamper(factory)
    assert (reason, "2026-04-17", True) in factory.findings(deep=deep)


@sqlite_only
def test_a_damaged_older_snapshot_is_found_but_leaves_the_partition_trusted(factory: Factory) -> None:
    factory.lake.storage.delete([factory.key("_snapshots/{snapshot}.json", factory.older)])
    assert factory.findings() == {("snapshot_record_missing", "2026-04-17", False)}
    with reading(get_engine(factory.url)) as conn:
        assert untrusted_partitions(conn, "tickets") == {}


@sqlite_only
def test_an_untrusted_partition_is_held_back_until_a_rerun_repairs_it(factory: Factory) -> None:
    """Status shows it untrusted; the backfill plan proposes a rerun; the rerun clears the verdict and
    the next verify finds nothing."""
    from tasks.manifests import discover_manifests
    from tasks.plan import plan_backfill

    TAMPERING["bronze_rows_deleted"][0](factory)
    factory.lake.storage.delete([factory.key("manifest.json")])
    assert {r for r, _, _ in factory.findings()} == {"warehouse_rows_missing", "silver_inconsistent",
                                                     "lake_marker_missing"}
    engine = get_engine(factory.url)
    status = {r["partition"]: r["status"] for r in partition_status(engine, "tickets", set())}
    assert status == {"2026-04-14": "succeeded", "2026-04-15": "no_input", "2026-04-16": "succeeded",
                      "2026-04-17": "untrusted"}
    plan = plan_backfill(engine, SPEC, discover_manifests(factory.root), D17, D17, D14, "dry-run", True, "test", "-")
    assert [(e["gap_reason"], e["proposed_action"]) for e in plan] == [("untrusted_partition", "rerun")]
    commit_with_evidence(factory.url, factory.root, D17, factory.lake, factory.reports, force=True)
    with reading(engine) as conn:
        assert untrusted_partitions(conn, "tickets") == {}
    assert factory.findings() == set()


@sqlite_only
def test_health_finds_tampering_in_its_window(factory: Factory) -> None:
    from tasks.health import verified

    factory.lake.storage.delete([factory.file_key()])
    found = verified(get_engine(factory.url), factory.lake, SPEC, factory.reports, (D14, D17))
    assert [(f.kind, f.partition) for f in found] == [("lake_file_missing", "2026-04-17")]


@sqlite_only
def test_verify_writes_only_its_verdicts(factory: Factory) -> None:
    """Verifying is reading: no attempt, no data row; only the verdicts (and a decision-log row when one
    changes)."""
    engine = get_engine(factory.url)
    tables = ("ingest_run", "raw_ticket_event", "ticket_fact", "quarantine", "lake_snapshot", "partition_state")

    def counts() -> list[int]:
        with reading(engine) as conn:
            return [conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in tables]

    before = counts()
    factory.findings(deep=True)
    assert counts() == before


@sqlite_only
def test_the_command_names_each_finding_and_exits_1(warehouse_url: str, sample_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    """`datafactory verify` as an operator runs it; `status` then draws the partition as U and `checks`
    exits 1 for it."""
    from tests.helpers import cli

    workspace = sample_dir.parent
    factory = Factory(f"sqlite:///{workspace / 'warehouse.db'}", Lake(open_storage(str(workspace / "lake"))),
                      sample_dir, workspace / "reports")
    assert cli(monkeypatch, capsys, workspace, "verify")[0] == 0
    factory.lake.storage.delete([factory.file_key()])
    code, out, _ = cli(monkeypatch, capsys, workspace, "verify", "--dataset", "tickets", "--json")
    report = json.loads(out)
    assert code == 1 and [(f["reason"], f["partition"]) for f in report["findings"]] == [
        ("lake_file_missing", "2026-04-17")]
    assert report["what_to_do"] == {"lake_file_missing": "current: rerun, or restore an older one"}
    code, out, _ = cli(monkeypatch, capsys, workspace, "status")
    assert code == 0 and "2026-04               S.SU" in out.splitlines()
    code, out, _ = cli(monkeypatch, capsys, workspace, "checks", "--partition", "2026-04-17")
    assert code == 1 and out.strip().splitlines()[-1].startswith("tickets/2026-04-17: UNTRUSTED: verify found")
