"""The `datafactory` command line: the documented way to run, inspect and recover partitions."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Sequence

from flows.local_server import use_if_running
from flows.prefect_env import apply_quiet_defaults

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
MAX_BACKFILL_DAYS = 36_600  # a century of daily partitions in one plan


class UsageError(Exception):
    pass


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        from tasks.errors import printable

        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {printable(message)} (see {self.prog} --help)\n")


def _date(text: str) -> date:
    from schemas.manifest import partition_out_of_range

    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    if (why := partition_out_of_range(day)) is not None:
        raise argparse.ArgumentTypeError(why)
    return day


def _timestamp(text: str) -> Any:
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 timestamp") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (2026-04-17T23:30:00Z)")
    return moment.astimezone(timezone.utc)


def _operator(text: str) -> str:
    from tasks.ledger import ArgumentError, check_operator

    try:
        return check_operator(text)
    except ArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("operator: ")) from None


def _bounded(low: float, high: float, kind: type = int):  # type: ignore[no-untyped-def]
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value
    return parse


def _manifest_id(text: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", text):
        from tasks.errors import printable
        raise argparse.ArgumentTypeError(f"{printable(text)!r} is not a manifest id")
    return text


def _snapshot_id(text: str) -> str:
    from tasks.errors import printable
    from tasks.lake import is_snapshot_id

    if not is_snapshot_id(text):
        raise argparse.ArgumentTypeError(f"{printable(text)!r} is not a snapshot id (see `datafactory lake snapshots`)")
    return text


def _dataset(name: str) -> str:
    from schemas.datasets import DATASETS

    if name not in DATASETS:
        raise argparse.ArgumentTypeError(f"unknown dataset {name!r} (known: {', '.join(sorted(DATASETS))})")
    return name


# commands that read or write one dataset; `demo` and `verify` take every dataset when none is named
_ONE_DATASET = {"run", "backfill", "status", "checks", "evidence", "restore", "lake", "generate", "schema", "manifests",
                "pull", "cursors"}


def _choose_dataset(args: argparse.Namespace, default: str | None) -> None:
    """--dataset, else FACTORY_DEFAULT_DATASET, else the only registered dataset; with several, one is named."""
    from schemas.datasets import DATASETS

    if getattr(args, "dataset", "absent") is not None or args.command not in _ONE_DATASET:
        return
    if default is not None:
        if default not in DATASETS:
            raise UsageError(f"FACTORY_DEFAULT_DATASET: unknown dataset {default!r} (known: {', '.join(sorted(DATASETS))})")
        args.dataset = default
    elif len(DATASETS) == 1:
        args.dataset = next(iter(DATASETS))
    else:
        raise UsageError(f"--dataset: several datasets are registered ({', '.join(sorted(DATASETS))}); name one, "
                         "or set FACTORY_DEFAULT_DATASET")


def _print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, default=str))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


SUMMARY_COLUMNS = [
    ("partition", "partition_key"), ("status", "status"), ("total", "total"), ("valid", "valid"),
    ("invalid", "invalid"), ("dup", "duplicate_in_batch"), ("late", "late_arriving"),
    ("br_new", "bronze_inserted"), ("br_old", "bronze_existing"), ("sv_new", "silver_inserted"),
    ("sv_upd", "silver_updated"), ("sv_same", "silver_unchanged"), ("sv_stale", "silver_stale_skipped"),
    ("reconciled", "reconciled"), ("downstream", "downstream"),
]


def _summary_rows(summaries: list[Any]) -> str:
    rows = []
    for s in summaries:
        data = {**s.model_dump(), "reconciled": ("yes" if s.reconciled else "NO") if s.reconcile() else "-",
                "downstream": s.downstream.decision if s.downstream else "-"}
        rows.append([data[key] for _, key in SUMMARY_COLUMNS])
    return _table([h for h, _ in SUMMARY_COLUMNS], rows)


def _summary_json(summary: Any) -> dict[str, Any]:
    return {**summary.model_dump(mode="json"), "reconcile": summary.reconcile()}


def _verdict_lines(summary: Any) -> list[str]:
    """Why a partition is held or warned, and where its evidence is: what an operator reads next."""
    key = summary.partition_key
    lines = [f"{key}: {c.status.upper()} {c.name}: {c.detail}" for c in summary.checks if c.status in ("fail", "warn")]
    if summary.downstream:
        lines.append(f"{key}: downstream {summary.downstream.decision}: {summary.downstream.reason}")
    if summary.evidence_path:
        lines.append(f"{key}: evidence {summary.evidence_path}")
    return lines


def _exit_for(summaries: list[Any]) -> int:
    """1 when a partition is held, a check would hold it (dry run), or there was nothing to run."""
    for s in summaries:
        if s.status in ("held", "no_input") or s.blocking_checks:
            return EXIT_FAILED
    return EXIT_OK


# --- commands ------------------------------------------------------------------------------------

def _preflight(mode: str = "execute") -> None:
    """A warehouse that cannot be opened, a report folder or lake that cannot be written: each fails
    here, in one line, before any flow runs."""
    from schemas.settings import load_settings
    from tasks.database import get_engine
    from tasks.errors import InputError

    settings = load_settings()
    get_engine(settings.database_url)
    reports = Path(settings.report_dir)
    try:
        reports.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(reports, None, "FACTORY_REPORT_DIR", f"cannot create it: {exc.strerror or exc}") from None
    if not os.access(reports, os.W_OK | os.X_OK):
        raise InputError(reports, None, "FACTORY_REPORT_DIR", "is not writable (evidence goes there)")
    if mode == "execute":
        _lake().storage.check()


def _run_or_skip(manifests: list[Any], dataset: str, partition: date, mode: str = "execute", action: str = "run",
                 reason: str = "operator_request", force: bool = False, operator: str = "datafactory") -> Any:
    """A partition already up to date is skipped from the ledger alone (no Prefect server started);
    anything else runs partition_flow."""
    from flows.handover import skip_without_flow
    from schemas.settings import load_settings
    from tasks.database import get_engine

    if mode == "execute" and not force:
        settings = load_settings()
        skipped = skip_without_flow(settings, get_engine(settings.database_url), dataset, partition, manifests,
                                    action, reason, operator)
        if skipped is not None:
            return skipped
    from flows.partition import run_partition

    return run_partition(dataset=dataset, partition_key=partition, mode=mode, action=action, reason_code=reason,
                         force=force, operator=operator)


def cmd_run(args: argparse.Namespace) -> int:
    from schemas.settings import load_settings
    from tasks.manifests import partition_manifests

    settings = load_settings()
    partition = args.partition or settings.default_partition
    manifests = partition_manifests(settings.manifest_root(args.dataset), args.dataset, partition)  # bad input fails here
    _preflight(args.mode)
    summary = _run_or_skip(manifests, args.dataset, partition, args.mode, args.action, args.reason, args.force,
                           args.operator)
    if args.json:
        _print_json(_summary_json(summary))
    else:
        print(_summary_rows([summary]))
        if summary.message:
            print(f"{summary.partition_key}: {summary.message}")
        if summary.waited_for:
            print(f"{summary.partition_key}: waited for {summary.waited_for}")
        print("\n".join(_verdict_lines(summary)))
    return _exit_for([summary])


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.pull_commands import demo_fixture, demo_pulls, print_pull
    from schemas.datasets import DATASETS
    from schemas.settings import load_settings
    from tasks.manifests import discover_manifests, partition_manifests

    settings = load_settings()
    declared: dict[str, list[date]] = {}
    for m in discover_manifests(Path(settings.manifest_dir)):
        if args.dataset in (None, m.dataset) and m.dataset in DATASETS and not DATASETS[m.dataset].pulled:
            declared.setdefault(m.dataset, []).append(m.partition_key)
    pulled = [name for name in sorted(DATASETS) if args.dataset in (None, name) and demo_fixture(name) is not None]
    if not declared and not pulled:
        raise UsageError(f"{settings.manifest_dir}: no manifests for dataset {args.dataset or 'any registered dataset'}")
    _preflight()
    results, held = [], []
    for dataset in sorted(declared):
        days = sorted(set(declared[dataset]))
        window = [days[0] + timedelta(n) for n in range((days[-1] - days[0]).days + 1)]
        summaries = [_run_or_skip(partition_manifests(Path(settings.manifest_dir), dataset, day), dataset, day,
                                  operator=args.operator) for day in window if day in days]
        missing = [d for d in window if d not in days]
        results.append((dataset, summaries, missing))
        held += [f"{dataset}/{s.partition_key}" for s in summaries if s.status == "held"]
    pulls = {dataset: demo_pulls(dataset, args.operator) for dataset in pulled}
    held += sorted({f"{dataset}/{p.partition_key}" for dataset, runs in pulls.items() for _, pull in runs
                    for p in pull.partitions if p.status == "held"})
    from flows.mart_commands import marts_overview, print_marts_overview

    marts, catalog = marts_overview()
    if args.json:
        _print_json({**{dataset: {"partitions": [_summary_json(s) for s in summaries],
                                  "no_input": [d.isoformat() for d in missing]} for dataset, summaries, missing in results},
                     **{dataset: {"pulls": [pull.model_dump(mode="json") for _, pull in runs]}
                        for dataset, runs in pulls.items()}, "marts": marts, "catalog": catalog})
        return EXIT_OK
    from sqlalchemy.engine import make_url

    warehouse = make_url(settings.database_url).render_as_string(hide_password=True)
    report = Path(settings.report_dir)
    print(f"Data Factory demo: warehouse {warehouse}")
    for dataset, summaries, missing in results:
        print(f"\ndataset {dataset}\n")
        print(_summary_rows(summaries))
        for day in missing:
            print(f"{day}: no manifest declares this partition (a gap for backfill to report)")
        verdicts = "\n".join(line for summary in summaries for line in _verdict_lines(summary))
        if verdicts:
            print("\n" + verdicts)
    for dataset, runs in pulls.items():
        print(f"\ndataset {dataset} (pulled from a JSON API the demo serves on loopback: data/api/{dataset}.json)")
        for label, pull in runs:
            print(f"\n{label}")
            print_pull(pull)
    print_marts_overview(marts, catalog)
    print(f"\nEvidence: {report / 'run_evidence'}/<dataset>/<partition>/<run>.json; "
          f"delivery summary: {report / 'delivery_summary.md'}; lake: {settings.lake_url}/<dataset>/dt=<partition>/")
    print("Next: `datafactory status --dataset tickets`, `datafactory checks --dataset tickets --partition 2026-04-16`, "
          "`datafactory evidence --dataset orders --partition 2026-04-17`, `datafactory cursors --dataset customers`; "
          "run the demo again and every partition is a skip, every pull finds nothing new.")
    if held:
        print(f"{len(held)} partition(s) held: " + ", ".join(held))
    return EXIT_FAILED if held else EXIT_OK


def _planned_runs(plan_dir: Path, since: Any) -> int | None:
    """Partitions to ingest in the plan this backfill wrote (its file appears once planning is done)."""
    from tasks.plan import INGESTING

    fresh = [p for p in plan_dir.glob("*.json") if p.stat().st_mtime >= since.timestamp()]
    if not fresh:
        return None
    plan = json.loads(max(fresh, key=lambda p: p.stat().st_mtime).read_text())
    return sum(1 for e in plan["entries"] if e["proposed_action"] in INGESTING)


def _progress_while(engine: Any, dataset: str, since: Any, plan_dir: Path, work: Any) -> Any:
    """Run `work()` under a progress bar: its total from the plan file, its progress from the ledger."""
    import threading

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from sqlalchemy import and_, func, select

    from schemas.tables import ingest_run
    from tasks.database import reading

    if not sys.stdout.isatty():
        return work()
    done = threading.Event()
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = work()
        except BaseException as exc:  # handed back to the main thread below
            result["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=target, daemon=True)
    from rich.progress import BarColumn, MofNCompleteColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=True) as bar:
        shown = bar.add_task("backfill: planning", total=None)
        thread.start()
        while not done.wait(0.5):
            with reading(engine) as conn:
                finished = conn.execute(select(func.count()).select_from(ingest_run).where(and_(
                    ingest_run.c.dataset == dataset, ingest_run.c.action == "backfill",
                    ingest_run.c.status != "running", ingest_run.c.started_at >= since))).scalar_one()
            total = _planned_runs(plan_dir, since)
            bar.update(shown, completed=finished, total=total,
                       description="backfill: planning" if total is None else "backfill: partitions")
    if "error" in result:
        raise result["error"]
    return result["value"]


def cmd_backfill(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from flows.backfill import backfill_flow
    from schemas.settings import load_settings
    from tasks.database import get_engine

    settings = load_settings()
    if args.end < args.start:
        raise UsageError(f"--end {args.end} is before --start {args.start}")
    if (args.end - args.start).days >= MAX_BACKFILL_DAYS:
        raise UsageError(f"--start {args.start} to --end {args.end} is more than {MAX_BACKFILL_DAYS} days; "
                         "backfill it in windows")
    _preflight(args.mode)
    since = datetime.now(timezone.utc)
    plan_dir = Path(settings.report_dir) / "backfill"
    summary = _progress_while(get_engine(settings.database_url), args.dataset, since, plan_dir, lambda: backfill_flow(
        dataset=args.dataset, start=args.start, end=args.end, mode=args.mode, only_gaps=not args.all,
        max_concurrency=args.concurrency, reason_code=args.reason, operator=args.operator,
        deployment=args.deployment, dask_address=args.dask_address))
    plan = json.loads(Path(summary.plan_path).read_text())
    if args.json:
        _print_json({**summary.model_dump(), "plan": plan})
    else:
        results = {r["partition_key"]: r for r in summary.results}
        headers = ["partition", "current", "gap_reason", "action", "expected", "outputs", "result"]
        rows = [[e["partition_key"], e["current_status"], e["gap_reason"], e["proposed_action"],
                 e["expected_input_count"], e["current_output_count"],
                 (results[e["partition_key"]]["status"] + (f" ({results[e['partition_key']]['error']})"
                  if results[e["partition_key"]]["error"] else "")) if e["partition_key"] in results else "-"]
                for e in plan["entries"]]
        print(_table(headers, rows))
        print(f"\n{summary.mode}: {summary.planned} partition(s) planned, {summary.to_ingest} to ingest; "
              f"plan written to {summary.plan_path}")
        stale = _stale_marts(plan["entries"])
        if stale:
            print("marts these ingests make stale (recomputed after them): " + ", ".join(stale))
        for failure in summary.failed:
            print(f"{failure['partition_key']}: failed: {failure['error']}")
        for held in summary.held:
            print(f"{held['partition_key']}: {held['error']}; evidence {held['evidence_path']}")
    return EXIT_FAILED if summary.failed or summary.held else EXIT_OK


def _stale_marts(entries: list[dict[str, Any]]) -> list[str]:
    """Per mart, the partitions a plan's entries make stale: `mart from..to` (`..` alone: every later one)."""
    spans: dict[str, tuple[str, str | None]] = {}
    for entry in entries:
        for stale in entry.get("stale_marts", []):
            first, last = spans.get(stale["mart"], (stale["from"], stale["to"]))
            lasts = [last, stale["to"]]
            spans[stale["mart"]] = (min(first, stale["from"]),
                                    None if None in lasts else max(x for x in lasts if x is not None))
    return [f"{mart} {first}..{last or ''}" for mart, (first, last) in sorted(spans.items())]


def cmd_replay(args: argparse.Namespace) -> int:
    from flows.replay import replay_flow
    from schemas.settings import load_settings
    from tasks.manifests import find_manifest, verify_manifests

    settings = load_settings()
    manifest = find_manifest(Path(settings.manifest_dir), args.manifest_id, Path(settings.landing_dir))
    # a changed file fails here, cleanly, before any flow runs
    verify_manifests([manifest], settings.manifest_root(manifest.dataset), args.accept_changed)
    _preflight("dry-run")  # a replay writes no snapshot: only the report folder must be writable
    from flows.partition import summary_of

    summary = summary_of(replay_flow(manifest_id=args.manifest_id, reason_code=args.reason,
                                     accept_changed=args.accept_changed, operator=args.operator, return_state=True))
    if args.json:
        _print_json(_summary_json(summary))
    else:
        print(_summary_rows([summary]))
        print("\n".join(_verdict_lines(summary)))
    return _exit_for([summary])


def cmd_status(args: argparse.Namespace) -> int:
    from schemas.settings import load_settings
    from tasks.database import get_engine
    from tasks.manifests import discover_manifests
    from tasks.status import partition_status

    settings = load_settings()
    declared = {m.partition_key for m in discover_manifests(settings.manifest_root(args.dataset))
                if m.dataset == args.dataset}
    from tasks.report import calendar_strip, status_counts

    rows = partition_status(get_engine(settings.database_url), args.dataset, declared, args.start, args.end)
    if args.json:
        _print_json({"dataset": args.dataset, "counts": status_counts(rows), "partitions": rows})
        return EXIT_OK
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    print(f"{args.dataset}: " + (f"{rows[0]['partition']} to {rows[-1]['partition']}" if rows else "no partitions"))
    print("\n".join(calendar_strip(rows, colour)))
    if rows:
        headers = ["partition", "status", "outputs", "last_action", "reason", "outcome", "updated_at"]
        print()
        print(_table(headers, [[r[h] for h in headers] for r in rows]))
    return EXIT_OK


def _partition_arg(args: argparse.Namespace) -> date:
    from schemas.settings import load_settings

    return args.partition or load_settings().default_partition


def cmd_checks(args: argparse.Namespace) -> int:
    """Check results of the run behind the partition's current state; exit 1 when one holds it."""
    from schemas.settings import load_settings
    from tasks.checks import stored_results
    from tasks.database import get_engine, reading
    from tasks.ledger import current_run

    from tasks.verify import untrusted_partitions

    settings = load_settings()
    partition = _partition_arg(args).isoformat()
    with reading(get_engine(settings.database_url)) as conn:
        run_id = current_run(conn, args.dataset, partition)
        results = stored_results(conn, run_id) if run_id else []
        untrusted = sorted(set(untrusted_partitions(conn, args.dataset).get(partition, [])))
    failed = [r for r in results if r.status == "fail"]
    if args.json:
        _print_json({"dataset": args.dataset, "partition": partition, "run_id": run_id,
                     "held": bool(failed), "untrusted": untrusted, "checks": [r.model_dump() for r in results]})
    elif not results:
        print(f"{args.dataset}/{partition}: no check results; the partition has no successful or held run "
              "(see `datafactory status`)")
    else:
        print(f"{args.dataset}/{partition}: checks of run {run_id}")
        headers = ["check", "severity", "status", "observed", "warn_above", "error_above", "detail"]
        print(_table(headers, [[r.name, r.severity, r.status.upper() if r.status in ("fail", "warn") else r.status,
                                _fmt(r.observed), _fmt(r.warn_above), _fmt(r.error_above), r.detail]
                               for r in results]))
        print(f"\n{args.dataset}/{partition}: " + (
            f"HELD by {', '.join(r.name for r in failed)}" if failed
            else f"UNTRUSTED: verify found {', '.join(untrusted)}; downstream must not consume it" if untrusted
            else "no error check failed; downstream may consume it"))
    return EXIT_FAILED if failed or untrusted or not results else EXIT_OK


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def cmd_evidence(args: argparse.Namespace) -> int:
    """The latest evidence of a partition: of the run behind its current state, else the newest file."""
    from schemas.settings import load_settings
    from tasks.artifacts import evidence_markdown
    from tasks.database import get_engine, reading
    from tasks.evidence import latest_evidence
    from tasks.ledger import current_run

    settings = load_settings()
    partition = _partition_arg(args).isoformat()
    with reading(get_engine(settings.database_url)) as conn:
        run_id = current_run(conn, args.dataset, partition)
    found = latest_evidence(Path(settings.report_dir), args.dataset, partition, run_id)
    if found is None:
        raise UsageError(f"{Path(settings.report_dir) / 'run_evidence' / args.dataset / partition}: "
                         "no evidence for this partition; run it first")
    path, evidence = found
    if args.json:
        print(path.read_text(), end="")
    else:
        print(evidence_markdown(evidence, path), end="")
    return EXIT_FAILED if evidence["downstream"]["decision"] == "hold" else EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    from flows.partition import summary_of
    from flows.restore import restore_flow
    from schemas.settings import load_settings
    from tasks.database import get_engine
    from tasks.restore import restore_target

    _preflight()
    # a snapshot restore may not return to fails here, in one line, before any flow runs
    restore_target(get_engine(load_settings().database_url), _lake(), args.dataset, args.partition, args.snapshot)
    summary = summary_of(restore_flow(dataset=args.dataset, partition_key=args.partition, snapshot_id=args.snapshot,
                                      reason_code=args.reason, operator=args.operator, return_state=True))
    if args.json:
        _print_json(_summary_json(summary))
    else:
        print(f"{summary.partition_key}: {summary.message}")
        print("\n".join(_verdict_lines(summary)))
    return _exit_for([summary])


def _lake() -> Any:
    from schemas.settings import load_settings
    from tasks.lake import open_lake

    return open_lake(load_settings())


def cmd_lake_snapshots(args: argparse.Namespace) -> int:
    from schemas.settings import load_settings
    from tasks.database import get_engine
    from tasks.lake_state import snapshot_listing

    lake = _lake()
    snapshots = snapshot_listing(get_engine(load_settings().database_url), lake, args.dataset, args.partition)
    if args.json:
        _print_json(snapshots)
        return EXIT_OK
    if not snapshots:
        print(f"{lake.where(args.dataset, args.partition)}: no committed snapshot")
        return EXIT_FAILED
    print(_table(["snapshot_id", "current", "marker", "rows", "files", "committed_at", "run_id", "problem"],
                 [[m["snapshot_id"], "*" if m["current"] else "", "*" if m["marker"] else "", m["rows"], m["files"],
                   m["committed_at"], m["run_id"], m["problem"] or ""] for m in snapshots]))
    return EXIT_OK


def cmd_lake_compact(args: argparse.Namespace) -> int:
    from schemas.datasets import get_dataset
    from schemas.settings import load_settings
    from tasks.compact import compact_month
    from tasks.database import get_engine

    from tasks.catalog import refresh_catalog

    _preflight()
    engine, lake = get_engine(load_settings().database_url), _lake()
    reports = compact_month(engine, lake, get_dataset(args.dataset), args.month)
    if reports:  # the catalog reads the compacted snapshots now (retention may let the old files go)
        refresh_catalog(engine, lake)
    if args.json:
        _print_json(reports)
    elif not reports:
        print(f"{args.dataset} {args.month}: nothing to compact (every partition is one file)")
    else:
        print(_table(["partition", "rows", "files_before", "files_after", "snapshot_after"],
                     [[r["partition_key"], r["rows"], r["files_before"], r["files_after"], r["snapshot_after"]]
                      for r in reports]))
        print("the marts that read these partitions are stale now (new snapshots, same rows): "
              "`datafactory marts run` recomputes them")
    return EXIT_OK


def _month(text: str) -> str:
    try:
        date.fromisoformat(text + "-01")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a month (YYYY-MM)") from None
    return text


def cmd_verify(args: argparse.Namespace) -> int:
    """Ledger against warehouse, lake and evidence; every finding with a reason code; exit 1 when any."""
    from tasks.verify import verify_markdown, verify_report

    if args.partition and (args.start or args.end):
        raise UsageError("--partition or --start/--end, not both")
    start, end = (args.partition, args.partition) if args.partition else (args.start, args.end)
    if start and end and end < start:
        raise UsageError(f"--end {end} is before --start {start}")
    report = verify_report(args.dataset, start, end, args.deep)
    if args.json:
        _print_json(report)
    else:
        print(verify_markdown(report), end="")
    return EXIT_FAILED if report["findings"] else EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    """What needs attention; exit 1 when anything does. Reads the ledger directly: no flow run needed."""
    from tasks.health import health_markdown, health_report

    report = health_report(args.days, args.stale_minutes, args.max_attempts, args.quarantine_spike,
                           args.stagnant_hours, args.silent_hours)
    if args.json:
        _print_json(report)
    else:
        print(health_markdown(report), end="")
    return EXIT_OK if report["healthy"] else EXIT_FAILED


def cmd_manifests_validate(args: argparse.Namespace) -> int:
    from tasks.manifests import discover_manifests, parse_manifest, verify_manifests

    path = Path(args.path)
    manifests = discover_manifests(path) if path.is_dir() else [parse_manifest(path)]
    root = path if path.is_dir() else path.parent
    verify_manifests(manifests, root)
    if args.json:
        _print_json([{"manifest_id": m.manifest_id, "path": str(m.path), "partition_key": m.partition_key.isoformat(),
                      "assets": len(m.assets), "valid": True} for m in manifests])
    else:
        for m in manifests:
            print(f"ok  {m.path}  {m.manifest_id}  {m.dataset}/{m.partition_key}  "
                  f"{sum(a.record_count for a in m.assets)} records in {len(m.assets)} asset(s)")
    return EXIT_OK


def cmd_manifests_write(args: argparse.Namespace) -> int:
    from datetime import datetime, time, timezone

    from schemas.settings import load_settings
    from tasks.generate import write_manifest
    from tasks.manifests import parse_manifest, verify_manifests

    root = Path(load_settings().manifest_dir).resolve()
    files = [Path(f).resolve() for f in args.files]
    for path in files:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        if not path.is_relative_to(root):
            raise UsageError(f"{path}: not under FACTORY_MANIFEST_DIR ({root}); asset URIs are relative to it")
        if path.suffix not in (".jsonl", ".csv", ".parquet"):
            raise UsageError(f"{path}: the format is named by the suffix: .jsonl, .csv or .parquet")
    target = root / f"{args.manifest_id}.json"
    if target.exists() and not args.replace:
        raise UsageError(f"{target}: exists (a delivery is a new manifest; --replace to rewrite this one)")
    produced = args.produced_at or datetime.combine(args.partition, time(23, 59), tzinfo=timezone.utc)
    written = write_manifest(root, args.manifest_id, args.dataset, args.partition, produced, files)
    manifest = parse_manifest(written)
    verify_manifests([manifest], root)  # the same checks every run makes
    if args.json:
        _print_json({"path": str(written), "manifest_id": manifest.manifest_id, "records": [
            a.record_count for a in manifest.assets]})
    else:
        print(f"wrote {written}: {manifest.dataset}/{manifest.partition_key}, "
              f"{sum(a.record_count for a in manifest.assets)} records in {len(manifest.assets)} asset(s)")
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    from tasks.generate import generate_partitions

    from schemas.datasets import get_dataset

    if get_dataset(args.dataset).synthetic is None:
        raise UsageError(f"--dataset {args.dataset}: declares no synthetic data (DatasetSpec.synthetic)")
    args.out.mkdir(parents=True, exist_ok=True)
    written = generate_partitions(args.out, args.start, args.days, args.events_per_day, args.entities,
                                  dataset=args.dataset, defect_every=args.defect_every)
    if args.json:
        _print_json([str(p) for p in written])
    else:
        print(f"wrote {len(written)} partition(s) of {args.events_per_day} events under {args.out}")
        print(f"use them with: FACTORY_MANIFEST_DIR={args.out} datafactory run --dataset {args.dataset} --partition {args.start}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from schemas.datasets import get_dataset
    from schemas.settings import load_settings
    from tasks.database import get_engine, reading
    from tasks.schema_evolution import applied_contract, evolve, planned_changes, rebuild_silver

    spec = get_dataset(args.dataset)
    engine = get_engine(load_settings().database_url)
    if args.schema_command == "status":
        with reading(engine) as conn:
            held = applied_contract(conn, spec)
        changes = [] if held is None else planned_changes(held, spec)
        if args.json:
            _print_json({"dataset": spec.name, "fingerprint": spec.contract_fingerprint, "tables": held is not None,
                         "pending": [c.as_dict() for c in changes]})
        elif held is None:
            print(f"{spec.name}: no tables yet; the first run creates them from the code's contract "
                  f"({spec.contract_fingerprint})")
        elif not changes:
            print(f"{spec.name}: the tables hold the code's contract ({spec.contract_fingerprint})")
        else:
            print(f"{spec.name}: {len(changes)} change(s) between the tables and the code's contract:")
            for change in changes:
                print(f"  {change}: " + ("additive, the next run applies it" if change.additive else
                                         "needs `datafactory schema apply --allow-destructive`"))
        # exit 1: runs are refused until an operator applies a change
        return EXIT_FAILED if any(not c.additive for c in changes) else EXIT_OK
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        applied = evolve(conn, spec, now, args.operator, allow_destructive=args.allow_destructive)
        rebuilt = rebuild_silver(conn, spec, now, args.operator) if args.rebuild else None
    if args.json:
        _print_json({"dataset": spec.name, "fingerprint": spec.contract_fingerprint,
                     "applied": [c.as_dict() for c in applied], "rebuilt": rebuilt})
        return EXIT_OK
    print(f"{spec.name}: applied " + "; ".join(str(c) for c in applied) if applied else
          f"{spec.name}: nothing to apply; the tables hold the code's contract")
    if rebuilt:
        print(f"{spec.name}: {rebuilt}")
    elif any(c.additive and c.change == "added" for c in applied):
        print(f"existing rows hold null for the new field(s) until `datafactory schema apply --dataset {spec.name} "
              "--rebuild` (or a backfill with --reason schema_change) rebuilds them from bronze")
    return EXIT_OK


def cmd_db(args: argparse.Namespace) -> int:
    from schemas.settings import load_settings
    from tasks import migrations
    from tasks.database import get_engine, open_engine, reading, safe_url

    url = load_settings().database_url
    engine = open_engine(url)
    with reading(engine) as conn:
        before = migrations.recorded_revision(conn)
    head = migrations.head_revision()
    if args.db_command == "upgrade":
        if before is not None:
            with engine.begin() as conn:
                migrations.upgrade(conn)
        engine.dispose()
        get_engine(url)  # and every table the code needs (a new warehouse, a new dataset)
        state = {"warehouse": safe_url(url), "before": before, "revision": head}
        message = (f"{safe_url(url)}: created at revision {head}" if before is None else
                   f"{safe_url(url)}: already at revision {head}" if before == head else
                   f"{safe_url(url)}: upgraded from revision {before} to {head}")
    else:
        state = {"warehouse": safe_url(url), "revision": before, "code_revision": head}
        message = (f"{safe_url(url)}: no factory tables yet (the first command creates them at revision {head})"
                   if before is None else f"{safe_url(url)}: revision {before}; this code's: {head}"
                   + ("" if before == head else " (run `datafactory db upgrade`)"))
    if args.json:
        _print_json(state)
    else:
        print(message)
    return EXIT_OK


def cmd_server(args: argparse.Namespace) -> int:
    from flows import local_server

    if args.server_command == "start":
        try:
            server, started = local_server.start(args.port)
        except RuntimeError as exc:
            raise UsageError(str(exc)) from None
        state = {"running": True, "started_now": started, "pid": server.pid, "api_url": server.api_url,
                 "ui_url": server.ui_url}
    elif args.server_command == "stop":
        stopped = local_server.stop()
        state = {"running": False, "stopped": None if stopped is None else stopped.pid}
    else:
        found = local_server.recorded()
        state = {"running": found is not None} | ({"pid": found.pid, "api_url": found.api_url,
                                                   "ui_url": found.ui_url} if found else {})
    if args.json:
        _print_json(state)
    elif args.server_command == "start":
        print(f"prefect server {'started' if state['started_now'] else 'already running'} (pid {state['pid']}): "
              f"{state['ui_url']}")
        print(f"datafactory commands in this directory use it while it runs (unless PREFECT_API_URL is set); "
              f"stop it with `datafactory server stop`. Log: {local_server.LOG_FILE}")
    elif args.server_command == "stop":
        print(f"stopped the prefect server (pid {state['stopped']})" if state["stopped"] else "no server was running")
    else:
        print(f"running (pid {state['pid']}): {state['ui_url']}" if state["running"] else "not running")
    return EXIT_OK


# --- parser --------------------------------------------------------------------------------------

DATASET_HELP = "a registered dataset (default: FACTORY_DEFAULT_DATASET, or the only one registered)"


def build_parser() -> argparse.ArgumentParser:
    from schemas.reason_codes import Action, ActionReason

    common = OneLineParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("-v", "--verbose", action="store_true", help="show Prefect's run logs")

    parser = OneLineParser(prog="datafactory", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    demo = sub.add_parser("demo", parents=[common], help="ingest the shipped sample partitions")
    demo.add_argument("--dataset", type=_dataset, default=None, help="default: every dataset with manifests")
    demo.add_argument("--operator", type=_operator, default="demo")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", parents=[common], help="materialize one partition", description=(
        "Materialize one partition through partition_flow. A partition already up to date (same inputs, "
        "no --force) is skipped from the ledger alone, without starting a Prefect server."))
    run.add_argument("--dataset", type=_dataset, default=None, help=DATASET_HELP)
    run.add_argument("--partition", type=_date, help="YYYY-MM-DD (default: FACTORY_DEFAULT_PARTITION)")
    run.add_argument("--mode", choices=["execute", "dry-run"], default="execute")
    run.add_argument("--action", choices=[a.value for a in Action if a is not Action.RETRY], default="run")
    run.add_argument("--force", action="store_true", help="run even if already succeeded from the same inputs")
    run.add_argument("--reason", choices=[r.value for r in ActionReason], default="operator_request")
    run.add_argument("--operator", type=_operator, default="cli")
    run.set_defaults(func=cmd_run)

    backfill = sub.add_parser("backfill", parents=[common], help="plan a window; execute only its gaps")
    backfill.add_argument("--dataset", type=_dataset, default=None, help=DATASET_HELP)
    backfill.add_argument("--start", type=_date, required=True)
    backfill.add_argument("--end", type=_date, required=True)
    backfill.add_argument("--mode", choices=["dry-run", "execute"], required=True)
    backfill.add_argument("--all", action="store_true", help="also rerun partitions that are up to date")
    backfill.add_argument("--concurrency", type=_bounded(1, 64), default=2, help="partition runs at once (default 2)")
    backfill.add_argument("--reason", choices=[r.value for r in ActionReason], default=None)
    backfill.add_argument("--operator", type=_operator, default="cli")
    backfill.add_argument("--deployment", default=None,
                          help="fan out: run partitions as flow runs of this deployment on its work pool")
    backfill.add_argument("--dask-address", default=None, metavar="tcp://HOST:PORT",
                          help="run the partitions on this Dask cluster's workers (prefect-dask's DaskTaskRunner; "
                               "needs the dask extra)")
    backfill.set_defaults(func=cmd_backfill)

    from flows.pull_commands import add_parsers as add_pull_parsers

    add_pull_parsers(sub, common, _dataset, _date, _operator, [r.value for r in ActionReason], DATASET_HELP)

    from flows.mart_commands import add_parsers as add_mart_parsers

    add_mart_parsers(sub, common, _dataset, _date)

    replay = sub.add_parser("replay", parents=[common], help="re-consume the inputs of one manifest")
    replay.add_argument("--manifest-id", type=_manifest_id, required=True)
    replay.add_argument("--accept-changed", action="store_true",
                        help="take changed source files as they are now instead of refusing")
    replay.add_argument("--reason", choices=[r.value for r in ActionReason], default="operator_request")
    replay.add_argument("--operator", type=_operator, default="cli")
    replay.set_defaults(func=cmd_replay)

    status = sub.add_parser("status", parents=[common], help="per-partition state")
    status.add_argument("--dataset", type=_dataset, default=None, help=DATASET_HELP)
    status.add_argument("--start", type=_date)
    status.add_argument("--end", type=_date)
    status.set_defaults(func=cmd_status)

    checks = sub.add_parser("checks", parents=[common], help="check results of a partition's current run")
    checks.add_argument("--dataset", type=_dataset, default=None, help=DATASET_HELP)
    checks.add_argument("--partition", type=_date, help="YYYY-MM-DD (default: FACTORY_DEFAULT_PARTITION)")
    checks.set_defaults(func=cmd_checks)

    evidence = sub.add_parser("evidence", parents=[common], help="the latest run evidence of a partition")
    evidence.add_argument("--dataset", type=_dataset, default=None, help=DATASET_HELP)
    evidence.add_argument("--partition", type=_date, help="YYYY-MM-DD (default: FACTORY_DEFAULT_PARTITION)")
    evidence.set_defaults(func=cmd_evidence)

    restore = sub.add_parser("restore", parents=[common], help="make a lake snapshot current; rebuild silver from the lake")
    restore.add_argument("--dataset", type=_dataset, default=None, help=DATASET_HELP)
    restore.add_argument("--partition", type=_date, required=True)
    restore.add_argument("--snapshot", type=_snapshot_id, required=True,
                         help="a snapshot id from `datafactory lake snapshots`")
    restore.add_argument("--reason", choices=[r.value for r in ActionReason], default="untrusted_state")
    restore.add_argument("--operator", type=_operator, default="cli")
    restore.set_defaults(func=cmd_restore)

    lake = sub.add_parser("lake", parents=[common], help="the Parquet lake: snapshots and compaction")
    lsub = lake.add_subparsers(dest="lake_command", required=True, parser_class=OneLineParser)
    snapshots = lsub.add_parser("snapshots", parents=[common], help="a partition's retained snapshots")
    snapshots.add_argument("--dataset", type=_dataset, default=None, help=DATASET_HELP)
    snapshots.add_argument("--partition", type=_date, required=True)
    snapshots.set_defaults(func=cmd_lake_snapshots)
    compact = lsub.add_parser("compact", parents=[common], help="rewrite a month's partitions into fewer files")
    compact.add_argument("--dataset", type=_dataset, default=None, help=DATASET_HELP)
    compact.add_argument("--month", type=_month, required=True, help="YYYY-MM")
    compact.set_defaults(func=cmd_lake_compact)

    health = sub.add_parser("health", parents=[common], help="what needs an operator's attention; exit 1 if anything")
    health.add_argument("--days", type=_bounded(1, 3660), default=7,
                        help="partitions looked at, up to the newest known (default 7)")
    health.add_argument("--stale-minutes", type=_bounded(1, 10_080), default=30, help="heartbeat age of a stale RUNNING run")
    health.add_argument("--max-attempts", type=_bounded(1, 1000), default=3,
                        help="attempts on one batch before it is a retry storm")
    health.add_argument("--quarantine-spike", type=_bounded(0.0, 1.0, float), default=0.25,
                        help="quarantined share that is a spike")
    health.add_argument("--stagnant-hours", type=_bounded(0.0, 8760.0, float), default=6.0,
                        help="a pulled source's cursor unmoved this long while the source shows newer data (default 6)")
    health.add_argument("--silent-hours", type=_bounded(0.0, 8760.0, float), default=48.0,
                        help="a pulled source's cursor unmoved this long at all (default 48)")
    health.set_defaults(func=cmd_health)

    verify = sub.add_parser("verify", parents=[common],
                            help="compare ledger, warehouse, lake and evidence; exit 1 on any finding")
    verify.add_argument("--dataset", type=_dataset, default=None, help="default: every registered dataset")
    verify.add_argument("--partition", type=_date)
    verify.add_argument("--start", type=_date)
    verify.add_argument("--end", type=_date)
    verify.add_argument("--deep", action="store_true", help="also every data file's sha256 and silver's content")
    verify.set_defaults(func=cmd_verify)

    manifests = sub.add_parser("manifests", parents=[common], help="source manifests")
    msub = manifests.add_subparsers(dest="manifests_command", required=True, parser_class=OneLineParser)
    validate = msub.add_parser("validate", parents=[common], help="validate a manifest file or directory")
    validate.add_argument("path")
    validate.set_defaults(func=cmd_manifests_validate)
    write = msub.add_parser("write", parents=[common], help="write the manifest of a delivery's files "
                            "(their sha256 and record counts), in FACTORY_MANIFEST_DIR")
    write.add_argument("--dataset", type=_dataset, default=None, help=DATASET_HELP)
    write.add_argument("--partition", type=_date, required=True, help="the delivery day, YYYY-MM-DD")
    write.add_argument("--manifest-id", type=_manifest_id, required=True)
    write.add_argument("--produced-at", type=_timestamp, default=None,
                       help="ISO-8601 UTC (default: the partition day, 23:59 UTC)")
    write.add_argument("--replace", action="store_true", help="rewrite an existing manifest of that id")
    write.add_argument("files", nargs="+", help=".jsonl, .csv or .parquet files under FACTORY_MANIFEST_DIR")
    write.set_defaults(func=cmd_manifests_write)

    generate = sub.add_parser("generate", parents=[common], help="write synthetic partitions (benchmarks)")
    generate.add_argument("--days", type=_bounded(1, 10_000), default=1)
    generate.add_argument("--events-per-day", type=_bounded(1, 100_000_000), default=1000)
    generate.add_argument("--dataset", type=_dataset, default=None, help=DATASET_HELP)
    generate.add_argument("--entities", "--tickets", dest="entities", type=_bounded(1, 100_000_000), default=None,
                          help="distinct entities (tickets, orders; default: events/4)")
    generate.add_argument("--defect-every", type=_bounded(0, 100_000_000), default=0, metavar="N",
                          help="one of each realistic defect (malformed line, contract violation, future event, "
                               "duplicate, conflicting duplicate, late update) per N lines; 0 = none")
    generate.add_argument("--start", type=_date, default=date(2026, 4, 17))
    generate.add_argument("--out", type=Path, default=Path(".factory/synthetic"))
    generate.set_defaults(func=cmd_generate)

    schema = sub.add_parser("schema", parents=[common], help="a dataset's tables against its contract")
    schsub = schema.add_subparsers(dest="schema_command", required=True, parser_class=OneLineParser)
    schema_status = schsub.add_parser("status", parents=[common], help="changes between the tables and the contract")
    schema_status.add_argument("--dataset", type=_dataset, default=None, help=DATASET_HELP)
    schema_status.set_defaults(func=cmd_schema)
    schema_apply = schsub.add_parser("apply", parents=[common], help="apply the contract's changes to the tables")
    schema_apply.add_argument("--dataset", type=_dataset, default=None, help=DATASET_HELP)
    schema_apply.add_argument("--allow-destructive", action="store_true",
                              help="also fields removed, kinds changed, new required fields: silver is rebuilt "
                                   "from bronze under the new contract")
    schema_apply.add_argument("--rebuild", action="store_true",
                              help="then rebuild every silver row from bronze's payloads (fills a field added "
                                   "since the rows were written, whatever their partition's state)")
    schema_apply.add_argument("--operator", type=_operator, default="cli")
    schema_apply.set_defaults(func=cmd_schema)

    db = sub.add_parser("db", parents=[common], help="the warehouse's factory tables: revision and upgrade")
    dbsub = db.add_subparsers(dest="db_command", required=True, parser_class=OneLineParser)
    dbsub.add_parser("current", parents=[common], help="the revision the warehouse is at, and the code's").set_defaults(
        func=cmd_db)
    dbsub.add_parser("upgrade", parents=[common], help="migrate the factory tables to the code's revision "
                     "(PostgreSQL needs this after an upgrade of data-factory; SQLite does it itself)").set_defaults(
        func=cmd_db)

    server = sub.add_parser("server", parents=[common], help="a local Prefect server commands share (opt-in)",
                            description=(
        "With no Prefect API configured, every command that runs a flow starts Prefect's ephemeral server "
        "(seconds each time). `server start` starts one `prefect server start` on loopback in the background; "
        "commands run from this directory use it until `server stop`. PREFECT_API_URL, when set in the "
        "environment or the active profile, always wins."))
    ssub = server.add_subparsers(dest="server_command", required=True, parser_class=OneLineParser)
    start = ssub.add_parser("start", parents=[common], help="start it (or find it running)")
    start.add_argument("--port", type=_bounded(1024, 65535), default=4242)
    ssub.add_parser("stop", parents=[common], help="stop it")
    ssub.add_parser("status", parents=[common], help="is it running?")
    server.set_defaults(func=cmd_server)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    # Prefect's own run logs (a failed task's traceback among them) only with -v: the command reports
    # every outcome itself, in one line when something failed
    apply_quiet_defaults(None if verbose else {"PREFECT_LOGGING_LEVEL": "CRITICAL"})
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2 through argparse
    if args.command != "server":
        use_if_running()  # `datafactory server start` made one: no ephemeral server per command

    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from tasks.errors import FactoryError, printable

    def say(message: object, code: int) -> int:
        if verbose:
            import traceback

            traceback.print_exc()
        lines = str(message).splitlines() or [type(message).__name__]
        print(f"datafactory: {printable(lines[0])}", file=sys.stderr)
        return code

    from schemas.settings import SettingsFileError, load_settings

    try:
        settings = load_settings()  # every setting checked before any command touches anything
        _choose_dataset(args, settings.default_dataset)
        return args.func(args)
    except BrokenPipeError:  # `datafactory status | head`: the reader has gone; that is no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except FactoryError as exc:
        return say(exc, exc.exit_code)
    except SettingsFileError as exc:
        return say(exc, EXIT_BAD_INPUT)
    except ValidationError as exc:  # a FACTORY_* setting (or .env line) of the wrong shape
        first = exc.errors()[0]
        where = "FACTORY_" + "_".join(str(p) for p in first["loc"]).upper() if exc.title == "FactorySettings" \
            else ".".join(str(p) for p in first["loc"]) or exc.title
        return say(f"{where}: {first['msg']} (got {first.get('input')!r})", EXIT_BAD_INPUT)
    except UsageError as exc:
        return say(exc, EXIT_BAD_INPUT)
    except SQLAlchemyError as exc:  # the warehouse is down, unreachable, or refused a statement
        from tasks.database import safe_url

        where = safe_url(load_settings().database_url)
        failure = (str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__])[0]
        return say(f"{where}: FACTORY_DATABASE_URL: the warehouse failed: {failure}", EXIT_FAILED)
    except KeyboardInterrupt:
        return say("interrupted; the partition's attempt was recorded as failed", 130)
    except Exception as exc:  # a bug: still one line for the user; -v shows the traceback
        return say(f"internal error: {type(exc).__name__}: {exc} (run again with -v for the traceback)", EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
