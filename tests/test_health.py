"""Health finds what needs an operator: stale runs, gaps, failed and held partitions, retry storms, spikes."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select, update

from schemas.tables import decision_log, ingest_run
from tasks import ledger
from tasks.database import get_engine
from tasks.health import HealthThresholds, find_problems
from tasks.locks import partition_lock
from tasks.manifests import discover_manifests, partition_manifests
from tests.helpers import DAYS, commit, identity
from tests.test_checks import D20, mostly_invalid


def _kinds(url: str, sample_dir: Path) -> list[tuple[str, str]]:
    declared = {m.partition_key for m in discover_manifests(sample_dir)}
    _, findings = find_problems(get_engine(url), "tickets", declared, HealthThresholds())
    return [(f.kind, f.partition) for f in findings]


def test_a_healthy_factory_has_no_findings(warehouse_url: str, sample_dir: Path) -> None:
    for day in DAYS:
        commit(warehouse_url, sample_dir, day)
    assert _kinds(warehouse_url, sample_dir) == []


def test_declared_partitions_never_materialized_are_missing(warehouse_url: str, sample_dir: Path) -> None:
    commit(warehouse_url, sample_dir, DAYS[0])
    assert _kinds(warehouse_url, sample_dir) == [("missing_partition", "2026-04-16"), ("missing_partition", "2026-04-17")]


def test_a_held_partition_with_a_quarantine_spike_is_flagged(warehouse_url: str, sample_dir: Path) -> None:
    for day in DAYS:
        commit(warehouse_url, sample_dir, day)
    mostly_invalid(sample_dir)
    commit(warehouse_url, sample_dir, D20)
    assert _kinds(warehouse_url, sample_dir) == [("held_partition", "2026-04-20"), ("quarantine_spike", "2026-04-20")]


def _running(url: str, sample_dir: Path, day: date, attempt_started: datetime) -> None:
    who = replace(identity(day, partition_manifests(sample_dir, "tickets", day)), run_id=ledger.new_run_id())
    engine = get_engine(url)
    ledger.start_run(engine, who)
    with engine.begin() as conn:
        conn.execute(update(ingest_run).where(ingest_run.c.run_id == who.run_id).values(heartbeat_at=attempt_started))


def test_a_silent_running_run_whose_process_died_is_closed_as_abandoned(warehouse_url: str, sample_dir: Path) -> None:
    """No heartbeat for the stale period and nobody holds the partition lock: the attempt's process died.
    Health reports it once and closes it, with a decision-log row; the ledger keeps no RUNNING row."""
    for day in DAYS:
        commit(warehouse_url, sample_dir, day)
    _running(warehouse_url, sample_dir, DAYS[1], datetime.now(timezone.utc) - timedelta(hours=2))
    assert _kinds(warehouse_url, sample_dir) == [("abandoned_run", "2026-04-16")]
    with get_engine(warehouse_url).connect() as conn:
        statuses = conn.execute(select(ingest_run.c.status).where(ingest_run.c.partition_key == "2026-04-16")).scalars()
        outcomes = conn.execute(select(decision_log.c.outcome).where(decision_log.c.partition_key == "2026-04-16")
                                .order_by(decision_log.c.id)).scalars().all()
        assert sorted(statuses) == ["abandoned", "succeeded"] and outcomes[-1] == "abandoned"
    assert _kinds(warehouse_url, sample_dir) == []


def test_a_silent_running_run_that_still_holds_its_lock_is_stale(warehouse_url: str, sample_dir: Path) -> None:
    """No heartbeat, but the partition lock is held: a hung worker, reported and left alone."""
    for day in DAYS:
        commit(warehouse_url, sample_dir, day)
    _running(warehouse_url, sample_dir, DAYS[1], datetime.now(timezone.utc) - timedelta(hours=2))
    with partition_lock(get_engine(warehouse_url), "tickets", "2026-04-16", lambda: "the test"):
        assert _kinds(warehouse_url, sample_dir) == [("stale_run", "2026-04-16")]


def test_many_attempts_on_one_batch_are_a_retry_storm(warehouse_url: str, sample_dir: Path) -> None:
    for day in DAYS:
        commit(warehouse_url, sample_dir, day)
    for _ in range(4):  # attempts 2..5 of 2026-04-17's batch, each closed as failed
        who = replace(identity(DAYS[2], partition_manifests(sample_dir, "tickets", DAYS[2])), run_id=ledger.new_run_id())
        ledger.start_run(get_engine(warehouse_url), who)
        ledger.fail_run(get_engine(warehouse_url), who, "TransientError: connection reset (injected)")
    assert ("retry_storm", "2026-04-17") in _kinds(warehouse_url, sample_dir)
