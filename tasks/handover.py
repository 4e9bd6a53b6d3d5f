"""Leave a run's evidence behind: the JSON file, the Prefect artifacts, the delivery summary (one task)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from schemas.settings import FactorySettings
from schemas.summary import PartitionSummary
from tasks.artifacts import publish_artifacts
from tasks.database import get_engine
from tasks.evidence import RunContext, build_evidence, write_evidence
from tasks.manifests import discover_manifests
from tasks.report import write_delivery_summary


@task(name="leave-evidence", cache_policy=NO_CACHE)
def leave_evidence_task(settings: FactorySettings, summary: PartitionSummary, ctx: RunContext) -> Path:
    """Evidence JSON (validated), markdown and table artifacts, then the regenerated delivery summary."""
    evidence = build_evidence(summary, ctx, datetime.now(timezone.utc))
    path = write_evidence(Path(settings.report_dir), evidence)
    publish_artifacts(evidence, path)
    write_delivery_summary(get_engine(settings.database_url), Path(settings.report_dir),
                           discover_manifests(Path(settings.manifest_dir)))
    return path
