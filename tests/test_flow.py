"""partition_flow on Prefect's test harness: skip, force, dry-run and retries of transient errors only."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from flows.partition import partition_flow
from schemas.tables import ingest_run
from tasks.database import get_engine
from tasks.errors import TransientError
from tests.helpers import data_tables, fail_the_write

pytestmark = pytest.mark.flow
D14 = date(2026, 4, 14)


def _runs(url: str) -> list[tuple[int, str]]:
    with get_engine(url).connect() as conn:
        return [(r.attempt, r.status) for r in conn.execute(
            select(ingest_run.c.attempt, ingest_run.c.status).order_by(ingest_run.c.started_at, ingest_run.c.attempt))]


def test_flow_ingests_then_skips_the_same_inputs(factory_env: str) -> None:
    """The first run writes and reconciles; the second is a skip recorded in the ledger."""
    first = partition_flow(dataset="tickets", partition_key=D14)
    second = partition_flow(dataset="tickets", partition_key=D14)
    assert (first.status, first.total, first.bronze_inserted, first.silver_inserted) == ("succeeded", 8, 8, 4)
    assert first.reconciled and first.flow_run_id is not None
    assert second.status == "skipped"
    assert _runs(factory_env) == [(1, "succeeded"), (2, "skipped")]


def test_forced_flow_rerun_keeps_tables_identical(factory_env: str) -> None:
    partition_flow(dataset="tickets", partition_key=D14)
    before = data_tables(factory_env)
    again = partition_flow(dataset="tickets", partition_key=D14, force=True)
    assert (again.status, again.bronze_existing, again.silver_unchanged) == ("succeeded", 8, 4)
    assert data_tables(factory_env) == before


def test_dry_run_flow_reports_counts_and_writes_nothing(factory_env: str) -> None:
    summary = partition_flow(dataset="tickets", partition_key=D14, mode="dry-run")
    assert (summary.status, summary.bronze_inserted) == ("dry_run", 8)
    assert data_tables(factory_env) == {"bronze": [], "silver": [], "quarantine": []}
    assert _runs(factory_env) == []


def test_transient_errors_are_retried_and_data_written_once(factory_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two transient failures, then success: three attempts in the ledger, eight bronze rows."""
    fail_the_write(monkeypatch, lambda: TransientError("connection reset by peer (injected)"), times=2)
    summary = partition_flow(dataset="tickets", partition_key=D14)
    assert summary.status == "succeeded" and summary.attempt == 3
    assert _runs(factory_env) == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    assert len(data_tables(factory_env)["bronze"]) == 8


def test_non_transient_errors_are_not_retried(factory_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_the_write(monkeypatch, lambda: ValueError("a bug, not the network"))
    with pytest.raises(ValueError):
        partition_flow(dataset="tickets", partition_key=D14)
    assert _runs(factory_env) == [(1, "failed")]


def test_without_a_partition_key_the_run_takes_the_day_before_its_scheduled_time(factory_env: str) -> None:
    from datetime import datetime, timedelta, timezone

    from flows.partition import run_partition

    summary = run_partition(dataset="tickets")
    assert summary.partition_key == datetime.now(timezone.utc).date() - timedelta(days=1)
