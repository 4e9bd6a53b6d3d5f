"""backfill_flow: plan a window of partitions, then (execute) ingest the gaps only.

Each partition is one task run of the backfill's flow run (its steps are plain calls, see
flows/partition.py), with its own evidence, artifacts and ledger rows: a subflow per partition cost
about a second of bookkeeping each. The manifests are parsed once, for the plan, and the delivery
summary regenerated once, at the end.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any, Iterator

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

from flows.handover import one_delivery_summary
from flows.partition import Steps, ingest_partition
from schemas.datasets import DATASETS, DatasetSpec, get_dataset
from schemas.manifest import SourceManifest
from schemas.reason_codes import Action, ActionReason, Mode
from schemas.settings import FactorySettings, load_settings
from schemas.summary import PartitionSummary
from tasks.assets import as_materialization, source_assets, table_assets
from tasks.database import get_engine, reading
from tasks.errors import FactoryError, InputError
from tasks.evidence import RunContext
from tasks.handover import leave_evidence_task
from tasks.ledger import outcome_of_flow_run
from tasks.manifests import discover_manifests, partition_manifests
from tasks.mart_models import MartGraph, load_models
from tasks.materialize import commit_partition_task, retry_on_transient
from tasks.plan import ACTIONS, INGESTING, plan_backfill, write_plan


class BackfillSummary(BaseModel):
    backfill_id: str
    plan_path: str
    mode: str
    planned: int
    to_ingest: int
    by_gap_reason: dict[str, int]
    results: list[dict[str, Any]]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["status"] == "failed"]

    @property
    def held(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["status"] == "held"]


def _on_the_pool(deployment: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """Fan out: the partition runs as a flow run of `deployment` on its work pool; we wait for its end.
    Its outcome is what its attempt recorded in the ledger, not words in the state's message: a run
    that never reached the ledger (a lock timeout, a crash) failed."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    flow_run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync here: a flow run, not a coroutine
        name=deployment, parameters=parameters, timeout=None, as_subflow=True)
    state = flow_run.state
    settings = load_settings()
    with reading(get_engine(settings.database_url)) as conn:
        recorded = outcome_of_flow_run(conn, str(flow_run.id))
    status = recorded[0] if recorded and recorded[0] in ("succeeded", "skipped", "held") else "failed"
    error = None if status in ("succeeded", "skipped") else (
        recorded[1] if recorded and recorded[1] else (state.message if state else "no state"))
    return {"partition_key": str(parameters["partition_key"]), "status": status, "error": error,
            "flow_run_id": str(flow_run.id), "evidence_path": None}


@task(name="run-partition-on-pool", cache_policy=NO_CACHE, task_run_name="{dataset}/{partition_key}")
def run_on_pool_task(deployment: str, dataset: str, partition_key: date, reason_code: str, force: bool,
                     operator: str) -> dict[str, Any]:
    return _on_the_pool(deployment, {"dataset": dataset, "partition_key": partition_key.isoformat(),
                                     "action": Action.BACKFILL.value, "reason_code": reason_code, "force": force,
                                     "operator": operator})


def _leave_in_task(settings: FactorySettings, summary: PartitionSummary, ctx: RunContext) -> Path:
    """Evidence JSON and artifacts of this task run; the backfill regenerates the delivery summary at its end."""
    return leave_evidence_task.fn(settings, summary, ctx, refresh_summary=False)


def _steps_in_one_task(declared: list[SourceManifest]) -> Steps:
    """The partition's steps as plain calls inside its one task run, from the manifests the backfill parsed."""
    return Steps(manifests=partial(partition_manifests, discovered=declared), write=lambda *_: commit_partition_task.fn,
                 leave=_leave_in_task)


@task(name="backfill-partition", cache_policy=NO_CACHE, task_run_name="{dataset}/{partition_key}", retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
      retry_condition_fn=retry_on_transient)
def ingest_partition_task(settings: FactorySettings, dataset: str, partition_key: date,
                          declared: list[SourceManifest], reason_code: str, force: bool,
                          operator: str, action: str = Action.BACKFILL.value) -> PartitionSummary:
    """One partition of a backfill (or a pull) as one task run (materializing its tables), retried when
    the failure was transient; its ledger rows name the calling flow run."""
    return ingest_partition(settings, dataset, partition_key, _steps_in_one_task(declared), action=Action(action),
                            reason_code=ActionReason(reason_code), force=force, operator=operator)


def _submit(runner: TaskRunner, settings: FactorySettings, spec: DatasetSpec, entry: dict[str, Any],
            manifests: list[SourceManifest], reason_code: str | None, operator: str,
            deployment: str | None) -> PrefectFuture[Any]:
    day = date.fromisoformat(entry["partition_key"])
    why = reason_code or ACTIONS[entry["gap_reason"]][1] or ActionReason.OPERATOR_REQUEST.value
    rerun = entry["proposed_action"] == Action.RERUN
    if deployment:
        return runner.submit(run_on_pool_task, {"deployment": deployment, "dataset": spec.name, "partition_key": day,
                                                "reason_code": why, "force": rerun, "operator": operator})
    declared = [m for m in manifests if m.dataset == spec.name and m.partition_key == day]
    materializing = as_materialization(ingest_partition_task, table_assets(settings.database_url, spec),
                                       source_assets(declared))
    return runner.submit(materializing, {"settings": settings, "dataset": spec.name, "partition_key": day,
                                         "declared": declared, "reason_code": why, "force": rerun,
                                         "operator": operator})


def _outcome(entry: dict[str, Any], future: PrefectFuture[Any]) -> dict[str, Any]:
    """A partition's result; its failure is recorded here (and in the ledger), not raised, so the others go on."""
    result = future.result(raise_on_failure=False)
    if isinstance(result, dict):  # on the work pool
        return result
    if isinstance(result, BaseException):
        get_run_logger().warning("%s failed: %s", entry["partition_key"], result)
        return {"partition_key": entry["partition_key"], "status": "failed",
                "error": f"{type(result).__name__}: {result}"}
    return {"partition_key": entry["partition_key"], "status": result.status,
            "error": result.message if result.status == "held" else None,
            "bronze_inserted": result.bronze_inserted, "invalid": result.invalid, "run_id": result.run_id,
            "evidence_path": result.evidence_path}


@contextmanager
def _task_runner(max_concurrency: int, dask_address: str | None) -> Iterator[TaskRunner]:
    """Threads in this process, or the workers of an existing Dask cluster (named in one line when unreachable)."""
    runner = _runner(max_concurrency, dask_address)
    try:
        runner.__enter__()
        if dask_address:
            runner.client  # type: ignore[attr-defined]  # connect now: prefect-dask connects on first submit
    except OSError as exc:
        raise FactoryError(f"--dask-address {dask_address}: no Dask scheduler answers there ({exc})") from None
    try:
        yield runner
    finally:
        runner.__exit__(None, None, None)


def _runner(max_concurrency: int, dask_address: str | None) -> TaskRunner:
    if dask_address:
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise FactoryError("--dask-address needs prefect-dask: pip install 'data-factory[dask]'") from None
        return DaskTaskRunner(address=dask_address)
    return ThreadPoolTaskRunner(max_workers=max(1, max_concurrency))


def _marts_or_none(settings: FactorySettings) -> MartGraph | None:
    """The marts a plan names as made stale; a broken model folder only leaves them out of the plan."""
    try:
        return load_models(Path(settings.marts_dir), DATASETS)
    except InputError as exc:
        get_run_logger().error("the plan names no marts: %s", exc)
        return None


@flow(name="backfill-flow")
def backfill_flow(
    dataset: str,
    start: date,
    end: date,
    mode: Mode = Mode.DRY_RUN,
    only_gaps: bool = True,
    max_concurrency: int = 2,
    reason_code: ActionReason | None = None,
    operator: str = "datafactory",
    deployment: str | None = None,
    dask_address: str | None = None,
) -> BackfillSummary:
    """Plan every partition of [start, end]; in execute mode run the ones with a gap, at most
    `max_concurrency` at a time. Resumable: a second run plans again and finds only what is left.
    A pulled dataset (an HTTP or SQL source) is first pulled again over [start, end] in execute mode.

    Args:
        dataset: registered dataset name, e.g. tickets
        start: first partition of the window, YYYY-MM-DD
        end: last partition of the window, YYYY-MM-DD
        mode: dry-run writes only the plan; execute also runs the partitions with a gap
        only_gaps: false reruns up-to-date partitions too
        max_concurrency: partition runs at once
        reason_code: why; empty = each partition's gap reason
        operator: who asked for it, for the decision log
        deployment: run each partition as a flow run of this deployment (e.g. partition-flow/tickets-daily)
            on its work pool, at most max_concurrency at a time; empty = one task run per partition
        dask_address: run the partitions' task runs on this Dask cluster (tcp://host:8786) with
            prefect-dask's DaskTaskRunner, as many at a time as it has workers; empty = threads in this process
    """
    logger = get_run_logger()
    settings = load_settings()
    spec = get_dataset(dataset)
    engine = get_engine(settings.database_url)
    mode = Mode(mode)
    if spec.pulled and mode is Mode.EXECUTE:
        # a pulled dataset's days are pulled again first (BACKFILL cursor events; the cursor stays), ingesting
        # what the source holds for them; the plan below then finds only what is still missing
        from flows.pull import pull_flow  # here: flows/pull.py runs its partitions with this module's task

        pull_flow(dataset=dataset, start=start, end=end,
                  reason_code=reason_code or ActionReason.OPERATOR_REQUEST, operator=operator)
    manifests = discover_manifests(settings.manifest_root(dataset))
    plan_path, plan = write_plan(
        Path(settings.report_dir), dataset, start, end, mode.value, only_gaps, operator,
        reason_code.value if reason_code else None,
        lambda report_path: plan_backfill(engine, spec, manifests, start, end, settings.partition_start_date,
                                          mode.value, only_gaps, operator, report_path, _marts_or_none(settings)),
    )
    entries = plan["entries"]
    todo = [e for e in entries if e["proposed_action"] in INGESTING]
    by_gap: dict[str, int] = {}
    for entry in entries:
        by_gap[entry["gap_reason"]] = by_gap.get(entry["gap_reason"], 0) + 1
    logger.info("backfill %s: %d partitions planned, %d to ingest, plan %s", plan["backfill_id"], len(entries),
                len(todo), plan_path)
    results: list[dict[str, Any]] = []
    if mode is Mode.EXECUTE and todo:
        with one_delivery_summary(settings), _task_runner(max_concurrency, dask_address) as runner:
            futures = [_submit(runner, settings, spec, entry, manifests,
                               reason_code.value if reason_code else None, operator, deployment) for entry in todo]
            results = [_outcome(entry, future) for entry, future in zip(todo, futures)]
        if any(r["status"] in ("succeeded", "held") for r in results) and deployment is None:
            from flows.marts import after_commit  # once for the window: each mart partition computed once

            after_commit(settings, dataset, refresh_summary=False)  # the summary follows, once
    return BackfillSummary(backfill_id=plan["backfill_id"], plan_path=str(plan_path), mode=mode.value,
                           planned=len(entries), to_ingest=len(todo), by_gap_reason=by_gap, results=results)
