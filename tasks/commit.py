"""Write and check a partition in one transaction around the ledger: committed, or rolled back for a dry run.

One attempt, in order, under the partition lock (tasks/locks.py) and with a heartbeat:
dead attempts closed → RUNNING attempt recorded → one warehouse transaction (bronze, silver,
quarantine, checks; the lake snapshot staged and recorded; the attempt closed) → commit → lake
marker moved → retention. The warehouse commit is the decision: a crash before it leaves nothing the
ledger counts; a crash after it leaves a marker the next run moves (tasks/lake_state.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable

import polars as pl
import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from schemas.datasets import DatasetSpec
from schemas.reason_codes import ActionReason, RunStatus
from schemas.summary import CheckOutcome, RunCounts
from tasks import checks, ledger
from tasks.errors import TransientError
from tasks.lake import Lake, SnapshotWriter, lake_frame
from tasks.lake_state import committed_ids, settle_lake
from tasks.ledger import RunIdentity
from tasks.locks import partition_lock
from tasks.schema_evolution import evolve, evolve_tables, rebuild_entities
from tasks.validate import ValidatedBatch, partition_window
from tasks.warehouse import Tally, WriteResult, write_partition

HEARTBEAT_S = 30.0


def is_transient(exc: BaseException) -> bool:
    """Connection loss and throttling are worth a retry; contracts, bad input and bugs are not."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        return isinstance(exc.orig, psycopg.OperationalError) and not isinstance(exc.orig, psycopg.errors.LockNotAvailable)
    return False


@dataclass
class Committed:
    """What one write attempt did: counts, check verdicts, the rejected records, and who wrote."""

    result: WriteResult
    rejected: int  # records quarantined by this attempt's batch (the validator's and the losing versions)
    who: RunIdentity
    attempt: int | None  # None for a dry run: it is no ledger attempt
    counts: RunCounts
    checks: list[CheckOutcome]
    snapshot: dict[str, Any] | None = None  # the lake snapshot this attempt committed
    lake_note: str | None = None  # what the lake was left with when the marker could not follow
    read_counts: dict[str, int] = field(default_factory=dict)  # "manifest_id:uri" -> records read
    schema_changes: list[dict[str, Any]] = field(default_factory=list)  # applied to the tables by this attempt

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


def run_counts(tally: Tally, result: WriteResult, who: RunIdentity) -> RunCounts:
    """The run's counts of DESIGN section 7 from the chunks' tally and the write."""
    return RunCounts(
        declared_records=tally.declared_records, total=tally.total, valid=tally.total - tally.rejected,
        invalid=tally.rejected, invalid_by_reason=dict(sorted((k, v) for k, v in tally.rejected_by_reason.items() if v)),
        duplicate_in_batch=result.duplicate_in_batch, late_arriving=result.late_arriving,
        distinct_entities=result.distinct_entities, bronze_inserted=result.bronze_inserted,
        bronze_existing=result.bronze_existing, bronze_displaced=result.bronze_displaced,
        silver_inserted=result.silver_inserted, silver_updated=result.silver_updated,
        silver_unchanged=result.silver_unchanged, silver_stale_skipped=result.silver_stale_skipped,
        quarantine_inserted=result.quarantine_inserted, changed_sources_accepted=who.accept_changed,
    )


Batches = ValidatedBatch | Iterable[ValidatedBatch]


def _write_and_check(conn: Connection, spec: DatasetSpec, batches: Batches, who: RunIdentity, now: datetime,
                     force: bool, before_silver: Callable[[], None] | None,
                     lake: Lake | None = None, applied: list[dict[str, Any]] | None = None) -> Committed:
    """Write chunk by chunk (each chunk's accepted events going to the lake snapshot as they come),
    check what the transaction now holds, then publish the snapshot and record it.

    The verdicts and the snapshot's ledger row commit (or roll back) with the data."""
    if isinstance(batches, ValidatedBatch):
        batches = [batches]
    # the tables follow the contract first (applied before this transaction, `applied`; a dry run's here,
    # rolled back with it); a change that needs an operator is refused
    changes = [*(applied or []), *(c.as_dict() for c in evolve(conn, spec, now, who.operator, who.run_id))]
    writer = None
    if lake is not None:
        writer = SnapshotWriter(lake, spec.name, who.partition_key, who.run_id,
                                committed_ids(conn, spec.name, who.partition_key))
    try:
        on_accepted = (lambda accepted: writer.add(lake_frame(spec, accepted))) if writer is not None else None
        result, tally = write_partition(conn, spec, batches, who, now, force, before_silver, on_accepted)
        counts = run_counts(tally, result, who)
        if result.skipped:
            if writer is not None:
                writer.abandon()
            return Committed(result, tally.rejected, who, None, counts, [], read_counts=dict(tally.read_counts),
                             schema_changes=changes)
        if who.reason_code == ActionReason.SCHEMA_CHANGE and tally.entities is not None:
            # a rerun after a contract change: the partition's entities rebuilt from bronze's payloads, so
            # rows written before the change get the fields it added
            rebuild_entities(conn, spec, tally.entities.to_list())
        _, window_end = partition_window(who.partition_key)
        entities = tally.entities if tally.entities is not None else pl.Series(dtype=pl.String)
        observed = checks.observe(conn, spec, who, counts, entities, tally.newest_event, window_end,
                                  dict(tally.field_sample), tally.sampled_records)
        outcomes = checks.evaluate(spec.checks, observed)
        checks.record_results(conn, who, outcomes, now)
        snapshot = None
        if writer is not None:
            snapshot, digest = writer.stage({"batch_id": who.batch_id, "manifest_ids": list(who.manifest_ids)})
            ledger.record_snapshot(conn, spec.name, who.partition, snapshot["snapshot_id"], who.run_id,
                                   snapshot["rows"], len(snapshot["files"]), digest)
    except BaseException:
        if writer is not None:
            writer.abandon()
        raise
    return Committed(result, tally.rejected, who, None, counts, outcomes, snapshot, read_counts=dict(tally.read_counts),
                     schema_changes=changes)


def _holder(engine: Engine, who: RunIdentity) -> Callable[[], str | None]:
    return lambda: ledger.describe_holder(engine, who.dataset, who.partition)


def commit_partition(
    engine: Engine,
    spec: DatasetSpec,
    batches: Batches,
    who: RunIdentity,
    dry_run: bool,
    force: bool,
    before_silver: Callable[[], None] | None = None,
    lake: Lake | None = None,
    heartbeat_s: float = HEARTBEAT_S,
) -> Committed:
    """Write, check and snapshot a partition (`batches`: the partition's validated chunks, in delivery
    order; re-iterable, so a retried attempt reads again); every attempt is one ledger run. A failed
    error check holds it."""
    who = replace(who, run_id=ledger.new_run_id())
    now = datetime.now(timezone.utc)
    with partition_lock(engine, who.dataset, who.partition, _holder(engine, who)) as waited:
        if dry_run:  # no attempt in the ledger: everything is rolled back
            with engine.connect() as conn:
                transaction = conn.begin()
                try:
                    done = _write_and_check(conn, spec, batches, who, now, True, None)
                finally:
                    transaction.rollback()
            done.result.waited_for = waited
            return done
        applied = [c.as_dict() for c in evolve_tables(engine, spec, now, who.operator, who.run_id)]
        attempt = ledger.start_run(engine, who)
        committed = False
        try:
            with ledger.heartbeat(engine, who.run_id, heartbeat_s):
                with engine.begin() as conn:
                    done = _write_and_check(conn, spec, batches, who, now, force, before_silver, lake, applied)
                    status = (RunStatus.SKIPPED if done.result.skipped else RunStatus.HELD if done.held
                              else RunStatus.SUCCEEDED).value
                    output = None if done.result.skipped else done.counts.output_count
                    detail = "held by " + ", ".join(c.name for c in checks.blocking(done.checks)) if done.held \
                        else None
                    counts = {**done.counts.model_dump(), "skipped": done.result.skipped}  # verify reads them back
                    ledger.finish_run(conn, who, status, counts, output, detail=detail)
                committed = True
        except BaseException as exc:
            if not committed:  # what committed stays recorded as it committed
                ledger.fail_run(engine, who, f"{type(exc).__name__}: {exc}")
            raise
        done.attempt, done.result.waited_for = attempt, waited
        if lake is not None:  # committed: the lake's marker follows the ledger now
            done.lake_note = settle_lake(engine, lake, spec.name, who.partition_key)
    return done


def record_skip(engine: Engine, who: RunIdentity, lake: Lake | None = None) -> tuple[RunIdentity, int, str | None]:
    """A skipped run still leaves its row in the ledger and the decision log; it also moves a lake
    marker that a crash left behind the ledger."""
    who = replace(who, run_id=ledger.new_run_id())
    with partition_lock(engine, who.dataset, who.partition, _holder(engine, who)):
        attempt = ledger.start_run(engine, who)
        with engine.begin() as conn:
            ledger.finish_run(conn, who, "skipped", {"skipped": True}, None, error=None)
        note = settle_lake(engine, lake, who.dataset, who.partition_key) if lake is not None else None
    return who, attempt, note


def record_failure(engine: Engine, who: RunIdentity, error: str) -> tuple[RunIdentity, int] | None:
    """A run that failed before it reached its write (reading, validating) still ends in the ledger as a
    failed attempt with its decision-log row; None when the warehouse itself cannot take it."""
    from sqlalchemy.exc import SQLAlchemyError

    who = replace(who, run_id=ledger.new_run_id())
    try:
        with partition_lock(engine, who.dataset, who.partition, _holder(engine, who)):
            attempt = ledger.start_run(engine, who)
            ledger.fail_run(engine, who, error)
    except (SQLAlchemyError, TransientError):
        return None
    return who, attempt
