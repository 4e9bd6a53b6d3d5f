"""Checks: the limits (pure), and what they find in a real warehouse on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select, text

from schemas.checks import DEFAULT_CHECKS, CheckName
from schemas.summary import RunCounts
from schemas.tables import check_result, decision_log, partition_state
from tasks.checks import Observations, blocking, evaluate
from tasks.database import get_engine
from tasks.generate import write_manifest
from tests.helpers import commit

WINDOW_END = datetime(2026, 4, 18, tzinfo=timezone.utc)
D14, D20 = date(2026, 4, 14), date(2026, 4, 20)


def _verdicts(observations: Observations) -> dict[str, str]:
    return {o.name: o.status for o in evaluate(DEFAULT_CHECKS, observations)}


def _counts(total: int, invalid: int) -> RunCounts:
    valid = total - invalid
    return RunCounts(declared_records=total, total=total, valid=valid, invalid=invalid,
                     invalid_by_reason={"schema_violation": invalid} if invalid else {},
                     bronze_inserted=valid, distinct_entities=valid, silver_inserted=valid)


def test_quarantine_ratio_above_the_error_limit_fails() -> None:
    assert _verdicts(Observations(_counts(10, 3), WINDOW_END))["quarantine_ratio"] == "fail"


def test_quarantine_ratio_between_the_limits_only_warns() -> None:
    verdicts = evaluate(DEFAULT_CHECKS, Observations(_counts(10, 1), WINDOW_END))
    assert [(o.name, o.status) for o in verdicts if o.status != "pass" and o.status != "skipped"] == [
        ("quarantine_ratio", "warn")]
    assert blocking(verdicts) == []


def test_an_unexplained_count_gap_fails_reconcile() -> None:
    counts = _counts(10, 0).model_copy(update={"declared_records": 11})
    outcome = next(o for o in evaluate(DEFAULT_CHECKS, Observations(counts, WINDOW_END)) if o.name == "reconcile")
    assert (outcome.status, outcome.detail) == ("fail", "declared_records 11 != total 10")


def test_a_count_gap_explained_by_accepted_changed_sources_passes() -> None:
    counts = _counts(10, 0).model_copy(update={"declared_records": 11, "changed_sources_accepted": True})
    assert _verdicts(Observations(counts, WINDOW_END))["reconcile"] == "pass"


def test_duplicate_entity_keys_in_silver_fail() -> None:
    observed = Observations(_counts(4, 0), WINDOW_END, touched_entities=4, silver_rows=5, duplicate_entity_keys=1)
    assert _verdicts(observed)["entity_key_unique"] == "fail"


def test_nulls_in_a_required_column_fail() -> None:
    observed = Observations(_counts(4, 0), WINDOW_END, silver_rows=4, null_counts={"subject": 1, "status": 0})
    assert _verdicts(observed)["null_ratio"] == "fail"


def test_row_count_change_is_skipped_without_a_previous_partition() -> None:
    assert _verdicts(Observations(_counts(4, 0), WINDOW_END))["row_count_change"] == "skipped"


def test_stale_newest_event_warns_on_freshness() -> None:
    observed = Observations(_counts(4, 0), WINDOW_END, newest_event=WINDOW_END - timedelta(hours=30))
    assert _verdicts(observed)["freshness"] == "warn"


def test_every_declared_check_has_a_measure() -> None:
    assert {o.name for o in evaluate(DEFAULT_CHECKS, Observations(_counts(1, 0), WINDOW_END))} == set(CheckName)


# --- in the warehouse ----------------------------------------------------------------------------

def _event(n: int, ticket: int, hour: int, **changes: object) -> dict:
    stamp = f"2026-04-20T{hour:02d}:00:00Z"
    return {"event_id": f"Q-{n:04d}", "ticket_id": f"TCK-{ticket:06d}", "event_type": "created",
            "created_at": stamp, "updated_at": stamp, "status": "new", "priority": "normal", "channel": "email",
            "customer_id": "CUST-1", "subject": "s", "body": "b", "product_line": None, "tags": [], **changes}


def write_delivery(root: Path, day: date, records: list[dict | str], manifest_id: str) -> None:
    """A delivery of `records` (dicts as JSON, strings as they are) for `day`, with its manifest."""
    source = root / "sources" / f"{manifest_id}.jsonl"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    write_manifest(root, manifest_id, "tickets", day, datetime(2026, 4, 20, 23, tzinfo=timezone.utc), [source])


def mostly_invalid(root: Path) -> None:
    """2026-04-20: 2 valid events, 8 with a bad priority: a quarantine ratio of 0.8."""
    write_delivery(root, D20, [_event(i, i, 9) for i in range(2)]
                   + [_event(i, i, 9, priority="critical") for i in range(2, 10)], "tickets-2026-04-20-a")


def test_a_high_quarantine_ratio_holds_the_partition(warehouse_url: str, sample_dir: Path) -> None:
    mostly_invalid(sample_dir)
    done = commit(warehouse_url, sample_dir, D20)
    with get_engine(warehouse_url).connect() as conn:
        state = conn.execute(select(partition_state.c.status)).scalar_one()
        outcome = conn.execute(select(decision_log.c.outcome, decision_log.c.detail)).one()
    assert [c.name for c in blocking(done.checks)] == ["quarantine_ratio"]
    assert (state, tuple(outcome)) == ("held", ("held", "held by quarantine_ratio"))


def test_check_results_are_stored_per_run(warehouse_url: str, sample_dir: Path) -> None:
    done = commit(warehouse_url, sample_dir, D14)
    with get_engine(warehouse_url).connect() as conn:
        stored = conn.execute(select(check_result.c.check_name, check_result.c.status)
                              .where(check_result.c.run_id == done.who.run_id)).all()
    assert sorted(stored) == sorted((c.name, c.status) for c in done.checks) and len(stored) == len(DEFAULT_CHECKS)


def test_a_dry_run_reports_checks_but_stores_none(warehouse_url: str, sample_dir: Path) -> None:
    mostly_invalid(sample_dir)
    done = commit(warehouse_url, sample_dir, D20, dry_run=True)
    with get_engine(warehouse_url).connect() as conn:
        stored = conn.execute(select(check_result)).all()
    assert ([c.name for c in blocking(done.checks)], stored) == (["quarantine_ratio"], [])


def test_silver_consistency_finds_a_hand_corrupted_silver_row(warehouse_url: str, sample_dir: Path) -> None:
    """Silver claims a newer event than bronze holds: a forced rerun cannot overwrite it, the check holds it."""
    commit(warehouse_url, sample_dir, D14)
    with get_engine(warehouse_url).begin() as conn:
        conn.execute(text("UPDATE ticket_fact SET last_event_id = 'E-9999' WHERE ticket_id = 'TCK-000101'"))
    done = commit(warehouse_url, sample_dir, D14, force=True)
    consistency = next(c for c in done.checks if c.name == "silver_consistency")
    assert (consistency.status, consistency.observed) == ("fail", 1.0)
    assert "TCK-000101" in consistency.detail


def test_schema_drift_names_fields_outside_the_contract(warehouse_url: str, sample_dir: Path) -> None:
    write_delivery(sample_dir, D20, [_event(1, 1, 9, sentiment="angry"), _event(2, 2, 9)], "tickets-2026-04-20-a")
    drift = next(c for c in commit(warehouse_url, sample_dir, D20).checks if c.name == "schema_drift")
    assert (drift.status, drift.detail) == ("warn", "fields outside the contract: sentiment")


def test_row_count_change_compares_with_the_previous_partition_with_output(warehouse_url: str,
                                                                           sample_dir: Path) -> None:
    commit(warehouse_url, sample_dir, D14)  # 8 valid events
    write_delivery(sample_dir, D20, [_event(i, i, 9) for i in range(2)], "tickets-2026-04-20-a")
    change = next(c for c in commit(warehouse_url, sample_dir, D20).checks if c.name == "row_count_change")
    assert (change.status, change.observed, change.detail) == (
        "warn", 0.75, "2 valid events against 8 in 2026-04-14 (-75%)")
