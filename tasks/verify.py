"""Verify: what the ledger says a partition's current output is, against what the warehouse, the lake
and the report folder hold. One finding per discrepancy, each with a reason code (VerifyReason).

Cheap (health, hourly): the ledger's rows, the lake's marker and records (record sha256 against the
ledger), every data file's presence and size, bronze and silver against the current snapshot's event
keys, quarantine counts, the evidence file. Deep (`--deep`): also the sha256 of every data file of
every retained snapshot, and silver's content against the event each row names.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import polars as pl
from sqlalchemy import Connection, Engine, and_, delete, func, insert, select
from sqlalchemy.exc import OperationalError

from schemas.datasets import DATASETS, DatasetSpec, get_dataset
from schemas.reason_codes import VERIFY_ACTION, VERIFY_REASON_DOCS, QuarantineReason, VerifyReason
from schemas.settings import load_settings
from schemas.tables import (
    bronze_table,
    check_result,
    decision_log,
    ingest_run,
    partition_state,
    quarantine,
    redelivery,
    silver_table,
    verify_finding,
)
from tasks import ledger
from tasks.checks import ENTITY_STAGE, inconsistent_entities
from tasks.database import get_engine, is_postgres, reading, writing_briefly
from tasks.errors import printable
from tasks.evidence import evidence_dir, validate_evidence
from tasks.lake import Lake, LakeError, check_files, conform_to_contract, open_lake, read_files, read_marker, read_record
from tasks.sql import drop_temp, quote
from tasks.staging import stage, stage_keys

log = logging.getLogger(__name__)

COMMITTED = ("succeeded", "held")
SHOWN = 5


@dataclass(frozen=True)
class Finding:
    dataset: str
    partition: str
    reason: str  # a VerifyReason
    current: bool  # about the current state (the partition is untrusted) or only an older snapshot
    location: str  # the table, file or lake object
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _named(keys: list[str]) -> str:
    shown = ", ".join(printable(k) for k in keys[:SHOWN])
    return shown + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


class _Findings(list[Finding]):
    def __init__(self, dataset: str, partition: str) -> None:
        super().__init__()
        self.dataset, self.partition = dataset, partition

    def add(self, reason: VerifyReason | str, location: str, detail: str, current: bool = True) -> None:
        self.append(Finding(self.dataset, self.partition, str(reason), current, printable(location), printable(detail)))


# --- the ledger ---------------------------------------------------------------------------------

def _ingest_counts(conn: Connection, dataset: str, partition: str, batch_id: str) -> dict[str, Any] | None:
    """The counts of the latest committed ingest (not restore) of the partition's current batch."""
    row = conn.execute(select(ingest_run.c.counts).where(and_(
        ingest_run.c.dataset == dataset, ingest_run.c.partition_key == partition, ingest_run.c.batch_id == batch_id,
        ingest_run.c.status.in_(COMMITTED), ingest_run.c.action != "restore")).order_by(ingest_run.c.started_at.desc())
    ).first()
    counts = json.loads(row.counts) if row and row.counts else None
    return counts if isinstance(counts, dict) and "invalid_by_reason" in counts else None


def _check_ledger(conn: Connection, found: _Findings, state: Any) -> None:
    run = conn.execute(select(ingest_run.c.status).where(ingest_run.c.run_id == state.run_id)).first()
    if run is None or run.status not in COMMITTED:
        found.add(VerifyReason.LEDGER_RUN_MISSING, "ingest_run", f"partition state names run {state.run_id}, which "
                  + ("the ledger does not have" if run is None else f"ended {run.status}"))
    checked = conn.execute(select(func.count()).select_from(check_result)
                           .where(check_result.c.run_id == state.run_id)).scalar_one()
    if not checked:
        found.add(VerifyReason.CHECKS_MISSING, "check_result", f"run {state.run_id} has no stored check results")


def _check_quarantine(conn: Connection, found: _Findings, spec: DatasetSpec, state: Any) -> None:
    counts = _ingest_counts(conn, spec.name, state.partition_key, state.batch_id)
    if counts is None:
        return  # a run of an older version kept no per-reason counts
    conflicting = QuarantineReason.CONFLICTING_DUPLICATE.value
    # the records the run itself rejected; conflicting copies are judged against bronze as it is now
    expected = sum(n for reason, n in counts["invalid_by_reason"].items() if reason != conflicting)
    held = conn.execute(select(func.count()).select_from(quarantine).where(and_(
        quarantine.c.dataset == spec.name, quarantine.c.partition_key == state.partition_key,
        quarantine.c.reason_code != conflicting))).scalar_one()
    bronze = bronze_table(spec)
    conflicts: int = conn.execute(
        select(func.count()).select_from(redelivery.join(bronze, bronze.c[spec.event_key] == redelivery.c.event_id))
        .where(redelivery.c.dataset == spec.name, redelivery.c.partition_key == state.partition_key,
               redelivery.c.content_hash != bronze.c._content_hash)).scalar_one()
    held_conflicts = conn.execute(select(func.count()).select_from(quarantine).where(and_(
        quarantine.c.dataset == spec.name, quarantine.c.partition_key == state.partition_key,
        quarantine.c.reason_code == conflicting))).scalar_one()
    for kind, now, due in (("rejected records", held, expected), ("conflicting copies", held_conflicts, conflicts)):
        if now < due:
            found.add(VerifyReason.QUARANTINE_ROWS_MISSING, "quarantine", f"{now} {kind} where {due} are due")
        elif now > due:
            found.add(VerifyReason.QUARANTINE_ROWS_UNEXPECTED, "quarantine", f"{now} {kind} where {due} are due")


def _check_evidence(found: _Findings, report_dir: Path, spec: DatasetSpec, state: Any) -> None:
    path = evidence_dir(report_dir, spec.name, state.partition_key) / f"{state.run_id}.json"
    if not path.is_file():
        found.add(VerifyReason.EVIDENCE_MISSING, str(path), f"run {state.run_id} left no evidence file")
        return
    try:
        evidence = json.loads(path.read_text())
        validate_evidence(evidence)
    except (ValueError, UnicodeDecodeError, jsonschema.ValidationError) as exc:
        found.add(VerifyReason.EVIDENCE_INVALID, str(path), f"does not parse or breaks its schema: "
                  f"{str(exc).splitlines()[0][:200]}")
        return
    if evidence["ids"]["run_id"] != state.run_id or evidence["partition"]["key"] != state.partition_key:
        found.add(VerifyReason.EVIDENCE_INVALID, str(path), "names another run or partition")


# --- the lake -----------------------------------------------------------------------------------

def _lake_finding(found: _Findings, exc: LakeError, current: bool, what: str = "") -> None:
    found.add(exc.reason, exc.where, (what + ": " if what else "") + str(exc).removeprefix(f"{exc.where}: ")
              .removesuffix(f" [{exc.reason}]"), current)


def _check_lake(conn: Connection, found: _Findings, lake: Lake, spec: DatasetSpec, day: date,
                deep: bool) -> dict[str, Any] | None:
    """The lake's view of the partition; returns the current record when its files can be read."""
    partition = day.isoformat()
    records = {r.snapshot_id: r for r in ledger.snapshot_records(conn, spec.name, partition)}
    current = ledger.current_snapshot(conn, spec.name, partition)
    if current is None:
        found.add(VerifyReason.LEDGER_SNAPSHOT_MISSING, "lake_current", "the ledger records no current snapshot")
        return None
    usable: dict[str, Any] | None = None
    for snapshot_id, row in records.items():
        is_current = snapshot_id == current
        what = "" if is_current else f"retained snapshot {snapshot_id}"
        try:
            record = read_record(lake, spec.name, day, snapshot_id, row.record_sha256)
            if is_current or deep:
                check_files(lake, spec.name, day, record, deep)
            if is_current:
                usable = record
        except LakeError as exc:
            _lake_finding(found, exc, is_current, what)
    try:
        marker = read_marker(lake, spec.name, day)
    except LakeError as exc:
        _lake_finding(found, exc, True)
        return usable
    where = lake.where(spec.name, day, "manifest.json")
    if marker is None:
        found.add(VerifyReason.LAKE_MARKER_MISSING, where, f"missing; the ledger's current snapshot is {current}")
    elif marker.get("snapshot_id") != current:
        found.add(VerifyReason.LAKE_MARKER_STALE, where, f"names {printable(marker.get('snapshot_id'))}; the ledger's "
                  f"current snapshot is {current}")
    elif usable is not None and marker != usable:
        found.add(VerifyReason.LAKE_MARKER_INVALID, where, "differs from the current snapshot's record")
    else:
        try:
            success = lake.storage.read(f"{lake.prefix(spec.name, day)}/_SUCCESS")
        except Exception:  # a missing _SUCCESS, whatever the store calls it
            success = b""
        if success != current.encode():
            found.add(VerifyReason.LAKE_MARKER_STALE, lake.where(spec.name, day, "_SUCCESS"),
                      f"does not name the current snapshot {current}")
    return usable


# --- the warehouse against the current snapshot -----------------------------------------------------

def _check_warehouse(conn: Connection, found: _Findings, lake: Lake, spec: DatasetSpec, day: date,
                     record: dict[str, Any], deep: bool) -> None:
    """Every event of the current snapshot is in bronze with its content; silver is each touched
    entity's greatest bronze event (and, deep, holds that event's fields)."""
    key, entity = spec.event_key, spec.entity_key
    try:
        events = conform_to_contract(spec, read_files(lake, spec.name, day, record))
    except LakeError as exc:  # a file the cheap size check let through (same size, other bytes)
        _lake_finding(found, exc, True)
        return
    if events.height == 0:
        return
    bronze = bronze_table(spec)
    staged = stage(conn, "_stg_verify", bronze, events.select(pl.col(key), pl.col("_content_hash")).unique(subset=[key]))
    if is_postgres(conn.engine):
        conn.exec_driver_sql(f"ANALYZE {quote(conn, staged.name)}")
    missing: list[str] = list(conn.execute(
        select(staged.c[key]).select_from(staged.outerjoin(bronze, bronze.c[key] == staged.c[key]))
        .where(bronze.c[key].is_(None)).order_by(staged.c[key])).scalars().all())
    # an event another partition delivered earlier took over later (processed out of order): bronze
    # holds that delivery now and this snapshot's version is a copy; only this partition's rows must match
    changed: list[str] = list(conn.execute(
        select(staged.c[key]).select_from(staged.join(bronze, bronze.c[key] == staged.c[key]))
        .where(bronze.c._content_hash != staged.c._content_hash, bronze.c._partition_key == day.isoformat())
        .order_by(staged.c[key])).scalars().all())
    drop_temp(conn, staged.name)
    total = events[key].n_unique()
    if missing:
        found.add(VerifyReason.WAREHOUSE_ROWS_MISSING, spec.bronze_table,
                  f"{len(missing)} of the snapshot's {total} events are not in bronze: {_named(missing)}")
    if changed:
        found.add(VerifyReason.WAREHOUSE_ROWS_CHANGED, spec.bronze_table,
                  f"{len(changed)} bronze rows differ from the snapshot's events: {_named(changed)}")
    entities = events[entity].unique().sort().to_list()
    touched = stage_keys(conn, ENTITY_STAGE, entities)
    if is_postgres(conn.engine):
        conn.exec_driver_sql(f"ANALYZE {quote(conn, ENTITY_STAGE)}")
    inconsistent = inconsistent_entities(conn, spec, touched)
    drop_temp(conn, ENTITY_STAGE)
    if inconsistent:
        found.add(VerifyReason.SILVER_INCONSISTENT, spec.silver_table,
                  f"{len(inconsistent)} of {len(entities)} entities: {_named(inconsistent)}")
    if deep:
        _check_silver_content(conn, found, spec, events)


def _canonical(spec: DatasetSpec, name: str, value: Any) -> Any:
    """A field's value in one form whichever store it came from (schemas/kinds.py)."""
    return spec.field(name).rules.python_value(value)


def _check_silver_content(conn: Connection, found: _Findings, spec: DatasetSpec, events: pl.DataFrame) -> None:
    """Silver rows whose last event is in this snapshot hold exactly that event's fields."""
    fields = [f.name for f in spec.fields]
    table = silver_table(spec)
    by_event = {e[spec.event_key]: e for e in events.select(fields).to_dicts()}
    ids = list(by_event)
    differs = set()
    for offset in range(0, len(ids), 500):
        columns = [table.c[spec.silver_name(f)].label(f) for f in fields]
        for row in conn.execute(select(*columns).where(table.c[spec.silver_name(spec.event_key)]
                                                       .in_(ids[offset:offset + 500]))):
            event = by_event[row._mapping[spec.event_key]]
            if any(_canonical(spec, f, row._mapping[f]) != _canonical(spec, f, event[f]) for f in fields):
                differs.add(row._mapping[spec.entity_key])
    if differs:
        names = sorted(differs)
        found.add(VerifyReason.SILVER_ROWS_CHANGED, spec.silver_table,
                  f"{len(names)} rows differ from the event they name: {_named(names)}")


# --- one partition, a window --------------------------------------------------------------------

def verify_partition(engine: Engine, lake: Lake, spec: DatasetSpec, day: date, report_dir: Path,
                     deep: bool = False) -> list[Finding]:
    """Every discrepancy between the ledger's current output of a partition and the stores."""
    partition = day.isoformat()
    found = _Findings(spec.name, partition)
    with reading(engine) as conn:
        state = conn.execute(select(partition_state).where(and_(
            partition_state.c.dataset == spec.name, partition_state.c.partition_key == partition))).first()
        if state is None or state.status not in COMMITTED:
            return []  # nothing committed: health reports missing and failed partitions
        _check_ledger(conn, found, state)
        _check_quarantine(conn, found, spec, state)
        record = _check_lake(conn, found, lake, spec, day, deep)
    _check_evidence(found, report_dir, spec, state)
    if record is not None:
        with reading(engine) as conn:  # temp tables only, rolled back: SQLite's write lock is never taken
            transaction = conn.begin()
            try:
                _check_warehouse(conn, found, lake, spec, day, record, deep)
            finally:
                transaction.rollback()
    return list(found)


def committed_days(engine: Engine, dataset: str, start: date | None, end: date | None) -> list[date]:
    with reading(engine) as conn:
        query = select(partition_state.c.partition_key).where(and_(
            partition_state.c.dataset == dataset, partition_state.c.status.in_(COMMITTED)))
        if start is not None:
            query = query.where(partition_state.c.partition_key >= start.isoformat())
        if end is not None:
            query = query.where(partition_state.c.partition_key <= end.isoformat())
        days: list[str] = sorted(conn.execute(query).scalars())
        return [date.fromisoformat(p) for p in days]


def record_verdict(engine: Engine, dataset: str, partition: str, findings: list[Finding]) -> None:
    """Store a partition's findings (replacing the last verify's); log a decision when the verdict changes.
    An unchanged verdict writes nothing, so verifying (and health) never waits behind a writer for it."""
    now = datetime.now(timezone.utc)
    wanted = sorted((f.reason, int(f.current), f.location, f.detail) for f in findings)
    with reading(engine) as conn:
        stored = sorted(tuple(r) for r in conn.execute(select(
            verify_finding.c.reason_code, verify_finding.c.current, verify_finding.c.location,
            verify_finding.c.detail).where(and_(verify_finding.c.dataset == dataset,
                                                verify_finding.c.partition_key == partition))))
    if stored == wanted:
        return
    try:
        _write_verdict(engine, dataset, partition, findings, now)
    except OperationalError as exc:  # a run holds the warehouse: the next verify records the verdict
        log.warning("%s/%s: verdict not recorded (the warehouse is busy): %s", dataset, partition,
                    str(exc).splitlines()[0])


def _write_verdict(engine: Engine, dataset: str, partition: str, findings: list[Finding], now: datetime) -> None:
    with writing_briefly(engine) as conn:
        before = conn.execute(select(func.count()).select_from(verify_finding).where(and_(
            verify_finding.c.dataset == dataset, verify_finding.c.partition_key == partition,
            verify_finding.c.current == 1))).scalar_one()
        conn.execute(delete(verify_finding).where(and_(verify_finding.c.dataset == dataset,
                                                       verify_finding.c.partition_key == partition)))
        if findings:
            conn.execute(insert(verify_finding), [dict(
                dataset=dataset, partition_key=partition, reason_code=f.reason, current=int(f.current),
                location=f.location, detail=f.detail, found_at=now) for f in findings])
        untrusted = any(f.current for f in findings)
        if untrusted or before:
            reasons = sorted({f.reason for f in findings if f.current})
            conn.execute(insert(decision_log).values(
                decided_at=now, action=VERIFY_ACTION, reason_code="untrusted_state", operator="datafactory",
                dataset=dataset, partition_key=partition, outcome="untrusted" if untrusted else "trusted",
                detail=("found " + ", ".join(reasons)) if untrusted else "nothing found: trusted again"))


def untrusted_partitions(conn: Connection, dataset: str) -> dict[str, list[str]]:
    """partition -> reasons of its open findings about the current state."""
    found: dict[str, list[str]] = {}
    for row in conn.execute(select(verify_finding.c.partition_key, verify_finding.c.reason_code).where(and_(
            verify_finding.c.dataset == dataset, verify_finding.c.current == 1))):
        found.setdefault(row.partition_key, []).append(row.reason_code)
    return found


def verify(engine: Engine, lake: Lake, spec: DatasetSpec, report_dir: Path, start: date | None = None,
           end: date | None = None, deep: bool = False, record: bool = True) -> list[Finding]:
    """Verify every committed partition of [start, end]; store each verdict (untrusted or trusted)."""
    findings: list[Finding] = []
    for day in committed_days(engine, spec.name, start, end):
        found = verify_partition(engine, lake, spec, day, report_dir, deep)
        if record:
            record_verdict(engine, spec.name, day.isoformat(), found)
        findings += found
    return findings


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
