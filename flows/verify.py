"""verify_flow: compare what the ledger says every partition's current output is with the warehouse,
the lake and the evidence; store each partition's verdict (untrusted partitions are held back from
downstream) and end Failed when anything was found."""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed, State

from tasks.verify import verify_markdown, verify_report


@flow(name="verify-flow")
def verify_flow(dataset: str | None = None, start: date | None = None, end: date | None = None,
                deep: bool = False) -> dict[str, Any] | State:
    """Verify every committed partition of [start, end]: ledger against warehouse, lake and evidence.
    A partition with a finding about its current state becomes untrusted (held back from downstream)
    until a run, a restore or a later verify clears it. Ends Failed when anything was found.

    Args:
        dataset: registered dataset name; empty = every dataset
        start: first partition, YYYY-MM-DD; empty = the first committed one
        end: last partition, YYYY-MM-DD; empty = the last committed one
        deep: also the sha256 of every data file and silver's content against its events
    """
    report = verify_report(dataset, start, end, deep)
    create_markdown_artifact(key="data-factory-verify", markdown=verify_markdown(report),
                             description="ledger, warehouse, lake and evidence compared")
    if report["findings"]:
        get_run_logger().warning("%d finding(s), %d partition(s) untrusted", len(report["findings"]),
                                 len(report["untrusted"]))
        return Failed(message=f"{len(report['findings'])} finding(s); untrusted: "
                      + ", ".join(f"{d}/{p}" for d, p in report["untrusted"]), data=report)
    return report
