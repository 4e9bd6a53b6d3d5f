"""Evidence for people: a markdown summary and a counts-and-checks table, as Prefect artifacts and in the CLI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


MARK = {"pass": "pass", "warn": "WARN", "fail": "FAIL", "skipped": "skipped"}
COUNT_LABELS = [
    ("declared_records", "declared"), ("total", "read"), ("valid", "valid"), ("invalid", "invalid"),
    ("duplicate_in_batch", "duplicates in batch"), ("late_arriving", "late-arriving"),
    ("distinct_entities", "distinct entities"), ("bronze_inserted", "bronze inserted"),
    ("bronze_existing", "bronze existing"), ("bronze_displaced", "bronze displaced"),
    ("silver_inserted", "silver inserted"), ("silver_updated", "silver updated"),
    ("silver_unchanged", "silver unchanged"), ("silver_stale_skipped", "silver stale skipped"),
    ("quarantine_inserted", "quarantine inserted"),
]


def artifact_key(dataset: str, partition: str, kind: str) -> str:
    """Stable per (dataset, partition): each run adds a version under the same key."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{dataset}-{partition}-{kind}".lower())


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3f}"
    return str(int(value)) if isinstance(value, float) else str(value)


def _md_table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def evidence_markdown(evidence: dict[str, Any], path: Path | None = None) -> str:
    """The human summary of one run's evidence."""
    ids, part, down = evidence["ids"], evidence["partition"], evidence["downstream"]
    lines = [
        f"# {evidence['dataset']} {part['key']}: {evidence['status']}, downstream {down['decision'].upper()}",
        "",
        f"**Decision:** {down['decision']} ({down['reason']})",
        "",
        *_md_table(["", ""], [
            ["action", f"{evidence['action']} ({evidence['reason_code']}) by {evidence['operator']}, "
                       f"mode {evidence['mode']}, attempt {_number(evidence['attempt'])}"],
            ["window", f"{part['window_start']} to {part['window_end']}"],
            ["run", f"`{ids['run_id']}`; flow run `{ids['flow_run_id'] or '-'}`; batch `{ids['batch_id']}`"],
            ["manifests", ", ".join(ids["manifest_ids"]) or "-"],
            ["timings", f"{evidence['timings']['duration_seconds']} s; " + ", ".join(
                f"{k} {v} s" for k, v in evidence["timings"]["stages"].items())],
            ["release", evidence["handoff"]["release_id"] or "-"],
            ["evidence", f"`{path}`" if path else "-"],
        ]),
    ]
    if evidence["error"]:
        lines += ["", f"**Error:** {evidence['error']}"]
    if evidence["message"]:
        lines += ["", evidence["message"]]
    if evidence["reconcile"]["equations"]:
        counts = evidence["counts"]
        lines += ["", "## Counts", "", *_md_table([label for _, label in COUNT_LABELS],
                                                   [[counts[key] for key, _ in COUNT_LABELS]])]
        if counts["invalid_by_reason"]:
            lines += ["", "Invalid by reason: " + ", ".join(f"{k} {v}" for k, v in counts["invalid_by_reason"].items())]
        rec = evidence["reconcile"]
        lines += ["", f"## Reconcile: {'all equations hold' if rec['reconciled'] else str(rec['unexplained']) + ' unexplained'}", ""]
        for e in rec["equations"]:
            verdict = "holds" if e["holds"] else f"explained by {e['explained_by']}" if e["explained_by"] else "DOES NOT HOLD"
            lines.append(f"- {e['left']} = {e['right']}: {e['left_value']} = {e['right_value']} ({verdict})")
    if evidence["checks"]:
        lines += ["", "## Checks", "", *_md_table(
            ["check", "severity", "status", "observed", "warn above", "error above", "detail"],
            [[c["name"], c["severity"], MARK[c["status"]], _number(c["observed"]), _number(c["warn_above"]),
              _number(c["error_above"]), c["detail"]] for c in evidence["checks"]])]
    if evidence["known_limitations"]:
        lines += ["", "## Known limitations", "", *[f"- {note}" for note in evidence["known_limitations"]]]
    return "\n".join(lines) + "\n"


def evidence_table(evidence: dict[str, Any]) -> list[dict[str, Any]]:
    """Counts and checks as rows of one table artifact."""
    rows: list[dict[str, Any]] = [
        {"kind": "count", "name": key, "value": evidence["counts"][key], "status": "", "detail": ""}
        for key, _ in COUNT_LABELS
    ]
    rows += [{"kind": "check", "name": c["name"], "value": c["observed"], "status": c["status"], "detail": c["detail"]}
             for c in evidence["checks"]]
    rows.append({"kind": "decision", "name": "downstream", "value": None, "status": evidence["downstream"]["decision"],
                 "detail": evidence["downstream"]["reason"]})
    return rows


def publish_artifacts(evidence: dict[str, Any], path: Path) -> None:
    """The run's markdown summary and counts table, under keys stable per dataset and partition."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact  # here: the CLI's reads need no Prefect

    dataset, partition = evidence["dataset"], evidence["partition"]["key"]
    headline = f"{dataset} {partition}: {evidence['status']}, downstream {evidence['downstream']['decision']}"
    create_markdown_artifact(key=artifact_key(dataset, partition, "evidence"),
                             markdown=evidence_markdown(evidence, path), description=headline)
    create_table_artifact(key=artifact_key(dataset, partition, "counts"), table=evidence_table(evidence),
                          description=headline)
