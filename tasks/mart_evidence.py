"""Evidence of mart partition runs: one JSON per run, and the table a marts run publishes as an artifact."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from schemas.mart_models import MartModel
from schemas.summary import CheckOutcome
from tasks.atomic import write_atomic
from tasks.mart_plan import PartitionPlan


@dataclass
class MartOutcome:
    """What a marts run did to one mart partition."""

    plan: PartitionPlan
    status: str  # succeeded, held, failed, fresh (nothing to do)
    run_id: str | None = None
    snapshot_id: str | None = None
    rows: int | None = None
    checks: list[CheckOutcome] = field(default_factory=list)
    error: str | None = None
    evidence: Path | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.plan.as_dict(), "status": self.status, "run_id": self.run_id, "snapshot_id": self.snapshot_id,
                "rows": self.rows, "checks": [c.model_dump() for c in self.checks], "error": self.error,
                "evidence": str(self.evidence) if self.evidence else None}


def mart_evidence(model: MartModel, outcome: MartOutcome, flow_run_id: str | None, lake_note: str | None) -> dict[str, Any]:
    plan = outcome.plan
    return {
        "kind": "mart_partition_run", "mart": model.name, "partition_key": plan.partition, "grain": model.grain,
        "run_id": outcome.run_id, "flow_run_id": flow_run_id, "status": outcome.status,
        "why": {"freshness": plan.freshness.value, "detail": plan.why},
        "model": {"path": str(model.path), "fingerprint": model.fingerprint, "policy": model.policy.value},
        "inputs": [{"upstream": i.upstream, "partition_key": i.partition, "snapshot_id": i.snapshot_id,
                    "last_good": i.fallback} for i in plan.inputs],
        "held_by": plan.held_by,
        "output": {"snapshot_id": outcome.snapshot_id, "rows": outcome.rows, "gold_table": model.name,
                   "lake": f"{model.name}/dt={plan.partition}/manifest.json" if outcome.snapshot_id else None},
        "checks": [c.model_dump() for c in outcome.checks],
        "downstream": {"decision": "unblock" if outcome.status == "succeeded" else "hold",
                       "reason": outcome.error or ("checks passed" if outcome.status == "succeeded"
                                                   else plan.why if plan.held_by else
                                                   "held by " + ", ".join(c.name for c in outcome.checks
                                                                          if c.status == "fail"))},
        "timings": {"duration_seconds": round(outcome.seconds, 3)},
        "lake_note": lake_note,
        "written_at": datetime.now(timezone.utc).isoformat(),
    }


def write_mart_evidence(report_dir: Path, evidence: dict[str, Any]) -> Path:
    path = (Path(report_dir) / "mart_evidence" / evidence["mart"] / evidence["partition_key"]
            / f"{evidence['run_id']}.json")
    write_atomic(path, json.dumps(evidence, indent=2, default=str))
    return path


def outcomes_markdown(outcomes: list[MartOutcome]) -> str:
    """The marts run as a table: what was recomputed and why, what is held and by what."""
    lines = ["# Marts run", "", "| mart | partition | was | why | now | rows | snapshot |", "|---|---|---|---|---|---|---|"]
    for o in outcomes:
        why = o.error or o.plan.why
        lines.append(f"| {o.plan.mart} | {o.plan.partition} | {o.plan.freshness.value} | {why.replace('|', '/')} | "
                     f"{o.status} | {o.rows if o.rows is not None else '-'} | {o.snapshot_id or '-'} |")
    if not outcomes:
        lines.append("| - | - | - | nothing in range | - | - | - |")
    return "\n".join(lines)
