"""One mart partition brought up to date: computed and committed, recorded held, or recorded failed;
each leaves its evidence. The Prefect task is a thin wrapper (one task run per mart partition)."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Engine

from schemas.mart_models import Freshness, MartModel
from tasks import ledger
from tasks.database import reading
from tasks.errors import FactoryError, PartitionLockedError
from tasks.lake import Lake
from tasks.lake_state import follow_ledger, settle_lake
from tasks.ledger import utc_now
from tasks.locks import partition_lock
from tasks.mart_commit import commit_mart_partition, prepare_gold, previous_rows, record_failed, record_held
from tasks.mart_compute import InputFiles, compute
from tasks.mart_evidence import MartOutcome, mart_evidence, write_mart_evidence
from tasks.mart_models import MartGraph
from tasks.mart_plan import PartitionPlan, plan_mart


def refresh_partition(engine: Engine, lake: Lake, graph: MartGraph, model: MartModel, plan: PartitionPlan,
                      files: InputFiles, report_dir: Path, flow_run_id: str | None) -> MartOutcome:
    """Compute the partition from the inputs its plan names (re-planned under its lock, so two marts runs
    never commit one partition twice or from older inputs), or record it held."""
    began, started, run_id = time.perf_counter(), utc_now(), ledger.new_run_id()
    outcome = MartOutcome(plan, "fresh", run_id=run_id)
    note = None
    with partition_lock(engine, model.name, plan.partition, lambda: None):
        with reading(engine) as conn:
            (plan,) = plan_mart(conn, graph, model, plan.day, plan.day) or [plan]
            earlier = previous_rows(conn, model, plan.day)
        outcome.plan = plan
        if plan.freshness is Freshness.FRESH:
            outcome.run_id = None
            return outcome
        if plan.freshness is Freshness.HELD:
            if not record_held(engine, model, plan.day, plan.held_by, run_id, plan.inputs, started, flow_run_id):
                outcome.run_id, outcome.status = None, "held"
                return outcome
            outcome.status = "held"
        else:
            why = plan.freshness.value
            try:
                prepare_gold(engine, model)
                result = compute(model, graph, plan.day, plan.inputs, files, earlier)
                outcome.status, record = commit_mart_partition(
                    engine, lake, model, plan.day, result.rows, plan.inputs, result.checks, run_id, why, started,
                    flow_run_id, because=plan.why)
                outcome.snapshot_id, outcome.rows, outcome.checks = record["snapshot_id"], result.rows.height, result.checks
            except Exception as exc:
                outcome.status = "failed"
                outcome.error = str(exc).splitlines()[0] if isinstance(exc, FactoryError) else f"{type(exc).__name__}: {exc}"
                record_failed(engine, model, plan.day, run_id, why, plan.inputs, started, flow_run_id, outcome.error)
            else:
                note = settle(engine, lake, model.name, plan)
    outcome.seconds = time.perf_counter() - began
    outcome.evidence = write_mart_evidence(report_dir, mart_evidence(model, outcome, flow_run_id, note))
    return outcome


def settle(engine: Engine, lake: Lake, mart: str, plan: PartitionPlan) -> str | None:
    """After the commit: the marker follows the ledger, retention, leftovers. The partition is committed
    whatever happens here; `marts run` moves a marker left behind."""
    try:
        return settle_lake(engine, lake, mart, plan.day)
    except Exception as exc:  # committed already: this run's result stands
        return f"the lake marker is behind the warehouse ({type(exc).__name__}: {exc}); `datafactory marts run` moves it"


@task(name="refresh-mart-partition", task_run_name="{model.name}/{plan.day}", cache_policy=NO_CACHE)
def refresh_partition_task(engine: Engine, lake: Lake, graph: MartGraph, model: MartModel, plan: PartitionPlan,
                           files: InputFiles, report_dir: Path, flow_run_id: str | None) -> MartOutcome:
    return refresh_partition(engine, lake, graph, model, plan, files, report_dir, flow_run_id)


def repair_markers(engine: Engine, lake: Lake, plans: list[PartitionPlan]) -> list[str]:
    """Move the marker of every committed partition whose marker a failure after its commit left behind."""
    moved = []
    for plan in plans:
        try:
            with partition_lock(engine, plan.mart, plan.partition, lambda: None, wait=False):
                note = follow_ledger(engine, lake, plan.mart, plan.day)
        except PartitionLockedError:  # a marts run is committing it: its marker follows that commit
            continue
        if note:
            moved.append(f"{plan.mart}/{plan.partition}: {note}")
    return moved
