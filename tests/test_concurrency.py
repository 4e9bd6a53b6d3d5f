"""Races: runs of one partition released together serialize (the second waits, names the holder, and
finds nothing left to do); overlapping backfills both finish, and the warehouse is the oracle's."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from schemas.tables import ingest_run
from tasks.database import get_engine
from tasks.errors import TransientError
from tests.helpers import DAYS, commit
from tests.test_oracle import assert_matches_oracle

D14, D16, D17 = DAYS
TRIALS = 6


def _attempts(url: str, day: date) -> list[tuple[int, str]]:
    with get_engine(url).connect() as conn:
        return sorted(conn.execute(select(ingest_run.c.attempt, ingest_run.c.status)
                                   .where(ingest_run.c.partition_key == day.isoformat())).all())


def test_two_runs_of_one_partition_released_together_serialize(warehouse_url: str, sample_dir: Path) -> None:
    """Trial after trial: neither fails, no attempt number is taken twice; one writes, the other skips,
    and when it had to wait, it names the run it waited for."""
    for trial in range(TRIALS):
        day = DAYS[trial % 3]
        force = trial >= 3  # the first three create each partition, later trials rerun with force
        barrier = threading.Barrier(2)

        def run() -> object:
            barrier.wait()
            return commit(warehouse_url, sample_dir, day, force=force)

        with ThreadPoolExecutor(2) as pool:
            results = [f.result() for f in [pool.submit(run), pool.submit(run)]]
        attempts = _attempts(warehouse_url, day)
        assert all(status in ("succeeded", "skipped") for _, status in attempts), attempts
        assert sorted(a for a, _ in attempts) == list(range(1, len(attempts) + 1))  # no attempt number twice
        if not force:
            assert sorted(r.result.skipped for r in results) == [False, True]
            waiter = next(r for r in results if r.result.skipped)
            assert waiter.result.waited_for is None or waiter.result.waited_for.startswith(("run ", "a run "))
    assert_matches_oracle(warehouse_url, sample_dir)


def test_overlapping_backfills_both_finish_with_the_oracle_state(warehouse_url: str, sample_dir: Path) -> None:
    """Two workers walk the same partitions in opposite orders, as two overlapping backfills do. Two
    partitions that share an event may collide on it: a TransientError, retried as Prefect's task would."""
    def walk(days: list[date]) -> None:
        for day in days:
            for attempt in range(5):
                try:
                    commit(warehouse_url, sample_dir, day)
                    break
                except TransientError:
                    assert attempt < 4

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(walk, DAYS), pool.submit(walk, DAYS[::-1])]:
            future.result()
    for day in DAYS:
        assert [s for _, s in _attempts(warehouse_url, day)].count("succeeded") == 1
        assert "running" not in [s for _, s in _attempts(warehouse_url, day)]
    assert_matches_oracle(warehouse_url, sample_dir)


@pytest.mark.flow
@pytest.mark.parametrize("warehouse_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_overlapping_backfill_flows_on_postgres_both_finish(factory_env: str, sample_dir: Path) -> None:
    """The flows as deployed: two backfills of the same window at once; neither fails, no partition
    runs twice, transient conflicts between partitions sharing an event are retried by Prefect."""
    from flows.backfill import backfill_flow

    def backfill() -> object:
        return backfill_flow(dataset="tickets", start=D14, end=D17, mode="execute", max_concurrency=2)

    with ThreadPoolExecutor(2) as pool:
        summaries = [f.result() for f in [pool.submit(backfill), pool.submit(backfill)]]
    assert [r for s in summaries for r in s.results if r["status"] not in ("succeeded", "skipped")] == []
    for day in DAYS:
        assert [s for _, s in _attempts(factory_env, day)].count("succeeded") == 1
    assert_matches_oracle(factory_env, sample_dir)
