"""Warehouse semantics (DESIGN section 7) on SQLite and on a real PostgreSQL, through the plain functions."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from schemas.tables import ingest_run, partition_state
from tasks.database import get_engine
from tests.helpers import (
    DAYS,
    bronze_payload,
    data_tables,
    ingest,
    quarantine_rows,
    silver_rows,
)

D14, D16, D17 = DAYS

EXPECTED = {
    D14: dict(bronze_inserted=8, bronze_existing=0, duplicate_in_batch=0, conflicting=0, late_arriving=0,
              silver_inserted=4, silver_updated=0, silver_unchanged=0, silver_stale_skipped=0, rejected=0),
    D16: dict(bronze_inserted=30, bronze_existing=0, duplicate_in_batch=1, conflicting=0, late_arriving=0,
              silver_inserted=11, silver_updated=1, silver_unchanged=0, silver_stale_skipped=0, rejected=9),
    D17: dict(bronze_inserted=7, bronze_existing=1, duplicate_in_batch=1, conflicting=1, late_arriving=3,
              silver_inserted=3, silver_updated=1, silver_unchanged=0, silver_stale_skipped=1, rejected=1),
}


def ingest_all(url: str, manifest_dir: Path, days: list[date] = DAYS) -> None:
    for day in days:
        ingest(url, manifest_dir, day)


def test_sample_partitions_give_exact_counts(warehouse_url: str, sample_dir: Path) -> None:
    """Every shipped partition, in delivery order, produces exactly the documented counts."""
    for day in DAYS:
        result, rejected = ingest(warehouse_url, sample_dir, day)
        counts = {k: getattr(result, k) for k in EXPECTED[day] if k != "rejected"}
        assert {**counts, "rejected": rejected} == EXPECTED[day], day


def test_reconcile_equations_hold(warehouse_url: str, sample_dir: Path) -> None:
    """valid = duplicates + bronze inserted + existing; entities = the four silver outcomes."""
    for day in DAYS:
        result, rejected = ingest(warehouse_url, sample_dir, day)
        from tasks.manifests import partition_manifests
        total = sum(a.record_count for m in partition_manifests(sample_dir, "tickets", day) for a in m.assets)
        valid = total - rejected
        assert valid == result.duplicate_in_batch + result.bronze_inserted + result.bronze_existing
        assert result.distinct_entities == (result.silver_inserted + result.silver_updated
                                            + result.silver_unchanged + result.silver_stale_skipped)


def test_forced_rerun_leaves_every_data_table_identical(warehouse_url: str, sample_dir: Path) -> None:
    """Rerunning every partition with force changes no row of bronze, silver or quarantine."""
    ingest_all(warehouse_url, sample_dir)
    before = data_tables(warehouse_url)
    for day in DAYS:
        result, _ = ingest(warehouse_url, sample_dir, day, force=True)
        assert result.bronze_inserted == 0 and result.silver_inserted == 0 and result.silver_updated == 0
    assert data_tables(warehouse_url) == before


def test_unforced_second_run_is_a_skip(warehouse_url: str, sample_dir: Path) -> None:
    """The same inputs again are recognised under the partition lock and written no second time."""
    ingest(warehouse_url, sample_dir, D14)
    result, _ = ingest(warehouse_url, sample_dir, D14)
    assert result.skipped is True


def test_processing_order_does_not_change_the_warehouse(warehouse_url: str, sample_dir: Path, tmp_path: Path) -> None:
    """Newest-first gives the same bronze events, silver and quarantine records as oldest-first."""
    ingest_all(warehouse_url, sample_dir, [D17, D14, D16])
    reverse = _business_state(warehouse_url)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    ingest_all(other, sample_dir, DAYS)
    assert reverse == _business_state(other)


def _business_state(url: str) -> dict[str, object]:
    silver = {k: (v["last_event_id"], v["status"], v["updated_at"].replace(tzinfo=None)) for k, v in silver_rows(url).items()}
    quarantine = sorted((q["partition_key"], q["source_uri"], q["line_number"], q["reason_code"]) for q in quarantine_rows(url))
    bronze = sorted((r[0], r[-4]) for r in data_tables(url)["bronze"])  # event_id, first partition
    return {"silver": silver, "quarantine": quarantine, "bronze": bronze}


def test_late_older_update_does_not_win(warehouse_url: str, sample_dir: Path) -> None:
    """E-0301 (updated 04-13, delivered 04-17) loses to E-0004 (updated 04-14) on TCK-000102."""
    ingest_all(warehouse_url, sample_dir)
    row = silver_rows(warehouse_url)["TCK-000102"]
    assert (row["last_event_id"], row["status"]) == ("E-0004", "solved")


def test_tie_on_updated_at_breaks_by_event_id_bytewise(warehouse_url: str, sample_dir: Path) -> None:
    """At equal updated_at the greater event_id wins, bytewise: 'evt-0107' > 'EVT-0108' on both databases."""
    ingest_all(warehouse_url, sample_dir)
    rows = silver_rows(warehouse_url)
    assert rows["TCK-000104"]["last_event_id"] == "evt-0107"
    assert rows["TCK-000108"]["last_event_id"] == "evt-0308"


def test_in_batch_duplicate_counts_once(warehouse_url: str, sample_dir: Path) -> None:
    """E-0209 appears twice on 04-16: one bronze row, one duplicate_in_batch."""
    result, _ = ingest(warehouse_url, sample_dir, D16)
    assert result.duplicate_in_batch == 1
    bronze_ids = [r[0] for r in data_tables(warehouse_url)["bronze"]]
    assert bronze_ids.count("E-0209") == 1


def test_redelivered_event_counts_as_bronze_existing(warehouse_url: str, sample_dir: Path) -> None:
    """E-0003 from 04-14, delivered again unchanged on 04-17, is bronze_existing and keeps its first partition."""
    ingest(warehouse_url, sample_dir, D14)
    result, _ = ingest(warehouse_url, sample_dir, D17)
    assert result.bronze_existing == 1
    bronze = {r[0]: r for r in data_tables(warehouse_url)["bronze"]}
    assert bronze["E-0003"][-4] == "2026-04-14"


def test_conflicting_duplicate_is_quarantined_not_overwritten(warehouse_url: str, sample_dir: Path) -> None:
    """E-0005 redelivered with another status goes to quarantine; bronze keeps the first delivery."""
    ingest(warehouse_url, sample_dir, D14)
    ingest(warehouse_url, sample_dir, D17)
    conflicts = [q for q in quarantine_rows(warehouse_url) if q["reason_code"] == "conflicting_duplicate"]
    assert [(q["event_id"], q["source_uri"], q["line_number"]) for q in conflicts] == [
        ("E-0005", "sources/tickets/2026-04-17/events-a.jsonl", 2)]
    assert bronze_payload(warehouse_url, "E-0005")["status"] == "new"  # the first delivery's content


def test_earlier_delivery_processed_later_displaces_the_conflicting_version(warehouse_url: str, sample_dir: Path) -> None:
    """Ingesting 04-17 before 04-14: the 04-14 version of E-0005 wins and the 04-17 one moves to quarantine."""
    ingest(warehouse_url, sample_dir, D17)
    result, _ = ingest(warehouse_url, sample_dir, D14)
    assert result.bronze_displaced == 1
    conflicts = [(q["partition_key"], q["event_id"]) for q in quarantine_rows(warehouse_url)
                 if q["reason_code"] == "conflicting_duplicate"]
    assert conflicts == [("2026-04-17", "E-0005")]
    assert silver_rows(warehouse_url)["TCK-000103"]["last_event_id"] == "E-0302"


def test_malformed_line_is_quarantined_with_its_line_number(warehouse_url: str, sample_dir: Path) -> None:
    ingest(warehouse_url, sample_dir, D16)
    malformed = [q for q in quarantine_rows(warehouse_url) if q["reason_code"] == "malformed_record"]
    assert [(q["line_number"], q["source_uri"]) for q in malformed] == [(2, "sources/tickets/2026-04-16/events.jsonl")]
    assert malformed[0]["raw_payload"].startswith('{"event_id": "E-0202"')


def test_each_contract_violation_is_quarantined_with_column_and_check(warehouse_url: str, sample_dir: Path) -> None:
    ingest(warehouse_url, sample_dir, D16)
    details = {q["line_number"]: q["detail"] for q in quarantine_rows(warehouse_url) if q["reason_code"] == "schema_violation"}
    assert details == {
        3: "ticket_id: str_matches('^TCK-[0-9]{6,30}$')",
        4: "priority: isin(['low', 'normal', 'high', 'urgent'])",
        5: "updated_at: updated_at >= created_at",
        6: "subject: not_nullable",
        7: "created_at: not an ISO-8601 UTC timestamp",
        12: "tags: dtype(list of strings) got str",
        13: "customer_id: str_length(1, None)",
    }


def test_future_event_is_quarantined(warehouse_url: str, sample_dir: Path) -> None:
    ingest(warehouse_url, sample_dir, D16)
    future = [(q["line_number"], q["event_id"]) for q in quarantine_rows(warehouse_url) if q["reason_code"] == "future_event"]
    assert future == [(8, "E-0208")]


def test_error_between_bronze_and_silver_leaves_no_partial_state(warehouse_url: str, sample_dir: Path) -> None:
    """A crash after bronze is written rolls back bronze, quarantine and partition state with it."""
    ingest(warehouse_url, sample_dir, D14)
    before = data_tables(warehouse_url)

    def crash() -> None:
        raise RuntimeError("injected between bronze and silver")

    with pytest.raises(RuntimeError, match="injected"):
        ingest(warehouse_url, sample_dir, D16, before_silver=crash)
    assert data_tables(warehouse_url) == before
    with get_engine(warehouse_url).connect() as conn:
        states = {r.partition_key: r.status for r in conn.execute(select(partition_state))}
        failed = conn.execute(select(ingest_run.c.error).where(ingest_run.c.status == "failed")).scalars().all()
    assert states == {"2026-04-14": "succeeded", "2026-04-16": "failed"}
    assert failed == ["RuntimeError: injected between bronze and silver"]


def test_dry_run_writes_nothing(warehouse_url: str, sample_dir: Path) -> None:
    """A dry run counts against the warehouse and rolls back: every table is as before."""
    ingest(warehouse_url, sample_dir, D14)
    before = data_tables(warehouse_url)
    result, rejected = ingest(warehouse_url, sample_dir, D17, dry_run=True)
    assert (result.bronze_inserted, result.bronze_existing, rejected) == (7, 1, 1)
    assert data_tables(warehouse_url) == before


def test_concurrent_runs_of_one_partition_serialize_and_name_the_holder(warehouse_url: str, sample_dir: Path) -> None:
    """Two runs at once: one writes, the other waits, learns who held the lock, and skips."""
    gate = threading.Event()
    results: dict[str, object] = {}

    def first() -> None:
        def hold() -> None:
            gate.set()
            threading.Event().wait(1.5)  # keep the partition locked while the second run arrives
        results["first"] = ingest(warehouse_url, sample_dir, D14, before_silver=hold)[0]

    def second() -> None:
        gate.wait(10)
        results["second"] = ingest(warehouse_url, sample_dir, D14)[0]

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    first_result, second_result = results["first"], results["second"]
    assert first_result.bronze_inserted == 8 and first_result.skipped is False
    assert second_result.skipped is True
    assert second_result.waited_for is not None and second_result.waited_for.startswith("run ")
    assert len(data_tables(warehouse_url)["bronze"]) == 8


def test_text_with_escapes_round_trips(warehouse_url: str, tmp_path: Path) -> None:
    """Tabs, newlines, backslashes, quotes and unicode in values survive staging on both databases."""
    import json
    from datetime import datetime, timezone

    from tasks.generate import write_manifest

    body = 'line one\nline\ttwo \\ "quoted" — ünïcode \\N'
    record = {"event_id": "E-1", "ticket_id": "TCK-000001", "event_type": "created",
              "created_at": "2026-04-17T08:00:00Z", "updated_at": "2026-04-17T09:00:00Z", "status": "new",
              "priority": "low", "channel": "web", "customer_id": "C-1", "subject": "tab\there",
              "body": body, "product_line": None, "tags": ["a\\b", "c\"d"]}
    source = tmp_path / "d" / "sources" / "e.jsonl"
    source.parent.mkdir(parents=True)
    line = json.dumps(record, ensure_ascii=False)
    source.write_text(line + "\n")
    write_manifest(tmp_path / "d", "m", "tickets", D17, datetime(2026, 4, 17, 23, tzinfo=timezone.utc), [source])
    ingest(warehouse_url, tmp_path / "d", D17)
    row = silver_rows(warehouse_url)["TCK-000001"]
    assert (row["body"], row["subject"], json.loads(row["tags"])) == (body, "tab\there", ["a\\b", "c\"d"])
    bronze = data_tables(warehouse_url)["bronze"][0]
    assert line in bronze


def test_a_line_that_changed_since_an_earlier_delivery_is_quarantined_as_it_is_now(warehouse_url: str,
                                                                                    sample_dir: Path) -> None:
    """The same manifest re-delivered with an edited file: the malformed line as it is now replaces the
    one quarantined before; nothing of the current inputs is dropped, and a rerun writes nothing."""
    from datetime import datetime, timezone

    from tasks.generate import write_manifest

    source = sample_dir / "sources/tickets/2026-04-14/events.jsonl"
    lines = source.read_text().splitlines()
    for version in ("AAA this line is not json", "BBB a different malformed record"):
        source.write_text("\n".join([*lines, version]) + "\n")
        write_manifest(sample_dir, "tickets-2026-04-14-a", "tickets", D14,
                       datetime(2026, 4, 14, 23, tzinfo=timezone.utc), [source])
        result, rejected = ingest(warehouse_url, sample_dir, D14)
        assert rejected == 1 and result.quarantine_inserted == 1
    assert [(q["line_number"], q["raw_payload"]) for q in quarantine_rows(warehouse_url)] == [
        (9, "BBB a different malformed record")]
    again, _ = ingest(warehouse_url, sample_dir, D14, force=True)
    assert again.quarantine_inserted == 0
