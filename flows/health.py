"""health_flow: what needs an operator's attention across every registered dataset; Failed when anything does."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed, State

from sqlalchemy import Engine

from schemas.datasets import DATASETS, DatasetSpec, get_dataset
from schemas.settings import load_settings
from tasks.database import get_engine
from tasks.errors import StorageError, TransientError
from tasks.health import Finding, HealthThresholds, find_problems
from tasks.lake import Lake, open_lake
from tasks.manifests import discover_manifests
from tasks.verify import verify


def health_report(days: int = 7, stale_minutes: int = 30, max_attempts: int = 3,
                  quarantine_spike: float = 0.25) -> dict[str, Any]:
    """Findings per dataset, with the window each was judged on."""
    settings = load_settings()
    engine = get_engine(settings.database_url)
    manifests = discover_manifests(Path(settings.manifest_dir))
    limits = HealthThresholds(days, stale_minutes, max_attempts, quarantine_spike)
    report: dict[str, Any] = {"thresholds": limits.__dict__, "datasets": {}, "findings": []}
    lake = open_lake(settings)
    for dataset in sorted(DATASETS):
        declared = {m.partition_key for m in manifests if m.dataset == dataset}
        window, findings = find_problems(engine, dataset, declared, limits)
        if window is not None:  # the cheap half of verify, over the same window
            findings += verified(engine, lake, get_dataset(dataset), Path(settings.report_dir), window)
        report["datasets"][dataset] = {"window": [d.isoformat() for d in window] if window else None,
                                       "findings": len(findings)}
        report["findings"] += [f.as_dict() for f in findings]
    report["healthy"] = not report["findings"]
    return report


def verified(engine: Engine, lake: Lake, spec: DatasetSpec, report_dir: Path,
             window: tuple[date, date]) -> list[Finding]:
    """Verify's findings about the window's partitions, as health findings (kind = the reason code)."""
    try:
        found = verify(engine, lake, spec, report_dir, window[0], window[1], deep=False)
    except (StorageError, TransientError) as exc:
        return [Finding("lake_unreachable", spec.name, f"{window[0]}..{window[1]}", str(exc))]
    return [Finding(f.reason, f.dataset, f.partition, f"{f.location}: {f.detail}" + ("" if f.current
                    else " (an older snapshot)")) for f in found]


def health_markdown(report: dict[str, Any]) -> str:
    lines = ["# Data Factory health: " + ("healthy" if report["healthy"] else f"{len(report['findings'])} finding(s)"), ""]
    for dataset, seen in report["datasets"].items():
        window = " to ".join(seen["window"]) if seen["window"] else "no partitions"
        lines.append(f"- {dataset}: partitions {window}: {seen['findings']} finding(s)")
    if report["findings"]:
        lines += ["", "| kind | dataset | partition | detail |", "|---|---|---|---|"]
        lines += [f"| {f['kind']} | {f['dataset']} | {f['partition']} | {f['detail']} |" for f in report["findings"]]
    return "\n".join(lines) + "\n"


@flow(name="health-flow")
def health_flow(days: int = 7, stale_minutes: int = 30, max_attempts: int = 3,
                quarantine_spike: float = 0.25) -> dict[str, Any] | State:
    """Stale RUNNING runs, missing, failed and held partitions of the last `days`, retry storms,
    quarantine spikes, and the cheap half of verify over those partitions (ledger against warehouse,
    lake and evidence: a partition with a finding becomes untrusted). Publishes a markdown artifact; ends Failed when anything needs attention.

    Args:
        days: partitions looked at: the last `days` up to the newest known partition
        stale_minutes: a RUNNING run whose heartbeat is older than this is stale
        max_attempts: more attempts than this on one batch is a retry storm
        quarantine_spike: a current run quarantining a larger share of its records is a spike
    """
    report = health_report(days, stale_minutes, max_attempts, quarantine_spike)
    create_markdown_artifact(key="data-factory-health", markdown=health_markdown(report),
                             description="what needs an operator's attention")
    if not report["healthy"]:
        get_run_logger().warning("%d finding(s) need attention", len(report["findings"]))
        return Failed(message=f"{len(report['findings'])} finding(s) need attention", data=report)
    return report
