"""health_flow: what needs an operator's attention across every registered dataset; Failed when anything does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed, State

from schemas.datasets import DATASETS
from schemas.settings import load_settings
from tasks.database import get_engine
from tasks.health import HealthThresholds, find_problems
from tasks.manifests import discover_manifests


def health_report(days: int = 7, stale_minutes: int = 30, max_attempts: int = 3,
                  quarantine_spike: float = 0.25) -> dict[str, Any]:
    """Findings per dataset, with the window each was judged on."""
    settings = load_settings()
    engine = get_engine(settings.database_url)
    manifests = discover_manifests(Path(settings.manifest_dir))
    limits = HealthThresholds(days, stale_minutes, max_attempts, quarantine_spike)
    report: dict[str, Any] = {"thresholds": limits.__dict__, "datasets": {}, "findings": []}
    for dataset in sorted(DATASETS):
        declared = {m.partition_key for m in manifests if m.dataset == dataset}
        window, findings = find_problems(engine, dataset, declared, limits)
        report["datasets"][dataset] = {"window": [d.isoformat() for d in window] if window else None,
                                       "findings": len(findings)}
        report["findings"] += [f.as_dict() for f in findings]
    report["healthy"] = not report["findings"]
    return report


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
    """Stale RUNNING runs, missing, failed and held partitions of the last `days`, retry storms and
    quarantine spikes. Publishes a markdown artifact; ends Failed when anything needs attention.

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
