"""Run evidence (DESIGN section 9): one JSON per partition run, valid against run_evidence.schema.json.

Evidence is what gets handed over: a file downstream teams read without our code. It is built from
the run's summary and what the flow measured around it, validated, then written atomically.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema

from schemas.datasets import DatasetSpec, describe_fields
from schemas.manifest import SourceManifest
from schemas.summary import PartitionSummary
from tasks.atomic import write_atomic
from tasks.read import FIELD_SAMPLE_RECORDS
from tasks.validate import partition_window

EVIDENCE_DIR = "run_evidence"


@dataclass
class RunContext:
    """What the flow knows about a run beyond its summary."""

    spec: DatasetSpec
    manifests: list[SourceManifest]
    started_at: datetime
    read_counts: dict[str, int] = field(default_factory=dict)  # "manifest_id:uri" -> records read
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    error: str | None = None
    trace_id: str | None = None
    release_id: str | None = None  # set for a skip: the release of the run that produced current state
    inputs: list[dict[str, Any]] | None = None  # what the run read when it was not source manifests (restore)
    lake_note: str | None = None  # the lake's marker could not follow the committed warehouse yet


@cache
def evidence_json_schema() -> dict[str, Any]:
    return json.loads(files("schemas").joinpath("json/run_evidence.schema.json").read_text())


def validate_evidence(evidence: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when evidence breaks the contract downstream relies on."""
    jsonschema.Draft202012Validator(evidence_json_schema(), format_checker=jsonschema.FormatChecker()).validate(evidence)


@cache
def git_sha() -> str | None:
    """The commit the factory code runs from, when it runs from a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if len(sha) == 40 else None


def release_id(summary: PartitionSummary) -> str:
    return f"{summary.dataset}/{summary.partition_key.isoformat()}/{summary.run_id}"


def _tables(summary: PartitionSummary, spec: DatasetSpec) -> list[dict[str, Any]]:
    return [
        {"table": spec.bronze_table, "layer": "bronze", "inserted": summary.bronze_inserted, "updated": 0,
         "unchanged": summary.bronze_existing, "removed": summary.bronze_displaced},
        {"table": spec.silver_table, "layer": "silver", "inserted": summary.silver_inserted,
         "updated": summary.silver_updated, "unchanged": summary.silver_unchanged + summary.silver_stale_skipped,
         "removed": 0},
        {"table": "quarantine", "layer": "quarantine", "inserted": summary.quarantine_inserted, "updated": 0,
         "unchanged": 0, "removed": 0},
    ]


def known_limitations(summary: PartitionSummary, lake_note: str | None = None) -> list[str]:
    """Plain statements of what this run's output does not cover; downstream reads them before consuming."""
    notes = []
    if summary.status == "dry_run":
        notes.append("dry run: nothing was committed; the counts and checks are what an execute run would do now")
    if summary.invalid:
        reasons = ", ".join(f"{k} {v}" for k, v in summary.invalid_by_reason.items())
        notes.append(f"{summary.invalid} record(s) are in quarantine, not in bronze or silver ({reasons})")
    if summary.late_arriving:
        notes.append(f"{summary.late_arriving} accepted event(s) are dated before the partition window "
                     "(late-arriving); silver keeps a newer state where one exists")
    if summary.bronze_existing:
        notes.append(f"{summary.bronze_existing} event(s) were already in bronze from another delivery; "
                     "their bronze rows keep that delivery's lineage")
    for check in summary.checks:
        if check.status == "warn":
            notes.append(f"check {check.name} warned: {check.detail}")
    if summary.checks:
        notes.append(f"schema drift is judged on the first {FIELD_SAMPLE_RECORDS} records of each asset")
    if lake_note:
        notes.append(lake_note)
    if summary.lake_snapshot is None and summary.status != "dry_run":
        notes.append("no lake snapshot: a replay re-consumes one delivery, the partition's snapshot stays")
    return notes


def build_evidence(summary: PartitionSummary, ctx: RunContext, finished_at: datetime) -> dict[str, Any]:
    window_start, window_end = partition_window(summary.partition_key)
    counted = summary.status not in ("skipped", "no_input", "failed")
    equations = summary.equations() if counted else []
    unexplained = [e for e in equations if not e.holds and e.explained_by is None]
    downstream = summary.downstream
    assert downstream is not None, "the flow decides downstream before evidence is written"
    release = ctx.release_id or (release_id(summary) if downstream.decision == "unblock" else None)
    return {
        "evidence_version": "1",
        "ids": {
            "evidence_id": str(uuid.uuid4()),
            "run_id": summary.run_id,
            "flow_run_id": summary.flow_run_id,
            "batch_id": summary.batch_id,
            "manifest_ids": summary.manifest_ids,
            "source_fingerprint": summary.source_fingerprint,
            "git_sha": git_sha(),
        },
        "dataset": summary.dataset,
        "partition": {"key": summary.partition_key.isoformat(), "window_start": window_start.isoformat(),
                      "window_end": window_end.isoformat()},
        "mode": summary.mode,
        "dry_run": summary.mode == "dry-run",
        "action": summary.action,
        "reason_code": summary.reason_code,
        "operator": summary.operator,
        "attempt": summary.attempt,
        "status": summary.status,
        "message": summary.message,
        "error": ctx.error,
        "timings": {
            "started_at": ctx.started_at.isoformat(),
            "finished_at": finished_at.isoformat(),
            "duration_seconds": round((finished_at - ctx.started_at).total_seconds(), 3),
            "stages": {k: round(v, 3) for k, v in ctx.stages.items()},
        },
        "counts": summary.counts(),
        "reconcile": {"reconciled": not unexplained, "unexplained": len(unexplained),
                      "equations": [e.model_dump() for e in equations]},
        "checks": [c.model_dump() for c in summary.checks],
        "inputs": ctx.inputs if ctx.inputs is not None else [
            {"manifest_id": m.manifest_id, "uri": a.uri, "format": a.format, "sha256": a.sha256,
             "record_count": a.record_count, "read_count": ctx.read_counts.get(f"{m.manifest_id}:{a.uri}")}
            for m in ctx.manifests for a in m.assets
        ],
        "outputs": {
            "committed": summary.status in ("succeeded", "held"),
            "tables": _tables(summary, ctx.spec) if counted else [],
            "lake_snapshot": summary.lake_snapshot,
        },
        "contract": {"model": ctx.spec.model.__name__, "fingerprint": ctx.spec.contract_fingerprint,
                     "fields": describe_fields(ctx.spec), "schema_changes": summary.schema_changes},
        "downstream": downstream.model_dump(),
        "handoff": {"release_id": release, "trace_id": ctx.trace_id, "eval_run_id": None},
        "known_limitations": known_limitations(summary, ctx.lake_note) if counted else [],
    }


def evidence_dir(report_dir: Path, dataset: str, partition: str) -> Path:
    return report_dir / EVIDENCE_DIR / dataset / partition


def write_evidence(report_dir: Path, evidence: dict[str, Any]) -> Path:
    """Validate, then write `{report_dir}/run_evidence/{dataset}/{partition}/{run}.json` atomically."""
    validate_evidence(evidence)
    folder = evidence_dir(report_dir, evidence["dataset"], evidence["partition"]["key"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{evidence['ids']['run_id']}.json"
    write_atomic(path, json.dumps(evidence, indent=2) + "\n")
    return path


def read_evidence(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def partition_evidence(report_dir: Path, dataset: str, partition: str) -> list[tuple[Path, dict[str, Any]]]:
    """Every evidence file of a partition, oldest first (by the run's start)."""
    found = [(p, read_evidence(p)) for p in evidence_dir(report_dir, dataset, partition).glob("*.json")]
    return sorted(found, key=lambda item: item[1]["timings"]["started_at"])


def latest_evidence(report_dir: Path, dataset: str, partition: str,
                    run_id: str | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The evidence of `run_id` when given (the run behind the partition's current state), else the newest."""
    if run_id is not None:
        path = evidence_dir(report_dir, dataset, partition) / f"{run_id}.json"
        if path.is_file():
            return path, read_evidence(path)
    found = partition_evidence(report_dir, dataset, partition)
    return found[-1] if found else None
