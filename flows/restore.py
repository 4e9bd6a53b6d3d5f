"""restore_flow: make a committed lake snapshot of a partition current again and rebuild the silver rows
it touches from the current snapshots of all partitions, then check and leave evidence."""

from __future__ import annotations

from datetime import date, datetime, timezone

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed, State

from flows.partition import hand_over, make_summary, timed
from schemas.datasets import get_dataset
from schemas.reason_codes import ActionReason
from schemas.settings import load_settings
from schemas.summary import PartitionSummary
from tasks.database import get_engine
from tasks.evidence import RunContext
from tasks.lake import open_lake
from tasks.materialize import restore_partition_task
from tasks.restore import restore_identity, restore_target


@flow(name="restore-flow")
def restore_flow(
    dataset: str,
    partition_key: date,
    snapshot_id: str,
    reason_code: ActionReason = ActionReason.UNTRUSTED_STATE,
    operator: str = "datafactory",
) -> PartitionSummary | State:
    """Make `snapshot_id` the partition's current lake snapshot and rebuild the silver rows of every
    entity it (or the snapshot it replaces) touches from all partitions' current snapshots; then run
    the checks, write evidence and a decision-log row (action restore). Ends Failed when a check holds it.

    Args:
        dataset: registered dataset name, e.g. tickets
        partition_key: the partition to restore, YYYY-MM-DD
        snapshot_id: a retained snapshot (`datafactory lake snapshots`)
        reason_code: why; untrusted_state unless said otherwise
        operator: who asked for it, for the decision log
    """
    logger = get_run_logger()
    started = datetime.now(timezone.utc)
    settings = load_settings()
    spec = get_dataset(dataset)
    engine = get_engine(settings.database_url)
    lake = open_lake(settings)
    stages: dict[str, float] = {}
    manifest = restore_target(engine, lake, dataset, partition_key, snapshot_id)  # checked whole, or one line
    who = restore_identity(engine, dataset, partition_key, manifest, ActionReason(reason_code).value, operator,
                           str(flow_run.id) if flow_run.id else None)
    prefix = lake.prefix(dataset, partition_key)
    ctx = RunContext(spec=spec, manifests=[], started_at=started, stages=stages, inputs=[
        {"manifest_id": snapshot_id, "uri": f"{lake.storage.url}/{prefix}/{f['path']}", "format": "parquet",
         "sha256": f["sha256"], "record_count": f["rows"], "read_count": f["rows"]} for f in manifest["files"]])
    with timed(stages, "restore_and_check"):
        done = restore_partition_task(engine, lake, spec, who, manifest)
    status = "held" if done.held else "succeeded"
    summary = make_summary(who, status, attempt=done.attempt, checks=done.checks,
                           lake_snapshot=done.snapshot_summary,
                           message=f"restored snapshot {snapshot_id}; silver rebuilt from the lake"
                           + (f"; {done.lake_note}" if done.lake_note else ""),
                           **done.counts.model_dump())
    summary = hand_over(settings, summary, ctx)
    from flows.marts import after_commit

    after_commit(settings, dataset)
    logger.info("%s/%s: restored snapshot %s (%s)", dataset, partition_key, snapshot_id, status)
    if status == "held":
        return Failed(message=f"{dataset}/{partition_key} held after restore: {summary.downstream.reason}",  # type: ignore[union-attr]
                      data=summary)
    return summary

