"""restore_flow: make a committed lake snapshot of a partition current again and rebuild the silver rows
it touches from the current snapshots of all partitions, then check and leave evidence."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed, State
from sqlalchemy import Engine, select

from flows.partition import hand_over, make_summary, timed
from schemas.datasets import get_dataset
from schemas.reason_codes import Action, ActionReason, Mode
from schemas.settings import load_settings
from schemas.summary import PartitionSummary
from schemas.tables import ingest_batch
from tasks import ledger
from tasks.database import get_engine, reading
from tasks.errors import InputError
from tasks.evidence import RunContext
from tasks.lake import (
    LakeError,
    open_lake,
    snapshot_manifest,
)
from tasks.ledger import RunIdentity
from tasks.restore import restore_partition_task


def _identity(engine: Engine, dataset: str, day: date, manifest: dict[str, Any], reason: str, operator: str) -> RunIdentity:
    """The restore runs as the batch that produced the snapshot (same inputs, same fingerprint)."""
    with reading(engine) as conn:
        batch = conn.execute(select(ingest_batch).where(ingest_batch.c.batch_id == manifest.get("batch_id"))).first()
    if batch is None:
        raise InputError(f"snapshot {manifest['snapshot_id']}", None, "batch_id",
                         f"batch {manifest.get('batch_id')!r} is unknown to this warehouse; restore needs the "
                         "warehouse that wrote the snapshot")
    return RunIdentity(
        dataset=dataset, partition_key=day, batch_id=batch.batch_id, run_id=ledger.new_run_id(),
        fingerprint=batch.source_fingerprint, manifest_ids=tuple(manifest.get("manifest_ids", [])),
        action=Action.RESTORE.value, mode=Mode.EXECUTE.value, reason_code=reason, operator=operator,
        flow_run_id=str(flow_run.id) if flow_run.id else None,
    )


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
    try:
        manifest = snapshot_manifest(lake, dataset, partition_key, snapshot_id)
    except LakeError as exc:
        raise InputError(settings.lake_url, None, "--snapshot", str(exc).split(": ", 1)[-1]) from None
    who = _identity(engine, dataset, partition_key, manifest, ActionReason(reason_code).value, operator)
    prefix = lake.prefix(dataset, partition_key)
    ctx = RunContext(spec=spec, manifests=[], started_at=started, stages=stages, inputs=[
        {"manifest_id": snapshot_id, "uri": f"{lake.storage.url}/{prefix}/{f['path']}", "format": "parquet",
         "sha256": f["sha256"], "record_count": f["rows"], "read_count": f["rows"]} for f in manifest["files"]])
    with timed(stages, "restore_and_check"):
        done = restore_partition_task(engine, lake, spec, who, snapshot_id)
    status = "held" if done.held else "succeeded"
    summary = make_summary(who, status, attempt=done.attempt, checks=done.checks,
                           lake_snapshot=done.snapshot_summary,
                           message=f"restored snapshot {snapshot_id}; silver rebuilt from the lake",
                           **done.counts.model_dump())
    summary = hand_over(settings, summary, ctx)
    logger.info("%s/%s: restored snapshot %s (%s)", dataset, partition_key, snapshot_id, status)
    if status == "held":
        return Failed(message=f"{dataset}/{partition_key} held after restore: {summary.downstream.reason}",  # type: ignore[union-attr]
                      data=summary)
    return summary

