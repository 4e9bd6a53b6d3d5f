"""partition_flow: materialize one (dataset, partition). Every recovery action goes through here.

The run itself is `ingest_partition`, written once over its `Steps`: a partition flow run executes
each step as a Prefect task; a backfill runs each partition as one task run whose steps are plain
calls (one task run per partition instead of a subflow with five: see flows/backfill.py).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed, State

from flows import handover
from flows.handover import make_summary, run_identity
from schemas.datasets import DatasetSpec, get_dataset
from schemas.manifest import SourceManifest, partition_out_of_range
from schemas.reason_codes import Action, ActionReason, Mode
from schemas.settings import FactorySettings, load_settings
from schemas.summary import PartitionSummary
from tasks import ledger
from tasks.assets import as_materialization, source_assets, table_assets
from tasks.commit import Committed, record_failure
from tasks.database import get_engine, reading
from tasks.delivery import Delivery
from tasks.errors import InputError
from tasks.evidence import RunContext
from tasks.handover import leave_evidence_task
from tasks.ingest import validate_manifests_task
from tasks.lake import open_lake
from tasks.materialize import commit_partition_task


@contextmanager
def timed(stages: dict[str, float], name: str) -> Iterator[None]:
    began = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = time.perf_counter() - began


@dataclass(frozen=True)
class Steps:
    """How each step of a partition run executes: as its own Prefect task, or as a plain call."""

    manifests: Callable[[Path, str, date, bool], list[SourceManifest]]
    # reads, validates and writes the partition chunk by chunk (tasks/delivery.py), then checks and snapshots
    write: Callable[[FactorySettings, DatasetSpec, list[SourceManifest], bool], Callable[..., Committed]]
    leave: handover.LeaveEvidence


def _write_as_task(settings: FactorySettings, spec: DatasetSpec, manifests: list[SourceManifest],
                   dry_run: bool) -> Callable[..., Committed]:
    """The write task, declared as materializing the tables from the sources (a dry run materializes nothing)."""
    if dry_run:
        return commit_partition_task
    return as_materialization(commit_partition_task, table_assets(settings.database_url, spec),
                              source_assets(manifests))


def _leave_as_task(settings: FactorySettings, summary: PartitionSummary, ctx: RunContext) -> Path:
    return leave_evidence_task(settings, summary, ctx)


AS_TASKS = Steps(manifests=validate_manifests_task, write=_write_as_task, leave=_leave_as_task)


def hand_over(settings: FactorySettings, summary: PartitionSummary, ctx: RunContext) -> PartitionSummary:
    """Decide downstream, then leave the evidence: JSON file, Prefect artifacts, delivery summary."""
    return handover.hand_over(settings, summary, ctx, _leave_as_task)


def _trace_id() -> str | None:
    """The root flow run: a backfill's when this run is one of its partitions, else this run's own."""
    try:
        return str(flow_run.root_flow_run_id or flow_run.id)
    except Exception:  # outside a server-backed run there is no root to look up
        return str(flow_run.id) if flow_run.id else None


def _add_reading(stages: dict[str, float], reading: dict[str, float]) -> None:
    """The write step reads and validates its chunks as it goes, on a reading thread: those seconds are
    stages of their own, which overlap `write_check_and_snapshot` (the step's wall time)."""
    for name in ("read", "validate"):
        stages[name] = reading.get(name, 0.0)


def _counted(done: Committed, dry_run: bool) -> PartitionSummary:
    status = "dry_run" if dry_run else "held" if done.held else "succeeded"
    message = ""
    if done.held:
        message = "held by " + ", ".join(c.name for c in done.checks if c.status == "fail")
    return make_summary(done.who, status, attempt=done.attempt, waited_for=done.result.waited_for,
                    checks=done.checks, message=message, lake_snapshot=done.snapshot_summary,
                    schema_changes=done.schema_changes, **done.counts.model_dump())


def scheduled_partition() -> date:
    """The day before the run's scheduled time (UTC): what a daily schedule materializes."""
    scheduled = flow_run.scheduled_start_time
    moment = datetime.fromtimestamp(scheduled.timestamp(), tz=timezone.utc) if scheduled else datetime.now(timezone.utc)
    return moment.date() - timedelta(days=1)


@flow(name="partition-flow", log_prints=False)
def partition_flow(
    dataset: str,
    partition_key: date | None = None,
    mode: Mode = Mode.EXECUTE,
    action: Action = Action.RUN,
    reason_code: ActionReason = ActionReason.OPERATOR_REQUEST,
    manifest_id: str | None = None,
    force: bool = False,
    operator: str = "datafactory",
    accept_changed: bool = False,
) -> PartitionSummary | State:
    """Manifests → read, validate and write chunk by chunk (bronze, silver, quarantine), checks and
    ledger, all in one transaction → evidence (JSON, Prefect artifacts, delivery summary).

    Skips when the partition already succeeded from the same source fingerprint, unless `force`.
    `mode="dry-run"` reads, validates, writes and checks, then rolls everything back.
    `manifest_id` narrows the run to one delivery (a replay); `accept_changed` takes changed source
    files as they are now instead of rejecting them (source_fingerprint_changed).
    A failed error check holds the partition and ends the flow run Failed, naming the check.
    With no `partition_key` (a scheduled run) the partition is the day before the scheduled time, UTC.

    Args:
        dataset: registered dataset name (a module of schemas/datasets/), e.g. tickets or orders
        partition_key: the delivery day, YYYY-MM-DD; empty = the day before the scheduled time (UTC)
        mode: execute writes; dry-run reads, writes and checks inside a transaction it rolls back
        action: run, rerun, replay or backfill: recorded in the ledger and the decision log
        reason_code: why this run happens (DESIGN section 10), e.g. operator_request, failed_partition
        manifest_id: only this delivery of the partition (a replay); empty = every delivery
        force: run even if the partition already succeeded from the same inputs
        operator: who asked for it, for the decision log
        accept_changed: take changed source files as they are now instead of refusing them
    """
    settings = load_settings()
    summary = ingest_partition(
        settings, dataset, partition_key or scheduled_partition(), AS_TASKS, mode=Mode(mode),
        action=Action(action), reason_code=ActionReason(reason_code), manifest_id=manifest_id, force=force,
        operator=operator, accept_changed=accept_changed)
    if summary.status in ("succeeded", "held"):  # committed: its downstream marts, then the catalog
        from flows.marts import after_commit

        after_commit(settings, dataset)
    if summary.status == "held":
        return Failed(message=f"{dataset}/{summary.partition_key} held: {summary.downstream.reason}",  # type: ignore[union-attr]
                      data=summary)
    return summary


def ingest_partition(settings: FactorySettings, dataset: str, partition_key: date, steps: Steps, *,
                     mode: Mode = Mode.EXECUTE, action: Action = Action.RUN,
                     reason_code: ActionReason = ActionReason.OPERATOR_REQUEST, manifest_id: str | None = None,
                     force: bool = False, operator: str = "datafactory",
                     accept_changed: bool = False) -> PartitionSummary:
    """One partition run inside a flow run (its id and root go to the ledger and the evidence): held
    runs return their summary; a failed run leaves its evidence, then raises."""
    logger = get_run_logger()
    started = datetime.now(timezone.utc)
    if (why := partition_out_of_range(partition_key)) is not None:
        raise InputError("partition_key", None, "partition_key", why)
    spec = get_dataset(dataset)
    engine = get_engine(settings.database_url)
    stages: dict[str, float] = {}
    with timed(stages, "manifests"):
        manifests = steps.manifests(settings.manifest_root(dataset), dataset, partition_key, accept_changed)
    if manifest_id is not None:
        manifests = [m for m in manifests if m.manifest_id == manifest_id]
        if not manifests:
            raise InputError(settings.manifest_root(dataset), None, "manifest_id",
                             f"{manifest_id!r} is not a manifest of {dataset}/{partition_key}")
    who = run_identity(dataset, partition_key, manifests, action.value, mode.value, reason_code.value, operator,
                       str(flow_run.id) if flow_run.id else None, partial=manifest_id is not None,
                       accept_changed=accept_changed)
    ctx = RunContext(spec=spec, manifests=manifests, started_at=started, stages=stages, trace_id=_trace_id())
    dry_run = mode is Mode.DRY_RUN

    def hand(summary: PartitionSummary) -> PartitionSummary:
        return handover.hand_over(settings, summary, ctx, steps.leave)

    if not manifests:
        logger.info("%s/%s: no manifest declares this partition; nothing to ingest", dataset, partition_key)
        return hand(make_summary(replace(who, run_id=ledger.new_run_id()), "no_input",
                                 message="no manifest declares this partition"))

    if not force and not dry_run and manifest_id is None:
        skipped = handover.skip_if_up_to_date(settings, engine, who, ctx, steps.leave)
        if skipped is not None:
            logger.info("%s/%s: already succeeded from fingerprint %s; skipped", dataset, partition_key,
                        who.fingerprint[:12])
            return skipped

    delivery = Delivery(spec, manifests, settings.manifest_root(dataset), partition_key, settings.chunk_bytes)
    try:
        write = steps.write(settings, spec, manifests, dry_run)
        # a replay is a subset of the partition's inputs: the partition's lake snapshot stays as it is
        lake = None if dry_run or who.partial else open_lake(settings)
        with timed(stages, "write_check_and_snapshot"):
            done = write(engine, spec, delivery, who, dry_run, force, lake, settings.heartbeat_seconds)
        ctx.read_counts = done.read_counts
    except Exception as exc:
        ctx.error = f"{type(exc).__name__}: {exc}"
        last = ledger.last_attempt_of_flow_run(engine, who.batch_id, who.flow_run_id)
        if last is None and not dry_run:  # it failed before its write: the ledger records the attempt anyway
            recorded = record_failure(engine, who, ctx.error)
            last = (recorded[0].run_id, recorded[1]) if recorded else None
        failed_who = replace(who, run_id=last[0] if last else ledger.new_run_id())
        try:
            hand(make_summary(failed_who, "failed", attempt=last[1] if last else None,
                              message=str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
        except Exception as evidence_error:  # the run's own failure is what the operator must see
            logger.error("%s/%s: could not write evidence of the failure: %s", dataset, partition_key, evidence_error)
        raise
    _add_reading(stages, delivery.stages)
    if done.result.waited_for:
        logger.warning("%s/%s: waited for %s, which held the partition", dataset, partition_key, done.result.waited_for)
    if done.result.skipped:
        with reading(engine) as conn:
            current = ledger.current_run(conn, dataset, who.partition)
        ctx.release_id = f"{dataset}/{who.partition}/{current}"
        return hand(make_summary(done.who, "skipped", attempt=done.attempt, waited_for=done.result.waited_for,
                                 message="the run we waited for produced the same inputs"))
    ctx.lake_note = done.lake_note
    summary = hand(_counted(done, dry_run))
    logger.info(
        "%s/%s %s: total=%d valid=%d invalid=%d bronze_inserted=%d silver_inserted=%d silver_updated=%d",
        dataset, partition_key, summary.status, summary.total, summary.valid, summary.invalid,
        summary.bronze_inserted, summary.silver_inserted, summary.silver_updated,
    )
    return summary


def summary_of(state: State) -> PartitionSummary:
    """The summary a partition flow run returned (held runs included); a run that raised re-raises."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    return result  # type: ignore[no-any-return]


def run_partition(**parameters: Any) -> PartitionSummary:
    """Call partition_flow and return its summary whether the partition succeeded or was held."""
    return summary_of(partition_flow(**parameters, return_state=True))
