"""Leave a run's evidence behind as a Prefect task: `leave_evidence` plus the run's Prefect artifacts."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from schemas.settings import FactorySettings
from schemas.summary import PartitionSummary
from tasks.artifacts import publish_artifacts
from tasks.evidence import RunContext
from tasks.report import leave_evidence


@task(name="leave-evidence", cache_policy=NO_CACHE)
def leave_evidence_task(settings: FactorySettings, summary: PartitionSummary, ctx: RunContext,
                        refresh_summary: bool = True) -> Path:
    """Evidence JSON (validated), markdown and table artifacts, then (unless a backfill does it once at
    its end) the regenerated delivery summary."""
    path, evidence = leave_evidence(settings, summary, ctx, refresh_summary)
    publish_artifacts(evidence, path)
    return path
