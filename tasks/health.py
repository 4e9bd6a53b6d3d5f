"""Health: what needs an operator's attention now, from the ledger, the checks and the declared inputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, cast

from pathlib import Path

from sqlalchemy import Engine, and_, func, select

from schemas.datasets import DATASETS, DatasetSpec, get_dataset
from schemas.settings import load_settings

from schemas.tables import check_result, ingest_run, mart_partition, partition_state
from tasks import ledger
from tasks.database import get_engine, reading
from tasks.errors import PartitionLockedError, StorageError, TransientError
from tasks.lake import Lake, open_lake
from tasks.locks import partition_lock
from tasks.manifests import declared_manifests
from tasks.verify import verify


@dataclass(frozen=True)
class HealthThresholds:
    days: int = 7  # partitions looked at: the last `days` up to the newest one known
    stale_minutes: int = 30  # a RUNNING run whose heartbeat is older is dead (closed) or hung (reported)
    max_attempts: int = 3  # more attempts than this on one batch is a retry storm
    quarantine_spike: float = 0.25  # a current run quarantining a larger share of its records
    # pulled sources: a cursor that has not moved for this long while the source shows newer data ...
    stagnant_hours: float = 6.0
    # ... or at all (a source that is simply quiet for a day is worth a look)
    silent_hours: float = 48.0
    page_retries: int = 20  # more page retries than this over the last day of pulls is a retry storm


@dataclass(frozen=True)
class Finding:
    # stale_run, abandoned_run, missing_partition, failed_partition, held_partition, retry_storm, quarantine_spike,
    # cursor_stagnation, page_retry_storm, failed_pull, held_mart, failed_mart, stale_mart, missing_mart
    kind: str
    dataset: str
    partition: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def health_window(declared: set[date], materialized: set[date], days: int, today: date) -> tuple[date, date] | None:
    """The last `days` partitions up to the newest one known (declared or materialized), never past today."""
    known = {d for d in declared | materialized if d <= today}
    if not known:
        return None
    end = max(known)
    return end - timedelta(days=max(1, days) - 1), end


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def silent_runs(engine: Engine, dataset: str, limits: HealthThresholds, now: datetime) -> list[Finding]:
    """RUNNING attempts with no heartbeat for the stale period. One whose partition lock nobody holds
    is dead (its process was killed): it is closed as abandoned. One whose lock is held is hung."""
    stale_before = now - timedelta(minutes=limits.stale_minutes)
    with reading(engine) as conn:
        silent = [r for r in conn.execute(select(ingest_run).where(and_(
            ingest_run.c.dataset == dataset, ingest_run.c.status == "running"))) if _aware(r.heartbeat_at) < stale_before]
    findings = []
    for partition in sorted({r.partition_key for r in silent}):
        runs = [r for r in silent if r.partition_key == partition]
        beat = ", ".join(f"run {r.run_id} (flow run {r.flow_run_id or '-'}), last heartbeat "
                         f"{_aware(r.heartbeat_at).isoformat(timespec='seconds')}" for r in runs)
        try:
            with partition_lock(engine, dataset, partition, lambda: "a live run", wait=False):
                with engine.begin() as conn:
                    closed = ledger.abandon_dead_runs(conn, dataset, partition, "health")
            if closed:
                findings.append(Finding("abandoned_run", dataset, partition,
                                        f"{beat}: its process died; closed as abandoned (rerun the partition)"))
        except PartitionLockedError:
            findings.append(Finding("stale_run", dataset, partition, f"{beat}: still holds the partition lock "
                                    "(hung worker?)"))
    return findings


def pull_problems(engine: Engine, spec: DatasetSpec, limits: HealthThresholds, now: datetime) -> list[Finding]:
    """A pulled source's cursor that does not move (while the source shows newer data, or at all), page
    retry storms, and a last pull that failed."""
    from tasks import cursor, pull_ledger

    source = spec.source
    if source is None:
        return []
    findings = []
    where = f"source {source.name}"
    with reading(engine) as conn:
        current = cursor.current(conn, spec.name, source.name)
        # since when the cursor stands: its last move, or (never set) the first pull's start
        moved = cursor.last_moved(conn, spec.name, source.name) or pull_ledger.first_pull_at(conn, spec.name,
                                                                                              source.name)
        runs = pull_ledger.recent_runs(conn, spec.name, source.name, now - timedelta(hours=max(limits.silent_hours, 24)))
        retries = pull_ledger.retries_since(conn, spec.name, source.name, now - timedelta(hours=24))
    seen = [moment for r in runs if (moment := pull_ledger.as_utc(r.newest_seen)) is not None]
    newest_seen = max(seen, default=None)
    still = None if moved is None else now - moved
    shown = "cursor " + (str(current) if current is not None else "(never set)")
    # behind what the source showed, clipped to the stagnation horizon: a future-dated row, or one still
    # inside the settle margin, is no sign of a stuck cursor
    behind = newest_seen is not None and (current is None or current.value < min(
        newest_seen, now - timedelta(hours=limits.stagnant_hours)))
    if still is not None and behind and still > timedelta(hours=limits.stagnant_hours):
        findings.append(Finding("cursor_stagnation", spec.name, where,
                                f"{shown} has not moved for {still.total_seconds() / 3600:.1f} h while the "
                                f"source shows {newest_seen} (see the runbook: a stuck cursor)"))
    elif still is not None and still > timedelta(hours=limits.silent_hours):
        findings.append(Finding("cursor_stagnation", spec.name, where,
                                f"{shown} has not moved for {still.total_seconds() / 3600:.1f} h "
                                f"(more than {limits.silent_hours:g} h)"))
    if retries > limits.page_retries:
        findings.append(Finding("page_retry_storm", spec.name, where,
                                f"{retries} page retries (throttling, server errors) over the last 24 h"))
    last = runs[-1] if runs else None
    if last is not None and last.status in ("FAILED", "RUNNING", "LANDED") and not _pull_is_live(engine, spec, source.name):
        why = last.error or ("its process died" if last.status == "RUNNING" else "its partitions were not all ingested")
        findings.append(Finding("failed_pull", spec.name, where, f"pull {last.run_id} is {last.status}: {why} (the "
                                "next pull resumes it; one that cannot finish: `datafactory pull --restart`)"))
    return findings


def _pull_is_live(engine: Engine, spec: DatasetSpec, source: str) -> bool:
    """A pull holds its source's lock while it runs; a free lock means the pull in the ledger is over."""
    try:
        with partition_lock(engine, spec.name, f"pull:{source}", lambda: "a pull", wait=False):
            return False
    except PartitionLockedError:
        return True


def find_problems(engine: Engine, dataset: str, declared: set[date], limits: HealthThresholds,
                  now: datetime | None = None) -> tuple[tuple[date, date] | None, list[Finding]]:
    now = now or datetime.now(timezone.utc)
    findings: list[Finding] = silent_runs(engine, dataset, limits, now) + pull_problems(engine, get_dataset(dataset),
                                                                                         limits, now)
    with reading(engine) as conn:
        states = {date.fromisoformat(r.partition_key): r for r in conn.execute(
            select(partition_state).where(partition_state.c.dataset == dataset))}
        window = health_window(declared, set(states), limits.days, now.date())
        if window is None:
            return None, findings
        first, last = (d.isoformat() for d in window)
        for batch_id, partition, attempts in conn.execute(
                select(ingest_run.c.batch_id, ingest_run.c.partition_key, func.max(ingest_run.c.attempt))
                .where(and_(ingest_run.c.dataset == dataset, ingest_run.c.partition_key.between(first, last)))
                .group_by(ingest_run.c.batch_id, ingest_run.c.partition_key)):
            if cast(int, attempts) > limits.max_attempts:
                findings.append(Finding("retry_storm", dataset, str(partition),
                                        f"batch {batch_id}: {attempts} attempts (more than {limits.max_attempts})"))
        ratios = {r.partition_key: r.observed for r in conn.execute(
            select(check_result.c.partition_key, check_result.c.observed)
            .join(partition_state, and_(partition_state.c.run_id == check_result.c.run_id,
                                        partition_state.c.dataset == check_result.c.dataset))
            .where(and_(check_result.c.dataset == dataset, check_result.c.check_name == "quarantine_ratio",
                        check_result.c.partition_key.between(first, last))))}
    for n in range((window[1] - window[0]).days + 1):
        day = window[0] + timedelta(days=n)
        key, state = day.isoformat(), states.get(day)
        if state is None and day in declared:
            findings.append(Finding("missing_partition", dataset, key, "inputs declared, never materialized"))
        elif state is not None and state.status in ("failed", "held"):
            findings.append(Finding(f"{state.status}_partition", dataset, key,
                                    f"since {state.updated_at.isoformat(timespec='seconds')} (run {state.run_id})"))
        ratio = ratios.get(key)
        if ratio is not None and ratio > limits.quarantine_spike:
            findings.append(Finding("quarantine_spike", dataset, key,
                                    f"{ratio:.0%} of the current run's records quarantined "
                                    f"(above {limits.quarantine_spike:.0%})"))
    return window, sorted(findings, key=lambda f: (f.partition, f.kind))


def mart_problems(engine: Engine, marts_dir: Path) -> list[Finding]:
    """Mart partitions that failed, are held, or are stale (inputs changed and no marts run followed:
    FACTORY_MARTS_AFTER_COMMIT off and no marts deployment run, or a refresh that failed)."""
    from tasks.errors import InputError
    from tasks.mart_models import load_models
    from tasks.mart_plan import plan_mart

    try:
        graph = load_models(marts_dir, DATASETS)
    except InputError as exc:
        return [Finding("mart_models_invalid", "-", "-", str(exc))]
    findings = []
    with reading(engine) as conn:
        for row in conn.execute(select(mart_partition).where(mart_partition.c.status != "succeeded")
                                .order_by(mart_partition.c.mart, mart_partition.c.partition_key)):
            findings.append(Finding(f"{row.status}_mart", row.mart, row.partition_key, row.detail or row.status))
        for model in graph.models.values():
            for plan in plan_mart(conn, graph, model):
                if plan.freshness.value in ("stale", "missing"):
                    findings.append(Finding(f"{plan.freshness.value}_mart", model.name, plan.partition, plan.why))
    return findings


def health_report(days: int = 7, stale_minutes: int = 30, max_attempts: int = 3, quarantine_spike: float = 0.25,
                  stagnant_hours: float = 6.0, silent_hours: float = 48.0) -> dict[str, Any]:
    """Findings per dataset, with the window each was judged on."""
    settings = load_settings()
    engine = get_engine(settings.database_url)
    manifests = declared_manifests(Path(settings.manifest_dir), Path(settings.landing_dir))
    limits = HealthThresholds(days, stale_minutes, max_attempts, quarantine_spike, stagnant_hours, silent_hours)
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
    report["findings"] += [f.as_dict() for f in mart_problems(engine, Path(settings.marts_dir))]
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
