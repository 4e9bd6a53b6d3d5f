"""Run the warehouse write as one transaction around the ledger: committed, or rolled back for a dry run."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable

import psycopg
import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from schemas.datasets import DatasetSpec
from tasks import ledger
from tasks.database import reading
from tasks.errors import TransientError
from tasks.ledger import RunIdentity
from tasks.validate import ValidatedBatch
from tasks.warehouse import WriteResult, write_partition


def is_transient(exc: BaseException) -> bool:
    """Connection loss and throttling are worth a retry; contracts, bad input and bugs are not."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        return isinstance(exc.orig, psycopg.OperationalError) and not isinstance(exc.orig, psycopg.errors.LockNotAvailable)
    return False


def retry_on_transient(task, task_run, state) -> bool:  # type: ignore[no-untyped-def]
    """Prefect retry_condition_fn: retry only when the failure was transient."""
    try:
        state.result()
    except Exception as exc:  # the state's own exception, re-raised to classify it
        return is_transient(exc)
    return False


def commit_partition(
    engine: Engine,
    spec: DatasetSpec,
    batch: ValidatedBatch,
    who: RunIdentity,
    dry_run: bool,
    force: bool,
    before_silver: Callable[[], None] | None = None,
) -> tuple[WriteResult, pl.DataFrame, RunIdentity, int | None]:
    """Write a partition; every attempt is one ledger run. Returns counts, rejects, identity and attempt."""
    who = replace(who, run_id=ledger.new_run_id())
    now = datetime.now(timezone.utc)
    if dry_run:
        with engine.connect() as conn:
            transaction = conn.begin()
            try:
                result, rejected = write_partition(conn, spec, batch, who, now, force=True)
            finally:
                transaction.rollback()
        return result, rejected, who, None
    with reading(engine) as conn:
        holder = ledger.running_holder(conn, who)  # looked up before SQLite's BEGIN IMMEDIATE blocks on it
    attempt = ledger.start_run(engine, who)
    try:
        with engine.begin() as conn:
            result, rejected = write_partition(conn, spec, batch, who, now, force, before_silver)
            if result.waited_for is None and holder and ledger.run_status(conn, holder[0]) != "running":
                result.waited_for = holder[1]
            status = "skipped" if result.skipped else "succeeded"
            output = None if result.skipped else result.bronze_inserted + result.bronze_existing
            ledger.finish_run(conn, who, status, result.as_dict(), output)
    except BaseException as exc:
        ledger.fail_run(engine, who, f"{type(exc).__name__}: {exc}")
        raise
    return result, rejected, who, attempt


@task(name="write-partition", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
      retry_jitter_factor=0.5, retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE)
def commit_partition_task(engine: Engine, spec: DatasetSpec, batch: ValidatedBatch, who: RunIdentity,
                          dry_run: bool, force: bool) -> tuple[WriteResult, pl.DataFrame, RunIdentity, int | None]:
    return commit_partition(engine, spec, batch, who, dry_run, force)


def record_skip(engine: Engine, who: RunIdentity) -> tuple[RunIdentity, int]:
    """A skipped run still leaves its row in the ledger and the decision log."""
    who = replace(who, run_id=ledger.new_run_id())
    attempt = ledger.start_run(engine, who)
    with engine.begin() as conn:
        ledger.finish_run(conn, who, "skipped", {"skipped": True}, None,
                          error=None)
    return who, attempt


