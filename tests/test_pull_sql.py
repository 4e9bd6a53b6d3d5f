"""Pulling an SQL table (SqlSource) into `customers`: a row committed late with an older `updated_at` is
ingested by the next pull (two PostgreSQL connections), a failed pull resumes after its last landed page
(keyset), the compare-and-set cursor refuses stale and backward moves, and any interleaving of source
writes and pulls ends in the oracle's state with a cursor that never went backwards."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import DateTime, bindparam, create_engine, text

from flows.pull import pull_flow
from schemas.datasets import DATASETS
from schemas.sources import SqlSource
from tasks import cursor
from tasks.database import get_engine, reading
from tests.conftest import _drop_pg_database, _new_pg_database, sqlite_only
from tests.faults import Injected, inject
from tests.pull_helpers import count, customer, expected_silver, silver_state

pytestmark = pytest.mark.flow

TABLE = """CREATE TABLE crm_customer (customer_id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, tier TEXT NOT NULL,
           country TEXT NOT NULL, updated_at TIMESTAMP WITH TIME ZONE NOT NULL)"""
SQLITE_TABLE = TABLE.replace("TIMESTAMP WITH TIME ZONE", "TIMESTAMP")  # SQLite: as SQLAlchemy's DateTime writes it
UPSERT = text("""INSERT INTO crm_customer VALUES (:customer_id, :name, :email, :tier, :country, :updated_at)
                 ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name, tier = excluded.tier,
                 updated_at = excluded.updated_at""").bindparams(bindparam("updated_at", type_=DateTime(timezone=True)))


def _row(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "updated_at": datetime.fromisoformat(record["updated_at"].replace("Z", "+00:00"))}


def _declare(monkeypatch: pytest.MonkeyPatch, url: str, page_size: int = 2) -> None:
    monkeypatch.setitem(DATASETS, "customers", replace(DATASETS["customers"], source=SqlSource(
        url=url, table="crm_customer", cursor_field="updated_at", key_field="customer_id",
        event_key_from=("customer_id", "updated_at"), lookback=timedelta(hours=1), page_size=page_size)))


@pytest.fixture
def pg_source(pg_cluster: Any) -> Iterator[str]:
    """A CRM's database on the real PostgreSQL cluster, with its customer table."""
    name, url = _new_pg_database(pg_cluster)
    with psycopg.connect(host="127.0.0.1", port=pg_cluster.port, user="postgres", dbname=name, autocommit=True) as conn:
        conn.execute(TABLE)
    try:
        yield url
    finally:
        _drop_pg_database(pg_cluster, name)


@pytest.fixture
def landing(factory_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FACTORY_LANDING_DIR", str(tmp_path / "landing"))
    return factory_env


FIRST = [customer(n, f"2026-04-17T0{7 + n // 2}:{(n % 2) * 30:02d}:00Z") for n in range(1, 6)]


@pytest.mark.parametrize("warehouse_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_row_committed_late_with_an_older_updated_at_is_ingested_by_the_next_pull(
        pg_source: str, landing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _declare(monkeypatch, pg_source)
    source = create_engine(pg_source)
    with source.begin() as conn:
        conn.execute(UPSERT, [_row(r) for r in FIRST])
    late = customer(6, "2026-04-17T09:10:00Z")  # stamped before the newest row, committed after the pull
    writer = source.connect()
    writer.begin()
    writer.execute(UPSERT, _row(late))  # open: not in the pull's snapshot
    first = pull_flow(dataset="customers")
    assert first.records == 5 and "CUST-000006" not in silver_state(landing)
    writer.commit()
    writer.close()
    second = pull_flow(dataset="customers")
    assert (second.records, second.already_ingested) == (1, 3)  # the lookback re-read three rows bronze holds
    assert silver_state(landing) == expected_silver([*FIRST, late])
    assert first.cursor_after == second.cursor_after == "(2026-04-17T09:30:00Z, CUST-000005)"  # never backwards
    source.dispose()


@pytest.mark.parametrize("warehouse_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_table_of_naive_utc_times_on_a_server_in_another_time_zone_loses_nothing(
        pg_source: str, landing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`timestamp without time zone` holding UTC (as Rails and Django write it) on a server whose TimeZone is
    Berlin, and a uuid column JSON has no type for: the window is read in UTC and every row arrives."""
    naive = text(UPSERT.text).bindparams(bindparam("updated_at", type_=DateTime()))

    def utc_naive(record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "updated_at": _row(record)["updated_at"].replace(tzinfo=None)}

    source = create_engine(pg_source)
    with source.begin() as conn:
        conn.execute(text(f"ALTER DATABASE {pg_source.rsplit('/', 1)[1]} SET timezone TO 'Europe/Berlin'"))
        conn.execute(text("DROP TABLE crm_customer"))
        conn.execute(text(SQLITE_TABLE.replace("updated_at TIMESTAMP NOT NULL", "updated_at TIMESTAMP NOT NULL, "
                                               "external_id UUID DEFAULT gen_random_uuid()")))
        conn.execute(naive, [utc_naive(r) for r in FIRST])
    _declare(monkeypatch, pg_source)
    pull_flow(dataset="customers")
    late = customer(6, "2026-04-17T09:10:00Z")  # inside the lookback: lost if the window were read in Berlin time
    with source.begin() as conn:
        conn.execute(naive, utc_naive(late))
    source.dispose()
    pull_flow(dataset="customers")
    assert silver_state(landing) == expected_silver([*FIRST, late])


@sqlite_only
def test_a_failed_sql_pull_resumes_after_its_last_landed_page(landing: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    with create_engine(url).begin() as conn:
        conn.execute(text(SQLITE_TABLE))
        conn.execute(UPSERT, [_row(r) for r in FIRST])
    _declare(monkeypatch, url)
    with monkeypatch.context() as patch:
        inject(patch, "tasks.pull_ledger:record_page:after:2")
        with pytest.raises(Injected):
            pull_flow(dataset="customers")
    assert count(landing, "SELECT COUNT(*) FROM pull_page") == 2
    summary = pull_flow(dataset="customers")
    assert summary.resumed and (summary.pages, summary.records) == (3, 5)
    assert count(landing, "SELECT COUNT(*) FROM raw_customer_version") == 5
    assert silver_state(landing) == expected_silver(FIRST)


@pytest.mark.parametrize("warehouse_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_the_cursor_moves_only_forward_and_only_from_the_value_it_was_read_at(warehouse_url: str) -> None:
    engine = get_engine(warehouse_url)
    at = datetime(2026, 4, 17, 10, tzinfo=timezone.utc)
    window = (at - timedelta(hours=1), at)
    first, second = cursor.CursorValue(at, "CUST-000002"), cursor.CursorValue(at, "CUST-000003")
    with engine.begin() as conn:
        cursor.advance(conn, "customers", "default", None, first, window, "run-1", None, at)
    with pytest.raises(cursor.CursorBackwardsError), engine.begin() as conn:
        cursor.advance(conn, "customers", "default", first, cursor.CursorValue(at, "CUST-000001"), window, "run-2", None, at)
    with engine.begin() as conn:
        cursor.advance(conn, "customers", "default", first, second, window, "run-3", None, at)
    with pytest.raises(cursor.CursorMovedError), engine.begin() as conn:  # read `first`, lost the race to run-3
        cursor.advance(conn, "customers", "default", first, cursor.CursorValue(at + timedelta(1), "X"), window,
                       "run-4", None, at)
    with reading(engine) as conn:
        events = cursor.timeline(conn, "customers", "default")
        assert [e["run_id"] for e in events] == ["run-1", "run-3"]  # refused moves left no event
        assert cursor.current(conn, "customers", "default") == cursor.rebuild_from_events(events) == second


# --- any interleaving of source writes and pulls ----------------------------------------------------

BASE = datetime(2026, 4, 17, tzinfo=timezone.utc)
STEP = timedelta(minutes=10)  # the lookback is six steps


def _moment(step: int) -> str:
    return (BASE + step * STEP).strftime("%Y-%m-%dT%H:%M:%SZ")


@st.composite
def histories(draw: Any) -> list[tuple[str, int, int]]:
    """Writes (customer, step) and pulls; a write is stamped at most five steps before the newest stamp so
    far: a late commit, but inside the lookback (a later one is outside what any pull promises)."""
    ops: list[tuple[str, int, int]] = []
    newest = 0
    pulls = 0
    for _ in range(draw(st.integers(3, 9))):
        if pulls < 2 and draw(st.booleans()) and ops:
            ops.append(("pull", 0, 0))
            pulls += 1
            continue
        step = draw(st.integers(max(0, newest - 5), newest + 3))
        newest = max(newest, step)
        ops.append(("write", draw(st.integers(1, 4)), step))
    return ops


@sqlite_only
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories(), tier=st.sampled_from(["free", "pro", "enterprise"]))
def test_any_interleaving_of_writes_and_pulls_ends_in_the_oracles_state(
        landing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, history: list[tuple[str, int, int]],
        tier: str) -> None:
    case = tmp_path / uuid.uuid4().hex[:8]
    case.mkdir()
    warehouse, url = f"sqlite:///{case / 'warehouse.db'}", f"sqlite:///{case / 'crm.db'}"
    monkeypatch.setenv("FACTORY_DATABASE_URL", warehouse)
    monkeypatch.setenv("FACTORY_LANDING_DIR", str(case / "landing"))
    monkeypatch.setenv("FACTORY_LAKE_URL", str(case / "lake"))
    source = create_engine(url)
    with source.begin() as conn:
        conn.execute(text(SQLITE_TABLE))
    _declare(monkeypatch, url)
    seen: list[dict[str, Any]] = []  # the versions some pull could read (the table at each pull)
    cursors: list[cursor.CursorValue | None] = []

    def pull() -> None:
        with source.connect() as conn:
            rows = conn.execute(text("SELECT customer_id, name, email, tier, country, updated_at FROM crm_customer"))
            seen.extend(customer(int(r.customer_id[5:]), _utc_text(r.updated_at), tier=r.tier) for r in rows)
        pull_flow(dataset="customers")
        with reading(get_engine(warehouse)) as conn:
            cursors.append(cursor.current(conn, "customers", "default"))

    for op, who, step in [*history, ("pull", 0, 0)]:
        if op == "pull":
            pull()
        else:
            with source.begin() as conn:
                conn.execute(UPSERT, _row(customer(who, _moment(step), tier=tier)))
    assert silver_state(warehouse) == expected_silver(seen)
    moved = [c for c in cursors if c is not None]
    assert moved == sorted(moved)  # never backwards
    with reading(get_engine(warehouse)) as conn:
        assert cursor.rebuild_from_events(cursor.timeline(conn, "customers", "default")) == (moved[-1] if moved else None)
    source.dispose()


def _utc_text(value: Any) -> str:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


