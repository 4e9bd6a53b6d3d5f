"""partition_flow: materialize one (dataset, partition). Every recovery action goes through here."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from schemas.datasets import get_dataset
from schemas.reason_codes import Action, ActionReason, Mode
from schemas.settings import load_settings
from schemas.summary import PartitionSummary
from tasks.commit import commit_partition_task, record_skip
from tasks.database import get_engine, reading
from tasks.errors import InputError
from tasks.ingest import read_assets_task, validate_contract_task
from tasks.ledger import RunIdentity, succeeded_with
from tasks.manifests import batch_id_for, source_fingerprint, validate_manifests_task


def _summary(who: RunIdentity, status: str, **counts: object) -> PartitionSummary:
    return PartitionSummary(
        dataset=who.dataset, partition_key=who.partition_key, mode=who.mode, action=who.action,
        reason_code=who.reason_code, status=status, batch_id=who.batch_id, run_id=who.run_id or None,
        flow_run_id=who.flow_run_id, source_fingerprint=who.fingerprint, manifest_ids=list(who.manifest_ids),
        **counts,
    )


@flow(name="partition-flow", log_prints=False)
def partition_flow(
    dataset: str,
    partition_key: date,
    mode: Mode = Mode.EXECUTE,
    action: Action = Action.RUN,
    reason_code: ActionReason = ActionReason.OPERATOR_REQUEST,
    manifest_id: str | None = None,
    force: bool = False,
    operator: str = "datafactory",
    accept_changed: bool = False,
) -> PartitionSummary:
    """Manifests → read → validate → bronze, silver, quarantine and ledger in one transaction.

    Skips when the partition already succeeded from the same source fingerprint, unless `force`.
    `mode="dry-run"` reads, validates and counts against the warehouse, then rolls everything back.
    `manifest_id` narrows the run to one delivery (a replay); `accept_changed` takes changed source
    files as they are now instead of rejecting them (source_fingerprint_changed).
    """
    logger = get_run_logger()
    settings = load_settings()
    spec = get_dataset(dataset)
    engine = get_engine(settings.database_url)
    manifests = validate_manifests_task(Path(settings.manifest_dir), dataset, partition_key, accept_changed)
    if manifest_id is not None:
        manifests = [m for m in manifests if m.manifest_id == manifest_id]
        if not manifests:
            raise InputError(settings.manifest_dir, None, "manifest_id",
                             f"{manifest_id!r} is not a manifest of {dataset}/{partition_key}")
    fingerprint = source_fingerprint(manifests)
    who = RunIdentity(
        dataset=dataset, partition_key=partition_key, batch_id=batch_id_for(dataset, partition_key, fingerprint),
        run_id="", fingerprint=fingerprint, manifest_ids=tuple(m.manifest_id for m in manifests),
        action=Action(action).value, mode=Mode(mode).value, reason_code=ActionReason(reason_code).value,
        operator=operator, flow_run_id=str(flow_run.id) if flow_run.id else None,
        partial=manifest_id is not None,
    )
    dry_run = Mode(mode) is Mode.DRY_RUN
    if not manifests:
        logger.info("%s/%s: no manifest declares this partition; nothing to ingest", dataset, partition_key)
        return _summary(who, "no_input", message="no manifest declares this partition")

    with reading(engine) as conn:
        up_to_date = succeeded_with(conn, dataset, partition_key, fingerprint)
    if up_to_date and not force and not dry_run and manifest_id is None:
        who, attempt = record_skip(engine, who)
        logger.info("%s/%s: already succeeded from fingerprint %s; skipped", dataset, partition_key, fingerprint[:12])
        return _summary(who, "skipped", attempt=attempt, message="already succeeded from the same inputs")

    raw = read_assets_task(spec, manifests, Path(settings.manifest_dir))
    batch = validate_contract_task(spec, raw, partition_key)
    del raw  # the validated batch holds what the write needs; hold no reference to the raw copy
    result, rejected, who, attempt = commit_partition_task(engine, spec, batch, who, dry_run, force)
    if result.waited_for:
        logger.warning("%s/%s: waited for %s, which held the partition", dataset, partition_key, result.waited_for)
    if result.skipped:
        return _summary(who, "skipped", attempt=attempt, waited_for=result.waited_for,
                        message="the run we waited for produced the same inputs")
    by_reason: dict[str, int] = {}
    for code in rejected["reason_code"].to_list():
        by_reason[code] = by_reason.get(code, 0) + 1
    summary = _summary(
        who, "dry_run" if dry_run else "succeeded", attempt=attempt,
        declared_records=sum(a.record_count for m in manifests for a in m.assets),
        total=batch.total, valid=batch.total - rejected.height, invalid=rejected.height,
        invalid_by_reason=dict(sorted(by_reason.items())), duplicate_in_batch=result.duplicate_in_batch,
        late_arriving=result.late_arriving,
        distinct_entities=result.distinct_entities,
        bronze_inserted=result.bronze_inserted, bronze_existing=result.bronze_existing,
        bronze_displaced=result.bronze_displaced, silver_inserted=result.silver_inserted,
        silver_updated=result.silver_updated, silver_unchanged=result.silver_unchanged,
        silver_stale_skipped=result.silver_stale_skipped, quarantine_inserted=result.quarantine_inserted,
        waited_for=result.waited_for,
    )
    logger.info(
        "%s/%s %s: total=%d valid=%d invalid=%d bronze_inserted=%d silver_inserted=%d silver_updated=%d",
        dataset, partition_key, summary.status, summary.total, summary.valid, summary.invalid,
        summary.bronze_inserted, summary.silver_inserted, summary.silver_updated,
    )
    return summary
