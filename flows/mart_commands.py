"""`datafactory marts plan|run|status` and `datafactory catalog`: marts and the lake's catalog from the
command line (flows/marts.py, tasks/catalog.py)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _graph_and_engine() -> tuple[Any, Any, Any]:
    from flows.marts import load_graph
    from schemas.settings import load_settings
    from tasks.database import get_engine

    settings = load_settings()
    return settings, load_graph(settings), get_engine(settings.database_url)


def _plans(args: argparse.Namespace) -> list[Any]:
    from flows.marts import plan_marts, selected

    _, graph, engine = _graph_and_engine()
    return plan_marts(engine, graph, selected(graph, args.dataset, args.mart), args.start, args.end)


def cmd_marts_plan(args: argparse.Namespace) -> int:
    """What `marts run` would do now: every partition that is missing, stale, failed or held, and why."""
    from flows import cli

    plans = _plans(args)
    due = [p for p in plans if p.freshness.value != "fresh"]
    if args.json:
        cli._print_json({"partitions": [p.as_dict() for p in plans],
                         "to_compute": sum(p.to_compute for p in plans), "held": sum(bool(p.held_by) for p in plans)})
        return cli.EXIT_OK
    if due:
        print(cli._table(["mart", "partition", "state", "why", "inputs"],
                         [[p.mart, p.partition, p.freshness.value, p.why, len(p.inputs)] for p in due]))
    print(f"{sum(p.to_compute for p in plans)} to compute, {sum(bool(p.held_by) for p in plans)} held, "
          f"{len(plans) - len(due)} fresh")
    return cli.EXIT_OK


def cmd_marts_run(args: argparse.Namespace) -> int:
    from flows import cli
    from flows.marts import marts_flow

    cli._preflight()
    plans = _plans(args)
    if not any(p.to_compute or p.held_by for p in plans):
        return _nothing_due(args, plans)  # decided from the ledger: no Prefect server is started for it
    state = marts_flow(dataset=args.dataset, mart=args.mart, start=args.start, end=args.end, return_state=True)
    result = state.result(raise_on_failure=False)
    outcomes: list[dict[str, Any]] = result if isinstance(result, list) else []
    if args.json:
        cli._print_json({"outcomes": outcomes, "failed": state.is_failed()})
    elif outcomes:
        print(cli._table(["mart", "partition", "was", "why", "now", "rows", "snapshot"],
                         [[o["mart"], o["partition_key"], o["freshness"], o["error"] or o["why"], o["status"],
                           o["rows"], o["snapshot_id"] or "-"] for o in outcomes]))
        for o in outcomes:
            for check in o["checks"]:
                if check["status"] in ("fail", "warn"):
                    print(f"{o['mart']}/{o['partition_key']}: {check['status'].upper()} {check['name']}: {check['detail']}")
        print("evidence: reports/mart_evidence/<mart>/<partition>/<run>.json (run ids in `marts status --json`)"
              if any(o["evidence"] for o in outcomes) else "")
    else:
        print("every mart partition in range is fresh: nothing to compute")
    bad = state.is_failed() or any(o["status"] in ("held", "failed") for o in outcomes)
    return cli.EXIT_FAILED if bad else cli.EXIT_OK


def _nothing_due(args: argparse.Namespace, plans: list[Any]) -> int:
    """Every partition is fresh (or held as recorded): move markers a crash left behind, regenerate the
    catalog, and say so, without a flow run."""
    from flows import cli
    from schemas.settings import load_settings
    from tasks.catalog import refresh_catalog
    from tasks.database import get_engine
    from tasks.marts import repair_markers

    engine = get_engine(load_settings().database_url)
    lake = cli._lake()
    moved = repair_markers(engine, lake, [p for p in plans if p.freshness.value == "fresh"])
    note = refresh_catalog(engine, lake)
    if args.json:
        cli._print_json({"outcomes": [], "failed": False, "markers_moved": moved, "catalog_note": note})
    else:
        for line in moved + ([note] if note else []):
            print(line)
        print("every mart partition in range is fresh: nothing to compute")
    return cli.EXIT_OK


def cmd_marts_status(args: argparse.Namespace) -> int:
    """Each mart partition: its state in the ledger, whether it is fresh, what it read, its snapshot."""
    from sqlalchemy import select

    from flows import cli
    from flows.marts import plan_marts, selected
    from schemas.tables import mart_partition
    from tasks.database import reading

    _, graph, engine = _graph_and_engine()
    models = selected(graph, args.dataset, args.mart)
    plans = plan_marts(engine, graph, models, args.start, args.end)
    with reading(engine) as conn:
        recorded = {(r.mart, r.partition_key): r for r in conn.execute(select(mart_partition))}
    rows: list[dict[str, Any]] = []
    for plan in plans:
        row = recorded.get((plan.mart, plan.partition))
        rows.append({"mart": plan.mart, "partition_key": plan.partition, "state": row.status if row else None,
                     "freshness": plan.freshness.value, "why": plan.why, "rows": row.rows if row else None,
                     "snapshot_id": row.snapshot_id if row else None, "inputs": len(plan.inputs),
                     "detail": row.detail if row else None, "held_by": json.loads(row.held_by) if row and row.held_by else []})
    if args.json:
        cli._print_json({"marts": [{"name": m.name, "grain": m.grain, "policy": m.policy.value, "path": str(m.path),
                                    "upstreams": [f"{u.name}{u.window}" for u in m.upstreams]} for m in models],
                         "partitions": rows})
    else:
        for model in models:
            print(f"{model.name} ({model.path.name}; grain {model.grain}; reads "
                  + ", ".join(f"{u.name}{u.window}" for u in model.upstreams) + f"; policy {model.policy.value})")
        if rows:
            print(cli._table(["mart", "partition", "state", "fresh", "rows", "inputs", "snapshot", "note"],
                             [[r["mart"], r["partition_key"], r["state"] or "-", r["freshness"], r["rows"], r["inputs"],
                               r["snapshot_id"] or "-", r["detail"] or (r["why"] if r["freshness"] != "fresh" else "")]
                              for r in rows]))
        else:
            print("no mart partitions yet: their upstream partitions have not been committed")
    unhealthy = any(r["state"] in ("held", "failed") or r["freshness"] != "fresh" for r in rows)
    return cli.EXIT_FAILED if unhealthy else cli.EXIT_OK


def cmd_catalog(args: argparse.Namespace) -> int:
    """Where the lake's DuckDB catalog is and how to open it (`--refresh` regenerates it first)."""
    from flows import cli
    from tasks.catalog import catalog_location, install_httpfs, open_command, refresh_catalog

    settings, graph, engine = _graph_and_engine()
    lake = cli._lake()
    if args.refresh:
        note = refresh_catalog(engine, lake)
        if note:
            print(note)
            return cli.EXIT_FAILED
    location = catalog_location(lake)
    if location.startswith("s3://"):
        install_httpfs()
    command = open_command(lake)
    exists = lake.storage.exists("catalog.duckdb")
    if args.json:
        cli._print_json({"catalog": location, "exists": exists, "open": command})
        return cli.EXIT_OK if exists else cli.EXIT_FAILED
    if not exists:
        print(f"no catalog at {location} yet: it is written after the first commit (or run `datafactory catalog --refresh`)")
        return cli.EXIT_FAILED
    print(f"catalog: {location}")
    print(f"open it read-only:\n  {command}")
    print("then e.g.: SELECT * FROM _catalog;  SELECT * FROM <table or mart>_dt('YYYY-MM-DD');")
    return cli.EXIT_OK


def add_parsers(sub: Any, common: argparse.ArgumentParser, dataset: Any, day: Any) -> None:
    marts = sub.add_parser("marts", parents=[common], help="marts: what is stale, recompute it, their state")
    msub = marts.add_subparsers(dest="marts_command", required=True)
    for name, func, text in (
            ("plan", cmd_marts_plan, "what a run would recompute or hold now, and why"),
            ("run", cmd_marts_run, "recompute missing, stale and released mart partitions in dependency order"),
            ("status", cmd_marts_status, "each mart partition: state, freshness, rows, snapshot; exit 1 if any "
                                         "is held, failed or not fresh")):
        command = msub.add_parser(name, parents=[common], help=text)
        which = command.add_mutually_exclusive_group()
        which.add_argument("--dataset", type=dataset, default=None, help="only the marts downstream of this dataset")
        which.add_argument("--mart", default=None, help="only this mart (and the marts it reads)")
        command.add_argument("--start", type=day, default=None, help="first mart partition (default: the first)")
        command.add_argument("--end", type=day, default=None, help="last mart partition (default: the last)")
        command.set_defaults(func=func)

    catalog = sub.add_parser("catalog", parents=[common], help="where the lake's DuckDB catalog is, and how to open it")
    catalog.add_argument("--refresh", action="store_true", help="regenerate it from the ledger first")
    catalog.set_defaults(func=cmd_catalog)


def marts_overview() -> tuple[list[dict[str, Any]], str | None]:
    """Each mart partition as the ledger has it, and the command that opens the catalog (None: no catalog)."""
    from sqlalchemy import select

    from flows import cli
    from schemas.tables import mart_partition
    from tasks.catalog import open_command
    from tasks.database import reading

    settings, _, engine = _graph_and_engine()
    with reading(engine) as conn:
        rows = [{"mart": r.mart, "partition_key": r.partition_key, "status": r.status, "rows": r.rows,
                 "snapshot_id": r.snapshot_id, "detail": r.detail}
                for r in conn.execute(select(mart_partition).order_by(mart_partition.c.mart, mart_partition.c.partition_key))]
    lake = cli._lake()
    command = open_command(lake) \
        if lake.storage.exists("catalog.duckdb") else None
    return rows, command


def print_marts_overview(rows: list[dict[str, Any]], command: str | None) -> None:
    from flows import cli

    if rows:
        print("\nmarts (recomputed after each commit that changed their inputs; `datafactory marts status`)\n")
        print(cli._table(["mart", "partition", "state", "rows", "note"],
                         [[r["mart"], r["partition_key"], r["status"], r["rows"], r["detail"] or ""] for r in rows]))
    if command:
        print(f"\nthe lake's catalog, read-only: {command}")
