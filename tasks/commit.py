"""Write and check a partition in one transaction around the ledger: committed, or rolled back for a dry run."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable

import polars as pl
import psycopg
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from schemas.datasets import DatasetSpec
from schemas.summary import CheckOutcome, RunCounts
from tasks import checks, ledger
from tasks.assets import annotate_assets, table_assets
from tasks.database import reading
from tasks.errors import TransientError
from tasks.lake import Lake, commit_snapshot, lake_frame
from tasks.ledger import RunIdentity
from tasks.validate import ValidatedBatch, partition_window
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


@dataclass
class Committed:
    """What one write attempt did: counts, check verdicts, the rejected records, and who wrote."""

    result: WriteResult
    rejected: pl.DataFrame
    who: RunIdentity
    attempt: int | None  # None for a dry run: it is no ledger attempt
    counts: RunCounts
    checks: list[CheckOutcome]
    snapshot: dict[str, Any] | None = None  # the lake snapshot this attempt committed
    @property
    def snapshot_summary(self) -> dict[str, Any] | None:
        if self.snapshot is None:
            return None
        return {"snapshot_id": self.snapshot["snapshot_id"], "rows": self.snapshot["rows"],
                "files": len(self.snapshot["files"]),
                "manifest": f"{self.snapshot['dataset']}/dt={self.snapshot['partition_key']}/manifest.json"}

    @property
    def held(self) -> bool:
        return bool(checks.blocking(self.checks))


def run_counts(batch: ValidatedBatch, rejected: pl.DataFrame, result: WriteResult, who: RunIdentity) -> RunCounts:
    """The run's counts of DESIGN section 7 from the batch, its rejects and the write."""
    by_reason = Counter(rejected["reason_code"].to_list())
    return RunCounts(
        declared_records=batch.declared_records, total=batch.total, valid=batch.total - rejected.height,
        invalid=rejected.height, invalid_by_reason=dict(sorted(by_reason.items())),
        duplicate_in_batch=result.duplicate_in_batch, late_arriving=result.late_arriving,
        distinct_entities=result.distinct_entities, bronze_inserted=result.bronze_inserted,
        bronze_existing=result.bronze_existing, bronze_displaced=result.bronze_displaced,
        silver_inserted=result.silver_inserted, silver_updated=result.silver_updated,
        silver_unchanged=result.silver_unchanged, silver_stale_skipped=result.silver_stale_skipped,
        quarantine_inserted=result.quarantine_inserted, changed_sources_accepted=who.accept_changed,
    )


def _write_and_check(conn: Connection, spec: DatasetSpec, batch: ValidatedBatch, who: RunIdentity, now: datetime,
                     force: bool, before_silver: Callable[[], None] | None,
                     lake: Lake | None = None) -> Committed:
    """Write, check what the transaction now holds, then commit the lake snapshot (execute only).

    The verdicts commit (or roll back) with the data; the lake commits before the warehouse does, so
    a failed lake commit rolls the warehouse back and a failed warehouse commit leaves at worst a
    newer snapshot that a rerun replaces.
    """
    result, rejected, accepted = write_partition(conn, spec, batch, who, now, force, before_silver)
    counts = run_counts(batch, rejected, result, who)
    if result.skipped:
        return Committed(result, rejected, who, None, counts, [])
    _, window_end = partition_window(who.partition_key)
    observed = checks.observe(conn, spec, who, counts, batch.events, window_end, batch.field_sample,
                              batch.sampled_records)
    outcomes = checks.evaluate(spec.checks, observed)
    checks.record_results(conn, who, outcomes, now)
    snapshot = None
    if lake is not None:
        snapshot = commit_snapshot(lake, spec, who.partition_key, lake_frame(spec, accepted), who.run_id,
                                   {"batch_id": who.batch_id, "manifest_ids": list(who.manifest_ids)})
    return Committed(result, rejected, who, None, counts, outcomes, snapshot)


def commit_partition(
    engine: Engine,
    spec: DatasetSpec,
    batch: ValidatedBatch,
    who: RunIdentity,
    dry_run: bool,
    force: bool,
    before_silver: Callable[[], None] | None = None,
    lake: Lake | None = None,
) -> Committed:
    """Write, check and snapshot a partition; every attempt is one ledger run. A failed error check holds it."""
    who = replace(who, run_id=ledger.new_run_id())
    now = datetime.now(timezone.utc)
    if dry_run:
        with engine.connect() as conn:
            transaction = conn.begin()
            try:
                return _write_and_check(conn, spec, batch, who, now, True, None)
            finally:
                transaction.rollback()
    with reading(engine) as conn:
        holder = ledger.running_holder(conn, who)  # looked up before SQLite's BEGIN IMMEDIATE blocks on it
    attempt = ledger.start_run(engine, who)
    try:
        with engine.begin() as conn:
            done = _write_and_check(conn, spec, batch, who, now, force, before_silver, lake)
            result = done.result
            if result.waited_for is None and holder and ledger.run_status(conn, holder[0]) != "running":
                result.waited_for = holder[1]
            status = "skipped" if result.skipped else "held" if done.held else "succeeded"
            output = None if result.skipped else done.counts.output_count
            detail = "held by " + ", ".join(c.name for c in checks.blocking(done.checks)) if done.held else None
            ledger.finish_run(conn, who, status, result.as_dict(), output, detail=detail)
    except BaseException as exc:
        ledger.fail_run(engine, who, f"{type(exc).__name__}: {exc}")
        raise
    done.attempt = attempt
    return done


@task(name="write-partition", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
      retry_jitter_factor=0.5, retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE)
def commit_partition_task(engine: Engine, spec: DatasetSpec, batch: ValidatedBatch, who: RunIdentity,
                          dry_run: bool, force: bool, lake: Lake | None = None) -> Committed:
    """Write, check, snapshot; as a materializing task (see tasks/assets.py) it also reports row counts per table."""
    done = commit_partition(engine, spec, batch, who, dry_run, force, lake=lake)
    status = "skipped" if done.result.skipped else "held" if done.held else "succeeded"
    annotate_assets(table_assets(engine.url.render_as_string(), spec), done.who.partition, done.counts, status)
    return done


def record_skip(engine: Engine, who: RunIdentity) -> tuple[RunIdentity, int]:
    """A skipped run still leaves its row in the ledger and the decision log."""
    who = replace(who, run_id=ledger.new_run_id())
    attempt = ledger.start_run(engine, who)
    with engine.begin() as conn:
        ledger.finish_run(conn, who, "skipped", {"skipped": True}, None,
                          error=None)
    return who, attempt


