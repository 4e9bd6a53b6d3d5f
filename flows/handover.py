"""What a partition run hands over, and the skip decided from the ledger alone.

Imports no Prefect: `datafactory run` of a partition that is already up to date records its skip
(ledger row, decision log, evidence, delivery summary) here, without starting a Prefect server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import Engine

from schemas.datasets import get_dataset
from schemas.manifest import SourceManifest
from schemas.settings import FactorySettings
from schemas.summary import Downstream, PartitionSummary
from tasks import ledger
from tasks.commit import record_skip
from tasks.database import reading
from tasks.evidence import RunContext
from tasks.lake import open_lake
from tasks.ledger import RunIdentity
from tasks.manifests import batch_id_for, source_fingerprint
from tasks.report import leave_evidence, refresh_delivery_summary

LeaveEvidence = Callable[[FactorySettings, PartitionSummary, RunContext], Path]

@contextmanager
def one_delivery_summary(settings: FactorySettings) -> Iterator[None]:
    """The delivery summary rolls up every partition: a backfill's partition runs leave it alone and it
    is regenerated once, when this block ends, however it ends (not once per partition)."""
    try:
        yield
    finally:
        refresh_delivery_summary(settings)


def evidence_files(settings: FactorySettings, summary: PartitionSummary, ctx: RunContext) -> Path:
    """Evidence without a flow run: the JSON file and the delivery summary, no Prefect artifacts."""
    return leave_evidence(settings, summary, ctx, refresh_summary=True)[0]


def make_summary(who: RunIdentity, status: str, **fields: Any) -> PartitionSummary:
    return PartitionSummary(
        dataset=who.dataset, partition_key=who.partition_key, mode=who.mode, action=who.action,
        reason_code=who.reason_code, operator=who.operator, status=status, batch_id=who.batch_id,
        run_id=who.run_id or None, flow_run_id=who.flow_run_id, source_fingerprint=who.fingerprint,
        manifest_ids=list(who.manifest_ids), **fields,
    )


def decide_downstream(summary: PartitionSummary) -> Downstream:
    """May downstream consume the partition after this run? Only a clean, committed (or current) output."""
    blocking = [c.name for c in summary.blocking_checks]
    if summary.status == "succeeded":
        warned = [c.name for c in summary.checks if c.status == "warn"]
        return Downstream(decision="unblock", reason="every error check passed" + (
            f"; warnings: {', '.join(warned)}" if warned else ""))
    if summary.status == "skipped":
        return Downstream(decision="unblock", reason="already succeeded from the same inputs; current output unchanged")
    if summary.status == "held":
        detail = "; ".join(f"{c.name}: {c.detail}" for c in summary.blocking_checks)
        return Downstream(decision="hold", reason=f"held by {detail}", blocking_checks=blocking)
    if summary.status == "dry_run":
        verdict = f"checks would hold it ({', '.join(blocking)})" if blocking else "checks would unblock it"
        return Downstream(decision="hold", reason=f"dry run: nothing was committed; {verdict}",
                          blocking_checks=blocking)
    if summary.status == "no_input":
        return Downstream(decision="hold", reason="no manifest declares this partition")
    return Downstream(decision="hold", reason=f"the run failed; earlier output, if any, is unchanged: {summary.message}")


def hand_over(settings: FactorySettings, summary: PartitionSummary, ctx: RunContext,
              leave: LeaveEvidence) -> PartitionSummary:
    """Decide downstream, then leave the evidence (in a flow: JSON file, Prefect artifacts, delivery summary)."""
    summary = summary.model_copy(update={"downstream": decide_downstream(summary)})
    path = leave(settings, summary, ctx)
    return summary.model_copy(update={"evidence_path": str(path)})


def run_identity(dataset: str, partition_key: date, manifests: list[SourceManifest], action: str, mode: str,
                 reason_code: str, operator: str, flow_run_id: str | None, partial: bool = False,
                 accept_changed: bool = False) -> RunIdentity:
    fingerprint = source_fingerprint(manifests)
    return RunIdentity(
        dataset=dataset, partition_key=partition_key, batch_id=batch_id_for(dataset, partition_key, fingerprint),
        run_id="", fingerprint=fingerprint, manifest_ids=tuple(m.manifest_id for m in manifests),
        action=action, mode=mode, reason_code=reason_code, operator=operator, flow_run_id=flow_run_id,
        partial=partial, accept_changed=accept_changed,
    )


def skip_if_up_to_date(settings: FactorySettings, engine: Engine, who: RunIdentity, ctx: RunContext,
                       leave: LeaveEvidence) -> PartitionSummary | None:
    """When the partition's current output came from exactly these inputs, record the skip (it also
    moves a lake marker a crash left behind) and hand it over; None when there is work to do."""
    with reading(engine) as conn:
        if not ledger.succeeded_with(conn, who.dataset, who.partition_key, who.fingerprint):
            return None
        current = ledger.current_run(conn, who.dataset, who.partition)
    who, attempt, lake_note = record_skip(engine, who, open_lake(settings))
    ctx.release_id = f"{who.dataset}/{who.partition}/{current}"
    message = f"already succeeded from the same inputs (run {current})" + (f"; {lake_note}" if lake_note else "")
    return hand_over(settings, make_summary(who, "skipped", attempt=attempt, message=message), ctx, leave)


def skip_without_flow(settings: FactorySettings, engine: Engine, dataset: str, partition_key: date,
                      manifests: list[SourceManifest], action: str, reason_code: str,
                      operator: str) -> PartitionSummary | None:
    """The CLI's no-op: an up-to-date partition skipped with no flow run (so no Prefect artifacts)."""
    if not manifests:
        return None
    who = run_identity(dataset, partition_key, manifests, action, "execute", reason_code, operator, None)
    ctx = RunContext(spec=get_dataset(dataset), manifests=manifests, started_at=datetime.now(timezone.utc))
    return skip_if_up_to_date(settings, engine, who, ctx, evidence_files)
