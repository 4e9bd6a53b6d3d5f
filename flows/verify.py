"""verify_flow: compare what the ledger says every partition's current output is with the warehouse,
the lake and the evidence; store each partition's verdict (untrusted partitions are held back from
downstream) and end Failed when anything was found."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed, State

from schemas.datasets import DATASETS, get_dataset
from schemas.reason_codes import VERIFY_REASON_DOCS, VerifyReason
from schemas.settings import load_settings
from tasks.database import get_engine
from tasks.lake import open_lake
from tasks.verify import verify


def verify_report(dataset: str | None = None, start: date | None = None, end: date | None = None,
                  deep: bool = False) -> dict[str, Any]:
    """Findings of every registered dataset (or one), with what to do about each reason found."""
    settings = load_settings()
    engine, lake = get_engine(settings.database_url), open_lake(settings)
    findings = []
    for name in [dataset] if dataset else sorted(DATASETS):
        findings += [f.as_dict() for f in verify(engine, lake, get_dataset(name), Path(settings.report_dir),
                                                  start, end, deep)]
    reasons = sorted({f["reason"] for f in findings})
    return {"deep": deep, "start": start.isoformat() if start else None, "end": end.isoformat() if end else None,
            "findings": findings, "untrusted": sorted({(f["dataset"], f["partition"]) for f in findings if f["current"]}),
            "what_to_do": {r: VERIFY_REASON_DOCS[VerifyReason(r)][1] for r in reasons}}


def verify_markdown(report: dict[str, Any]) -> str:
    window = f"{report['start'] or 'first'} to {report['end'] or 'last'}"
    if not report["findings"]:
        return f"# Data Factory verify ({'deep' if report['deep'] else 'cheap'}, {window}): nothing found\n"
    lines = [f"# Data Factory verify ({'deep' if report['deep'] else 'cheap'}, {window}): "
             f"{len(report['findings'])} finding(s), {len(report['untrusted'])} partition(s) untrusted", "",
             "| reason | dataset | partition | current | where | detail |", "|---|---|---|---|---|---|"]
    lines += [f"| {f['reason']} | {f['dataset']} | {f['partition']} | {'yes' if f['current'] else 'older snapshot'} "
              f"| `{f['location']}` | {f['detail'].replace('|', '/')} |" for f in report["findings"]]
    lines += ["", "What to do:", *[f"- `{r}`: {todo}" for r, todo in report["what_to_do"].items()]]
    return "\n".join(lines) + "\n"


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
