"""health_flow: what needs an operator's attention across every registered dataset; Failed when anything does."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed, State

from tasks.health import health_markdown, health_report


@flow(name="health-flow")
def health_flow(days: int = 7, stale_minutes: int = 30, max_attempts: int = 3,
                quarantine_spike: float = 0.25, stagnant_hours: float = 6.0,
                silent_hours: float = 48.0) -> dict[str, Any] | State:
    """Stale RUNNING runs, missing, failed and held partitions of the last `days`, retry storms,
    quarantine spikes, and the cheap half of verify over those partitions (ledger against warehouse,
    lake and evidence: a partition with a finding becomes untrusted). Publishes a markdown artifact;
    ends Failed when anything needs attention.

    Args:
        days: partitions looked at: the last `days` up to the newest known partition
        stale_minutes: a RUNNING run whose heartbeat is older than this is stale
        max_attempts: more attempts than this on one batch is a retry storm
        quarantine_spike: a current run quarantining a larger share of its records is a spike
        stagnant_hours: a pulled source's cursor unmoved this long while the source shows newer data
        silent_hours: a pulled source's cursor unmoved this long at all
    """
    report = health_report(days, stale_minutes, max_attempts, quarantine_spike, stagnant_hours, silent_hours)
    create_markdown_artifact(key="data-factory-health", markdown=health_markdown(report),
                             description="what needs an operator's attention")
    if not report["healthy"]:
        get_run_logger().warning("%d finding(s) need attention", len(report["findings"]))
        return Failed(message=f"{len(report['findings'])} finding(s) need attention", data=report)
    return report
