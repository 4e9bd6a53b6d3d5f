"""`datafactory pull` and `datafactory cursors`: pulled sources from the command line (flows/pull.py)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def cmd_pull(args: argparse.Namespace) -> int:
    from flows import cli
    from flows.pull import pull_flow

    if args.end is not None and args.start is None:
        raise cli.UsageError("--end needs --start (a forward pull reads from the cursor)")
    if args.replay and args.start is None:
        raise cli.UsageError("--replay needs --start: the days whose window the source rewrote")
    cli._preflight()
    summary = pull_flow(dataset=args.dataset, start=args.start, end=args.end, replay=args.replay,
                        reason_code=args.reason, operator=args.operator, restart=args.restart)
    if args.json:
        cli._print_json(summary.model_dump(mode="json"))
        return cli._exit_for(summary.partitions)
    print_pull(summary)
    return cli._exit_for(summary.partitions)


def print_pull(summary: Any) -> None:
    from flows import cli

    window = f"{_instant(summary.window_start)} to {_instant(summary.window_end)}"
    print(f"pull {summary.dataset} ({summary.kind}, {summary.direction}{', resumed' if summary.resumed else ''}): "
          f"window {window}, {summary.pages} page(s), {summary.records} record(s) landed, "
          f"{summary.already_ingested} already ingested")
    print(f"cursor: {summary.cursor_before or '-'} -> {summary.cursor_after or '-'}")
    if summary.partitions:
        print(cli._summary_rows(summary.partitions))
        verdicts = [line for s in summary.partitions for line in cli._verdict_lines(s) if ": evidence " not in line]
        if verdicts:
            print("\n".join(verdicts))
    else:
        print("nothing new inside the window: no partition to ingest")
    print(f"evidence: {summary.evidence_path}")


def _instant(moment: Any) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


DEMO_FIXTURES = Path(__file__).resolve().parent.parent / "data" / "api"


def demo_fixture(dataset: str) -> Path | None:
    """The fixture the demo serves for a pulled dataset (data/api/{dataset}.json), if it ships one."""
    from schemas.datasets import DATASETS

    path = DEMO_FIXTURES / f"{dataset}.json"
    return path if DATASETS[dataset].pulled and path.is_file() else None


def demo_pulls(dataset: str, operator: str) -> list[tuple[str, Any]]:
    """Serve the dataset's fixture on loopback and pull it twice: the second pull finds the late commit."""
    from flows.pull import pull_flow
    from schemas.settings import load_settings
    from tasks.fixture_api import FixtureApi

    fixture = demo_fixture(dataset)
    assert fixture is not None
    api = FixtureApi(fixture)
    url = api.start()
    given = os.environ.get("FACTORY_SOURCE_URLS")
    os.environ["FACTORY_SOURCE_URLS"] = json.dumps({**load_settings().source_urls, dataset: url})
    try:
        first = pull_flow(dataset=dataset, reason_code="scheduled", operator=operator)
        second = pull_flow(dataset=dataset, reason_code="scheduled", operator=operator)
    finally:
        api.stop()
        if given is None:
            os.environ.pop("FACTORY_SOURCE_URLS", None)
        else:
            os.environ["FACTORY_SOURCE_URLS"] = given
    return [("pull 1 (the first request is throttled: 429, Retry-After 1 s)", first),
            ("pull 2 (an update committed late, older than the cursor, is inside the lookback)", second)]


def cmd_cursors(args: argparse.Namespace) -> int:
    from flows import cli
    from schemas.datasets import get_dataset
    from schemas.settings import load_settings
    from tasks import cursor
    from tasks.database import get_engine, reading

    spec = get_dataset(args.dataset)
    if spec.source is None:
        raise cli.UsageError(f"--dataset: {spec.name} is delivered as files; it has no cursor")
    with reading(get_engine(load_settings().database_url)) as conn:
        current = cursor.current(conn, spec.name, spec.source.name)
        events = cursor.timeline(conn, spec.name, spec.source.name)
    rebuilt = cursor.rebuild_from_events(events)
    if args.json:
        cli._print_json({"dataset": spec.name, "source": spec.source.name,
                         "current": None if current is None else {"value": current.value, "key": current.key},
                         "rebuilt_from_events": None if rebuilt is None else {"value": rebuilt.value, "key": rebuilt.key},
                         "consistent": rebuilt == current, "timeline": events})
        return cli.EXIT_OK if rebuilt == current else cli.EXIT_FAILED
    print(f"{spec.name}/{spec.source.name} ({spec.source.kind}): cursor "
          f"{current or 'not set (no pull has read a record inside its window yet)'}")
    if events:
        # a re-pull's `to` is the newest it read; the cursor stays where it was
        rows = [[e["id"], e["direction"], _point(e["previous_value"], e["previous_key"]) if e["direction"] == "FORWARD"
                 else "(cursor stays)", _point(e["new_value"], e["new_key"]), f"{_instant(e['window_start'])}..{_instant(e['window_end'])}",
                 _page(e), _instant(e["recorded_at"])] for e in events]
        print(cli._table(["event", "direction", "from", "to", "window", "pull:page", "at"], rows))
    verdict = "matches" if rebuilt == current else "DIFFERS from the cursor table: see the runbook, stuck cursor"
    print(f"rebuilt from the FORWARD events: {rebuilt or 'not set'} ({verdict})")
    return cli.EXIT_OK if rebuilt == current else cli.EXIT_FAILED


def _page(event: dict[str, Any]) -> str:
    """The pull (short) and the page whose record set the event's value."""
    page = event["batch_key"].rsplit(":", 1)[-1] if event["batch_key"] else "-"
    return f"{event['run_id'][:8]}:{page}"


def _point(value: Any, key: Any) -> str:
    return "-" if value is None else f"{_instant(value)} {key}"


def add_parsers(sub: Any, common: argparse.ArgumentParser, dataset: Any, day: Any, operator: Any,
                reasons: list[str], dataset_help: str) -> None:
    pull = sub.add_parser("pull", parents=[common], help="pull a source from its cursor; ingest the days it touched",
                          description="Pull a pulled dataset's source (HTTP API or SQL table): the window from its "
                          "cursor (minus lookback) to the source's clock (minus settle), page by page; ingest the "
                          "days it touched; move the cursor forward. With --start/--end: pull those days again "
                          "(BACKFILL, or REPLAY with --replay); the cursor stays.")
    pull.add_argument("--dataset", type=dataset, default=None, help=dataset_help)
    pull.add_argument("--start", type=day, default=None, help="first day (UTC) to pull again")
    pull.add_argument("--end", type=day, default=None, help="last day to pull again (default: --start)")
    pull.add_argument("--replay", action="store_true", help="the source rewrote these days (REPLAY events)")
    pull.add_argument("--restart", action="store_true",
                      help="give up an unfinished pull that cannot finish instead of resuming it")
    pull.add_argument("--reason", choices=reasons, default="operator_request")
    pull.add_argument("--operator", type=operator, default="cli")
    pull.set_defaults(func=cmd_pull)

    cursors = sub.add_parser("cursors", parents=[common], help="a pulled source's cursor and its event timeline")
    cursors.add_argument("--dataset", type=dataset, default=None, help=dataset_help)
    cursors.set_defaults(func=cmd_cursors)
