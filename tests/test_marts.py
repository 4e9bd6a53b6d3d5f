"""Marts: recomputed exactly when the snapshots they read change, held while an input is held, in
dependency order, through the flows users run (partition_flow, restore_flow, marts_flow)."""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text

from flows.marts import marts_flow
from flows.partition import run_partition, summary_of
from flows.restore import restore_flow
from schemas.settings import load_settings
from schemas.tables import lake_current, mart_input, mart_partition, mart_run
from tasks.database import get_engine
from tasks.lake import open_lake
from tasks.generate import write_manifest
from tests.faults import Injected, inject
from tests.helpers import DAYS, commit

D14, D16, D17 = DAYS
D18 = date(2026, 4, 18)
pytestmark = [pytest.mark.flow, pytest.mark.marts]
sqlite_only = pytest.mark.parametrize("warehouse_url", ["sqlite"], indirect=True)  # the logic, not the database

# one mart per kind of window, and one reading another mart
MODELS = {
    "same_day": """-- grain: dt
-- upstream: tickets
-- check: error unique(dt, priority)
SELECT $dt AS dt, priority, count(DISTINCT ticket_id) AS tickets FROM tickets GROUP BY priority""",
    "two_days": """-- grain: dt
-- upstream: tickets[-1:0]
SELECT $dt AS dt, count(DISTINCT event_id) AS events, count(DISTINCT _snapshot_id) AS snapshots FROM tickets""",
    "to_date": """-- grain: dt
-- upstream: tickets[all:0]
SELECT $dt AS dt, count(DISTINCT ticket_id) AS tickets_known FROM tickets""",
    "on_two_days": """-- grain: dt
-- upstream: two_days
SELECT dt, events * 2 AS doubled FROM two_days""",
    "last_good": """-- grain: dt
-- upstream: tickets
-- policy: refresh
SELECT $dt AS dt, count(*) AS events FROM tickets""",
}


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "marts"
    folder.mkdir()
    for name, sql in MODELS.items():
        (folder / f"{name}.sql").write_text(sql + "\n")
    monkeypatch.setenv("FACTORY_MARTS_DIR", str(folder))
    return folder


def _runs(url: str) -> Counter[tuple[str, str, str]]:
    """(mart, partition, status) of every mart computation so far."""
    with get_engine(url).connect() as conn:
        return Counter((r.mart, r.partition_key, r.status) for r in conn.execute(select(mart_run)))


def _state(url: str) -> dict[tuple[str, str], str]:
    with get_engine(url).connect() as conn:
        return {(r.mart, r.partition_key): r.status for r in conn.execute(select(mart_partition))}


def _gold(url: str, mart: str) -> list[tuple]:
    with get_engine(url).connect() as conn:
        return [tuple(r) for r in conn.execute(text(f'SELECT * FROM "{mart}" ORDER BY 1, 2'))]


def _ingest_samples() -> None:
    """The sample days committed (the plain functions partition_flow's tasks wrap), then one marts run: the
    starting state; what a test then does goes through the flows."""
    lake = open_lake(load_settings())
    for day in DAYS:
        commit(os.environ["FACTORY_DATABASE_URL"], Path(os.environ["FACTORY_MANIFEST_DIR"]), day, lake=lake)
    marts_flow()


def test_a_restated_partition_recomputes_exactly_the_mart_partitions_that_read_it(factory_env: str, models: Path) -> None:
    _ingest_samples()
    before = _runs(factory_env)
    run_partition(dataset="tickets", partition_key=D16, force=True)  # a new snapshot of 04-16
    recomputed = _runs(factory_env) - before
    assert recomputed == Counter({
        ("same_day", "2026-04-16", "succeeded"): 1, ("last_good", "2026-04-16", "succeeded"): 1,
        ("two_days", "2026-04-16", "succeeded"): 1, ("two_days", "2026-04-17", "succeeded"): 1,  # [-1:0] reads it
        ("to_date", "2026-04-16", "succeeded"): 1, ("to_date", "2026-04-17", "succeeded"): 1,
        ("on_two_days", "2026-04-16", "succeeded"): 1, ("on_two_days", "2026-04-17", "succeeded"): 1,
    })


@sqlite_only
def test_restoring_an_old_snapshot_recomputes_its_marts_from_that_snapshot(factory_env: str, models: Path) -> None:
    _ingest_samples()
    with get_engine(factory_env).connect() as conn:
        first = conn.execute(select(lake_current.c.snapshot_id).where(
            (lake_current.c.dataset == "tickets") & (lake_current.c.partition_key == "2026-04-16"))).scalar_one()
    gold_before = _gold(factory_env, "to_date")
    run_partition(dataset="tickets", partition_key=D16, force=True)
    before = _runs(factory_env)
    summary_of(restore_flow(dataset="tickets", partition_key=D16, snapshot_id=first, return_state=True))
    assert {(m, p) for m, p, _ in _runs(factory_env) - before} == {
        ("same_day", "2026-04-16"), ("last_good", "2026-04-16"), ("two_days", "2026-04-16"), ("two_days", "2026-04-17"),
        ("to_date", "2026-04-16"), ("to_date", "2026-04-17"), ("on_two_days", "2026-04-16"), ("on_two_days", "2026-04-17")}
    with get_engine(factory_env).connect() as conn:
        read = {(r.upstream, r.upstream_partition, r.snapshot_id) for r in conn.execute(
            select(mart_input).where((mart_input.c.mart == "to_date") & (mart_input.c.partition_key == "2026-04-17")))}
    assert ("tickets", "2026-04-16", first) in read and len(read) == 3  # 04-14, the restored 04-16, 04-17
    assert _gold(factory_env, "to_date") == gold_before


@sqlite_only
def test_marts_run_after_commits_in_any_order_equal_marts_run_once_at_the_end(factory_env: str, models: Path) -> None:
    for day in (D17, D14, D16):  # each commit makes the later days' window marts stale
        run_partition(dataset="tickets", partition_key=day)
    in_any_order = {m: _gold(factory_env, m) for m in MODELS}
    with get_engine(factory_env).begin() as conn:
        conn.execute(text("DELETE FROM mart_partition"))
        conn.execute(text("DELETE FROM mart_input"))
    marts_flow()
    assert {m: _gold(factory_env, m) for m in MODELS} == in_any_order
    assert in_any_order["to_date"][-1][1] > in_any_order["to_date"][0][1]


def _bad_delivery(root: Path, day: date, manifest_id: str, valid: int, invalid: int) -> Path:
    """`valid` events dated `day`, then `invalid` with an unknown priority (a quarantine ratio that holds)."""
    stamp = f"{day.isoformat()}T09:00:00Z"
    events = [{"event_id": f"{manifest_id}-{n}", "ticket_id": f"TCK-{900000 + n}", "event_type": "created",
               "created_at": stamp, "updated_at": stamp, "status": "new",
               "priority": "normal" if n < valid else "critical", "channel": "email", "customer_id": "C",
               "subject": "s", "body": "b", "product_line": None, "tags": []} for n in range(valid + invalid)]
    source = root / "sources" / f"{manifest_id}.jsonl"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("".join(json.dumps(e) + "\n" for e in events))
    return write_manifest(root, manifest_id, "tickets", day, datetime(2026, 4, 18, 23, tzinfo=timezone.utc), [source])


def test_a_held_partition_holds_its_marts_and_its_release_recomputes_them(factory_env: str, models: Path,
                                                                            sample_dir: Path) -> None:
    _ingest_samples()
    _bad_delivery(sample_dir, D18, "good-18", valid=3, invalid=0)
    run_partition(dataset="tickets", partition_key=D18)
    computed = _gold(factory_env, "same_day")
    bad = _bad_delivery(sample_dir, D18, "bad-18", valid=0, invalid=9)
    assert run_partition(dataset="tickets", partition_key=D18).status == "held"
    state = _state(factory_env)
    assert {m: state[(m, "2026-04-18")] for m in MODELS} == {
        "same_day": "held", "two_days": "held", "to_date": "held", "on_two_days": "held",  # through two_days
        "last_good": "succeeded"}  # policy refresh: it keeps reading the last good snapshot
    assert _gold(factory_env, "same_day") == computed  # held: the last good rows stay
    assert state[("two_days", "2026-04-17")] == "succeeded"  # 04-17's window does not reach 04-18
    bad.unlink()
    before = _runs(factory_env)
    assert run_partition(dataset="tickets", partition_key=D18).status == "succeeded"  # released
    assert {m for m, p, s in _runs(factory_env) - before if p == "2026-04-18" and s == "succeeded"} == {
        "same_day", "two_days", "to_date", "on_two_days", "last_good"}
    assert set(_state(factory_env).values()) == {"succeeded"}


@sqlite_only
def test_a_failed_rerun_of_a_held_partition_does_not_release_its_marts(factory_env: str, models: Path,
                                                                        sample_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _ingest_samples()
    _bad_delivery(sample_dir, D18, "bad-18", valid=1, invalid=9)
    assert run_partition(dataset="tickets", partition_key=D18).status == "held"
    with monkeypatch.context() as patch:
        inject(patch, "tasks.commit:write_partition:before")
        with pytest.raises(Injected):
            run_partition(dataset="tickets", partition_key=D18, force=True)  # the state is `failed` now
    marts_flow()
    assert _state(factory_env)[("same_day", "2026-04-18")] == "held"  # the held snapshot is still current


def test_a_model_whose_columns_change_recomputes_every_partition_into_the_new_table(factory_env: str,
                                                                                     models: Path) -> None:
    _ingest_samples()
    (models / "same_day.sql").write_text(MODELS["same_day"].replace("AS tickets FROM", "AS tickets, 1 AS version FROM"))
    before = _runs(factory_env)
    marts_flow()
    assert {p for m, p, _ in _runs(factory_env) - before if m == "same_day"} == {"2026-04-14", "2026-04-16", "2026-04-17"}
    assert {str(row[0]) for row in _gold(factory_env, "same_day")} == {d.isoformat() for d in DAYS}
    assert {row[-1] for row in _gold(factory_env, "same_day")} == {1}


@sqlite_only
def test_a_backfill_plans_the_marts_it_makes_stale_and_computes_each_once(factory_env: str, models: Path) -> None:
    from flows.backfill import backfill_flow

    summary = backfill_flow(dataset="tickets", start=D14, end=D17, mode="execute")
    plan = json.loads(Path(summary.plan_path).read_text())
    [entry] = [e for e in plan["entries"] if e["partition_key"] == "2026-04-16"]
    assert {m["mart"]: (m["from"], m["to"]) for m in entry["stale_marts"]} == {
        "same_day": ("2026-04-16", "2026-04-16"), "last_good": ("2026-04-16", "2026-04-16"),
        "two_days": ("2026-04-16", "2026-04-17"), "on_two_days": ("2026-04-16", "2026-04-17"),
        "to_date": ("2026-04-16", None)}
    runs = _runs(factory_env)  # once, when the window's partitions are all in: not after each of them
    assert set(runs.values()) == {1}
    assert {(m, p) for m, p, _ in runs} == {(m, d.isoformat()) for m in MODELS for d in DAYS}
