"""backfill_flow: plan a window of partitions, then (execute) run partition_flow for the gaps only."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from flows.handover import one_delivery_summary
from flows.partition import partition_flow, summary_of
from schemas.datasets import get_dataset
from schemas.reason_codes import Action, ActionReason, Mode
from schemas.settings import load_settings
from tasks.database import get_engine, reading
from tasks.ledger import outcome_of_flow_run
from tasks.manifests import discover_manifests
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
    from prefect.deployments import run_deployment

    flow_run = run_deployment(name=deployment, parameters=parameters, timeout=None, as_subflow=True)
    state = flow_run.state
    settings = load_settings()
    with reading(get_engine(settings.database_url)) as conn:
        recorded = outcome_of_flow_run(conn, str(flow_run.id))
    status = recorded[0] if recorded and recorded[0] in ("succeeded", "skipped", "held") else "failed"
    error = None if status in ("succeeded", "skipped") else (
        recorded[1] if recorded and recorded[1] else (state.message if state else "no state"))
    return {"partition_key": str(parameters["partition_key"]), "status": status, "error": error,
            "flow_run_id": str(flow_run.id), "evidence_path": None}


@task(name="run-partition", cache_policy=NO_CACHE)
def run_partition_task(dataset: str, entry: dict[str, Any], reason_code: str | None, operator: str,
                       deployment: str | None = None) -> dict[str, Any]:
    """One partition of a backfill, isolated: its failure is recorded, not raised, so the others go on.
    With `deployment`, the partition runs on that deployment's work pool instead of in this process."""
    rerun = entry["proposed_action"] == Action.RERUN
    why = reason_code or ACTIONS[entry["gap_reason"]][1] or ActionReason.OPERATOR_REQUEST.value
    if deployment:
        return _on_the_pool(deployment, {"dataset": dataset, "partition_key": entry["partition_key"],
                                         "action": Action.BACKFILL.value, "reason_code": why, "force": rerun,
                                         "operator": operator})
    try:
        summary = summary_of(partition_flow(
            dataset=dataset, partition_key=date.fromisoformat(entry["partition_key"]), action=Action.BACKFILL,
            reason_code=ActionReason(why), force=rerun, operator=operator, return_state=True))
    except Exception as exc:  # per-partition isolation: the ledger and this result carry the error
        get_run_logger().warning("%s/%s failed: %s", dataset, entry["partition_key"], exc)
        return {"partition_key": entry["partition_key"], "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    return {"partition_key": entry["partition_key"], "status": summary.status,
            "error": summary.message if summary.status == "held" else None,
            "bronze_inserted": summary.bronze_inserted, "invalid": summary.invalid, "run_id": summary.run_id,
            "evidence_path": summary.evidence_path}


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
) -> BackfillSummary:
    """Plan every partition of [start, end]; in execute mode run the ones with a gap, at most
    `max_concurrency` at a time. Resumable: a second run plans again and finds only what is left.

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
            on its work pool, at most max_concurrency at a time; empty = subflows in this process
    """
    logger = get_run_logger()
    settings = load_settings()
    spec = get_dataset(dataset)
    engine = get_engine(settings.database_url)
    manifests = discover_manifests(Path(settings.manifest_dir))
    mode = Mode(mode)
    plan_path, plan = write_plan(
        Path(settings.report_dir), dataset, start, end, mode.value, only_gaps, operator,
        reason_code.value if reason_code else None,
        lambda report_path: plan_backfill(engine, spec, manifests, start, end, settings.partition_start_date,
                                          mode.value, only_gaps, operator, report_path),
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
        with one_delivery_summary(settings), ThreadPoolTaskRunner(max_workers=max(1, max_concurrency)) as runner:
            futures = [runner.submit(run_partition_task, {"dataset": dataset, "entry": entry,
                                                          "reason_code": reason_code.value if reason_code else None,
                                                          "operator": operator, "deployment": deployment})
                       for entry in todo]
            results = [future.result() for future in futures]
    return BackfillSummary(backfill_id=plan["backfill_id"], plan_path=str(plan_path), mode=mode.value,
                           planned=len(entries), to_ingest=len(todo), by_gap_reason=by_gap, results=results)
