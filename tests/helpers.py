"""Test helpers: ingest a partition through the same plain functions the flow's tasks wrap."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import select

from schemas.datasets import get_dataset
from schemas.tables import BRONZE, SILVER, quarantine, silver_table
from tasks.commit import Committed, commit_partition
from tasks.database import get_engine
from tasks.delivery import DEFAULT_CHUNK_BYTES, Delivery
from tasks.lake import Lake
from tasks.ledger import RunIdentity
from tasks.manifests import batch_id_for, partition_manifests, source_fingerprint
from tasks.warehouse import WriteResult

DAYS = [date(2026, 4, 14), date(2026, 4, 16), date(2026, 4, 17)]


def identity(day: date, manifests: list, action: str = "run", partial: bool = False,
             dataset: str = "tickets", reason: str = "operator_request") -> RunIdentity:
    fingerprint = source_fingerprint(manifests)
    return RunIdentity(dataset, day, batch_id_for(dataset, day, fingerprint), "", fingerprint,
                       tuple(m.manifest_id for m in manifests), action, "execute", reason, "test", None,
                       partial=partial)


# Tests read in chunks of this many bytes unless they say otherwise; FACTORY_TEST_CHUNK_BYTES=1 runs the
# suite with every line its own chunk (the write then spans as many chunks as the partition has lines)
TEST_CHUNK_BYTES = int(os.environ.get("FACTORY_TEST_CHUNK_BYTES", DEFAULT_CHUNK_BYTES))


def commit(url: str, manifest_dir: Path, day: date, force: bool = False, dry_run: bool = False,
           before_silver: Callable[[], None] | None = None, manifest_id: str | None = None,
           lake: Lake | None = None, chunk_bytes: int | None = None, dataset: str = "tickets",
           reason: str = "operator_request") -> Committed:
    """Manifests -> read, validate and write chunk by chunk, checks, in one transaction; what the attempt
    did. With `manifest_id`, only that delivery (a replay); with `lake`, the snapshot too."""
    spec = get_dataset(dataset)
    manifests = partition_manifests(manifest_dir, dataset, day)
    if manifest_id is not None:
        manifests = [m for m in manifests if m.manifest_id == manifest_id]
    delivery = Delivery(spec, manifests, manifest_dir, day, chunk_bytes or TEST_CHUNK_BYTES)
    who = identity(day, manifests, "replay" if manifest_id else "run", partial=manifest_id is not None, dataset=dataset,
                   reason=reason)
    return commit_partition(get_engine(url), spec, delivery, who, dry_run=dry_run, force=force,
                            before_silver=before_silver, lake=lake)


def ingest(url: str, manifest_dir: Path, day: date, force: bool = False, dry_run: bool = False,
           before_silver: Callable[[], None] | None = None, manifest_id: str | None = None,
           chunk_bytes: int | None = None, dataset: str = "tickets",
           reason: str = "operator_request") -> tuple[WriteResult, int]:
    """`commit`, reduced to the write counts and the number of rejected records."""
    done = commit(url, manifest_dir, day, force, dry_run, before_silver, manifest_id, chunk_bytes=chunk_bytes,
                  dataset=dataset, reason=reason)
    return done.result, done.rejected


def data_tables(url: str) -> dict[str, list[tuple]]:
    """Full contents of bronze, silver and quarantine (quarantine without its surrogate id), sorted."""
    engine = get_engine(url)
    with engine.connect() as conn:
        bronze = sorted(tuple(r) for r in conn.execute(select(BRONZE["tickets"])))
        silver = sorted(tuple(r) for r in conn.execute(select(SILVER["tickets"])))
        rows = conn.execute(select(*[c for c in quarantine.columns if c.name != "id"])).all()
    return {"bronze": bronze, "silver": silver, "quarantine": sorted(tuple(map(str, r)) for r in rows)}


def all_tables(url: str) -> dict[str, list[tuple]]:
    """Full contents of every factory table, ledger included (what a dry run must leave alone)."""
    from schemas.tables import warehouse_tables

    with get_engine(url).connect() as conn:
        return {table.name: sorted(tuple(map(str, r)) for r in conn.execute(select(table)))
                for table in warehouse_tables()}


def silver_rows(url: str, dataset: str = "tickets") -> dict[str, dict[str, Any]]:
    spec = get_dataset(dataset)
    with get_engine(url).connect() as conn:  # the table as the dataset's contract declares it now
        return {r._mapping[spec.entity_key]: r._asdict() for r in conn.execute(select(silver_table(spec)))}


def quarantine_rows(url: str, dataset: str | None = None) -> list[dict[str, Any]]:
    query = select(quarantine).order_by(quarantine.c.source_uri, quarantine.c.line_number)
    if dataset is not None:
        query = query.where(quarantine.c.dataset == dataset)
    with get_engine(url).connect() as conn:
        return [r._asdict() for r in conn.execute(query)]


def bronze_payload(url: str, event_id: str) -> dict[str, Any]:
    """The raw payload bronze keeps for an event, parsed."""
    table = BRONZE["tickets"]
    with get_engine(url).connect() as conn:
        raw = conn.execute(select(table.c._raw_payload).where(table.c.event_id == event_id)).scalar_one()
    return json.loads(raw)


def fail_the_write(monkeypatch: Any, fault: Callable[[], Exception], times: int | None = None) -> None:
    """Make partition_flow's write raise `fault()` (the first `times` calls, or always), without retry waits."""
    import flows.partition as partition_module
    from tasks import commit as commit_module
    from tasks import materialize

    real = commit_module.write_partition
    calls = {"n": 0}

    def faulty(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if times is None or calls["n"] <= times:
            raise fault()
        return real(*args, **kwargs)

    monkeypatch.setattr(commit_module, "write_partition", faulty)
    monkeypatch.setattr(partition_module, "commit_partition_task",
                        materialize.commit_partition_task.with_options(retry_delay_seconds=0))


def restore(url: str, lake: Lake, day: date, snapshot_id: str) -> Committed:
    """Restore a partition to a snapshot through the plain functions restore_flow's task wraps."""
    from tasks.restore import restore_identity, restore_partition, restore_target

    engine = get_engine(url)
    record = restore_target(engine, lake, "tickets", day, snapshot_id)
    who = restore_identity(engine, "tickets", day, record, "untrusted_state", "test", None)
    return restore_partition(engine, lake, get_dataset("tickets"), who, record)


QUIET = {"PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
         "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}


def cli(monkeypatch: Any, capsys: Any, workspace: Path, *args: str,
        env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`datafactory ARGS` in this process (the same `main` the console script calls), on the workspace:
    (exit code, stdout, stderr). For what fails before any flow runs; tests/test_cli.py runs the
    command as a subprocess where the process itself matters."""
    from flows.cli import main

    for name, value in QUIET.items():  # main sets these when unset; keep them test-local
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FACTORY_MANIFEST_DIR", str(workspace / "manifests"))
    monkeypatch.setenv("FACTORY_DATABASE_URL", f"sqlite:///{workspace / 'warehouse.db'}")
    monkeypatch.setenv("FACTORY_REPORT_DIR", str(workspace / "reports"))
    monkeypatch.setenv("FACTORY_LAKE_URL", str(workspace / "lake"))
    monkeypatch.setenv("FACTORY_DEFAULT_DATASET", "tickets")  # most tests speak of tickets; orders name it
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def commit_with_evidence(url: str, manifest_dir: Path, day: date, lake: Lake, report_dir: Path,
                         force: bool = False) -> Committed:
    """`commit`, then the run's evidence file, as partition_flow leaves it (without Prefect)."""
    from datetime import datetime, timezone

    from flows.handover import decide_downstream
    from flows.partition import _counted
    from tasks.evidence import RunContext, build_evidence, write_evidence

    started = datetime.now(timezone.utc)
    done = commit(url, manifest_dir, day, force=force, lake=lake)
    summary = _counted(done, False)
    summary = summary.model_copy(update={"downstream": decide_downstream(summary)})
    ctx = RunContext(spec=get_dataset("tickets"), manifests=partition_manifests(manifest_dir, "tickets", day),
                     started_at=started)
    write_evidence(report_dir, build_evidence(summary, ctx, datetime.now(timezone.utc)))
    return done


def client_call(call: Any) -> Any:
    """Await `call(client)` with a Prefect client of the current API (the test harness's)."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def run() -> Any:
        async with get_client() as client:
            return await call(client)

    return asyncio.run(run())
