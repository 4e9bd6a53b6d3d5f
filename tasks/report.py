"""Partition calendars and the delivery summary: the partition set at a glance, for terminals and files."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from schemas.datasets import DATASETS
from schemas.manifest import SourceManifest
from schemas.settings import FactorySettings
from schemas.summary import PartitionSummary
from tasks.atomic import write_atomic
from schemas.tables import mart_partition
from tasks.database import get_engine, reading
from tasks.evidence import RunContext, build_evidence, latest_evidence, write_evidence
from tasks.manifests import declared_manifests
from tasks.status import partition_status

STATUS_ORDER = ("succeeded", "held", "untrusted", "failed", "missing", "no_input")
GLYPH = {"succeeded": "S", "held": "H", "untrusted": "U", "failed": "F", "missing": "M", "no_input": "."}
COLOUR = {"succeeded": "32", "held": "33", "untrusted": "31;1", "failed": "31", "missing": "35",
          "no_input": "2"}  # ANSI SGR
LEGEND = {"succeeded": "succeeded", "held": "held (an error check failed)",
          "untrusted": "untrusted (verify found its state damaged)", "failed": "failed",
          "missing": "missing (inputs declared, never materialized)", "no_input": "no input declared"}
SUMMARY_FILE = "delivery_summary.md"


def _paint(text: str, status: str, colour: bool) -> str:
    return f"\033[{COLOUR[status]}m{text}\033[0m" if colour else text


def calendar_strip(rows: list[dict[str, Any]], colour: bool = False) -> list[str]:
    """One line per month, one character per day, under a day-of-month ruler; then the legend and counts."""
    if not rows:
        return ["(no partitions)"]
    by_day = {date.fromisoformat(r["partition"]): r["status"] for r in rows}
    months = sorted({(d.year, d.month) for d in by_day})
    lines = ["         " + "".join(str(n % 10) for n in range(1, 32))]
    for year, month in months:
        cells = []
        for day in range(1, 32):
            try:
                status = by_day.get(date(year, month, day))
            except ValueError:
                status = None  # the month is shorter
            cells.append(" " if status is None else _paint(GLYPH[status], status, colour))
        lines.append(f"{year:04d}-{month:02d}  " + "".join(cells).rstrip())
    counts = Counter(by_day.values())
    lines.append("")
    lines.append("  ".join(f"{_paint(GLYPH[s], s, colour)} {LEGEND[s]} {counts.get(s, 0)}" for s in STATUS_ORDER))
    return lines


def status_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(r["status"] for r in rows)
    return {s: counts.get(s, 0) for s in STATUS_ORDER}


def _held_line(row: dict[str, Any], evidence: dict[str, Any] | None, path: Path | None) -> str:
    if evidence is None:
        return f"- {row['partition']}: held; no evidence on file"
    checks = [c for c in evidence["checks"] if c["status"] == "fail"]
    why = "; ".join(f"{c['name']} ({c['detail']})" for c in checks) or evidence["downstream"]["reason"]
    return f"- **{row['partition']}**: held by {why}. Evidence: `{path}`"


def dataset_section(engine: Engine, report_dir: Path, dataset: str, declared: set[date]) -> list[str]:
    rows = partition_status(engine, dataset, declared)
    counts = status_counts(rows)
    lines = [f"## {dataset}", ""]
    if not rows:
        return lines + ["No partitions declared or materialized yet.", ""]
    lines += [f"Partitions {rows[0]['partition']} to {rows[-1]['partition']}: "
              + ", ".join(f"{LEGEND[s].split(' (')[0]} {n}" for s, n in counts.items()) + ".", ""]
    lines += ["```", *calendar_strip(rows), "```", ""]
    table, held, untrusted = [], [], []
    totals: Counter[str] = Counter()
    for row in rows:
        found = latest_evidence(report_dir, dataset, row["partition"], row["run_id"]) if row["status"] != "no_input" else None
        path, evidence = found if found else (None, None)
        if row["status"] == "held":
            held.append(_held_line(row, evidence, path))
        if row["status"] == "untrusted":
            untrusted.append(f"- **{row['partition']}**: untrusted: verify found {', '.join(row['findings'])} "
                             "(`datafactory verify` for the details; runbook section 7)")
        if row["status"] == "no_input":
            continue
        counts_of = evidence["counts"] if evidence and evidence["status"] in ("succeeded", "held") else None
        if counts_of and row["status"] in ("succeeded", "held", "untrusted"):
            totals.update({k: counts_of[k] for k in ("total", "valid", "invalid")})
            totals["in_bronze"] += counts_of["bronze_inserted"] + counts_of["bronze_existing"]
        # an untrusted partition is held back from downstream whatever its evidence said then
        decision = evidence["downstream"]["decision"] if evidence and row["status"] != "untrusted" else "hold"
        warnings = ", ".join(c["name"] for c in evidence["checks"] if c["status"] == "warn") if evidence else ""
        table.append([row["partition"], row["status"], decision,
                      counts_of["total"] if counts_of else "-", counts_of["valid"] if counts_of else "-",
                      counts_of["invalid"] if counts_of else "-", warnings or "-",
                      f"`{path}`" if path else "none"])
    lines += [f"Current outputs: {totals['total']} records read, {totals['valid']} valid, "
              f"{totals['invalid']} quarantined, {totals['in_bronze']} distinct events in bronze.", ""]
    lines += ["### Held partitions", "", *(held or ["None."]), ""]
    if untrusted:
        lines += ["### Untrusted partitions", "", *untrusted, ""]
    lines += ["### Partitions", "",
              "| partition | status | downstream | read | valid | invalid | warnings | latest evidence |",
              "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in table]
    return lines + [""]


def marts_section(engine: Engine, report_dir: Path) -> list[str]:
    """Each mart's partitions as the ledger has them; held and failed ones with why and their evidence."""
    with reading(engine) as conn:
        rows = conn.execute(select(mart_partition).order_by(mart_partition.c.mart, mart_partition.c.partition_key)).all()
    if not rows:
        return []
    lines = ["## Marts", "", "| mart | partitions | succeeded | held | failed | rows (latest) |", "|---|---|---|---|---|---|"]
    by_mart: dict[str, list[Any]] = {}
    for row in rows:
        by_mart.setdefault(row.mart, []).append(row)
    attention = []
    for mart, partitions in by_mart.items():
        counts = Counter(r.status for r in partitions)
        lines.append(f"| {mart} | {partitions[0].partition_key} to {partitions[-1].partition_key} | "
                     f"{counts['succeeded']} | {counts['held']} | {counts['failed']} | {partitions[-1].rows} |")
        for row in partitions:
            if row.status != "succeeded":
                evidence = report_dir / "mart_evidence" / mart / row.partition_key / f"{row.run_id}.json"
                attention.append(f"- **{mart}/{row.partition_key}**: {row.status}: {row.detail}"
                                 + (f". Evidence: `{evidence}`" if evidence.exists() else ""))
    return lines + ["", "### Held or failed mart partitions", "", *(attention or ["None."]), ""]


def delivery_summary(engine: Engine, report_dir: Path, manifests: list[SourceManifest]) -> str:
    warehouse = make_url(str(engine.url)).render_as_string(hide_password=True)
    lines = ["# Delivery summary", "",
             f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from the warehouse "
             f"`{warehouse}` and the evidence under `{report_dir}`. Downstream consumes a partition only when its "
             "decision is `unblock`.", ""]
    for dataset in sorted(DATASETS):
        declared = {m.partition_key for m in manifests if m.dataset == dataset}
        lines += dataset_section(engine, report_dir, dataset, declared)
    lines += marts_section(engine, report_dir)
    return "\n".join(lines)


def write_delivery_summary(engine: Engine, report_dir: Path, manifests: list[SourceManifest]) -> Path:
    """Regenerate `{report_dir}/delivery_summary.md` atomically (partition runs may finish at once)."""
    path = report_dir / SUMMARY_FILE
    write_atomic(path, delivery_summary(engine, report_dir, manifests))
    return path


def leave_evidence(settings: FactorySettings, summary: PartitionSummary, ctx: RunContext,
                   refresh_summary: bool = True) -> tuple[Path, dict[str, Any]]:
    """A run's evidence JSON (validated), then the regenerated delivery summary, unless the caller
    (a backfill) regenerates it once when all its partitions are done."""
    evidence = build_evidence(summary, ctx, datetime.now(timezone.utc))
    path = write_evidence(Path(settings.report_dir), evidence)
    if refresh_summary:
        refresh_delivery_summary(settings)
    return path, evidence


def refresh_delivery_summary(settings: FactorySettings) -> Path:
    """The delivery summary regenerated from the warehouse, the evidence and every declared manifest."""
    return write_delivery_summary(get_engine(settings.database_url), Path(settings.report_dir),
                                  declared_manifests(Path(settings.manifest_dir), Path(settings.landing_dir)))
