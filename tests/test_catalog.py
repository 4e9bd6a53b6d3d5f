"""The lake's catalog (`{lake}/catalog.duckdb`): analysts query committed data by name, read-only."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import pytest
from sqlalchemy import select

from flows.partition import run_partition
from schemas.settings import load_settings
from schemas.tables import lake_current, silver_table
from schemas.datasets import get_dataset
from tasks.catalog import catalog_location, install_httpfs, open_command, refresh_catalog
from tasks.database import get_engine
from tasks.lake import Lake, open_lake
from tasks.storage import open_storage
from tests.faults import Injected, inject
from tests.helpers import DAYS, cli, commit

D14, D16, D17 = DAYS
D18, D19 = date(2026, 4, 18), date(2026, 4, 19)
pytestmark = [pytest.mark.flow, pytest.mark.marts]
sqlite_only = pytest.mark.parametrize("warehouse_url", ["sqlite"], indirect=True)  # the catalog, not the database


def _query(sql: str) -> list[tuple]:
    with duckdb.connect(catalog_location(open_lake(load_settings())), read_only=True) as con:
        return con.execute(sql).fetchall()


def _current(url: str, name: str, day: date) -> str:
    with get_engine(url).connect() as conn:
        return conn.execute(select(lake_current.c.snapshot_id).where(
            (lake_current.c.dataset == name) & (lake_current.c.partition_key == day.isoformat()))).scalar_one()


def _committed(url: str, sample_dir: Path, days: tuple[date, ...] = tuple(DAYS)) -> None:
    """Days committed through the plain functions, then a marts run (which regenerates the catalog)."""
    from flows.marts import marts_flow

    lake = open_lake(load_settings())
    for day in days:
        commit(url, sample_dir, day, lake=lake)
    marts_flow()


@sqlite_only
def test_the_catalog_names_every_committed_table_and_mart(factory_env: str) -> None:
    for day in DAYS:  # through partition_flow: its commit regenerates the catalog
        run_partition(dataset="tickets", partition_key=day)
    assert _query("SELECT partition_key, snapshot_id FROM _catalog WHERE table_name = 'tickets' ORDER BY 1") == [
        (day, _current(factory_env, "tickets", day)) for day in DAYS]
    assert _query("SELECT DISTINCT _snapshot_id FROM tickets_dt('2026-04-16')") == [(_current(factory_env, "tickets", D16),)]
    assert _query("SELECT count(*) FROM ticket_daily_metrics")[0][0] > 0
    assert _query("SELECT DISTINCT dt FROM ticket_sla_breaches_dt('2026-04-17')") in ([(D17,)], [])


def test_silver_from_the_catalog_equals_the_warehouses_silver(factory_env: str, sample_dir: Path) -> None:
    # a conflicting version delivered later but committed first: bronze keeps the first delivery's, so must the view
    from tests.test_marts import _bad_delivery

    first, later = _bad_delivery(sample_dir, D18, "first-18", 1, 0), _bad_delivery(sample_dir, D19, "later-19", 1, 0)
    later_source = sample_dir / "sources" / "later-19.jsonl"
    later_source.write_text(later_source.read_text().replace("later-19-0", "first-18-0").replace('"new"', '"solved"')
                            .replace("2026-04-19T09", "2026-04-19T10"))
    from tasks.generate import write_manifest

    write_manifest(sample_dir, "later-19", "tickets", D19, datetime(2026, 4, 19, 23, tzinfo=timezone.utc), [later_source])
    _committed(factory_env, sample_dir, (D19, *DAYS, D18))
    table = silver_table(get_dataset("tickets"))
    with get_engine(factory_env).connect() as conn:
        silver = sorted(conn.execute(select(table.c.ticket_id, table.c.last_event_id, table.c.status)).all())
    assert _query("SELECT ticket_id, last_event_id, status FROM ticket_fact ORDER BY 1") == [tuple(r) for r in silver]
    as_of_14 = _query("SELECT count(*) FROM ticket_fact_dt('2026-04-14')")[0][0]
    assert 0 < as_of_14 < len(silver)


@sqlite_only
def test_an_older_snapshot_stays_queryable_by_its_id(factory_env: str) -> None:
    run_partition(dataset="tickets", partition_key=D17)
    first = _current(factory_env, "tickets", D17)
    rows = _query("SELECT count(*) FROM tickets_dt('2026-04-17')")[0][0]
    run_partition(dataset="tickets", partition_key=D17, force=True)
    assert _current(factory_env, "tickets", D17) != first
    assert _query(f"SELECT count(*), min(_snapshot_id) FROM tickets_snapshot('2026-04-17', '{first}')") == [(rows, first)]


@sqlite_only
def test_a_crash_mid_commit_leaves_the_catalog_on_the_committed_snapshot(factory_env: str, sample_dir: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    lake, engine = open_lake(settings), get_engine(factory_env)
    commit(factory_env, sample_dir, D17, lake=lake)
    committed = _current(factory_env, "tickets", D17)
    with monkeypatch.context() as patch:
        inject(patch, "tasks.commit:ledger.record_snapshot:after")  # staged and recorded, never committed
        with pytest.raises(Injected):
            commit(factory_env, sample_dir, D17, force=True, lake=lake)
    staged = {k.split("/")[3] for k in lake.storage.list("tickets/dt=2026-04-17/data", partial=True)}
    assert len(staged) == 2  # the crashed commit's files are in the lake folder
    assert refresh_catalog(engine, lake) is None
    assert _query("SELECT DISTINCT _snapshot_id FROM tickets") == [(committed,)]
    assert _query("SELECT count(*) FROM _catalog") == [(1,)]


@sqlite_only
def test_a_catalog_refresh_replaces_the_file_whole(factory_env: str, sample_dir: Path) -> None:
    settings = load_settings()
    lake, engine = open_lake(settings), get_engine(factory_env)
    commit(factory_env, sample_dir, D14, lake=lake)
    refresh_catalog(engine, lake)
    reader = duckdb.connect(catalog_location(lake), read_only=True)  # an analyst's open session
    commit(factory_env, sample_dir, D16, lake=lake)
    assert refresh_catalog(engine, lake) is None
    assert reader.execute("SELECT count(*) FROM _catalog").fetchone() == (1,)  # the open session keeps the old file
    reader.close()
    assert _query("SELECT count(*) FROM _catalog") == [(2,)]
    assert [p.name for p in Path(lake.storage.url).iterdir() if p.name.startswith(".")] == []


@pytest.mark.s3
@sqlite_only
def test_on_s3_the_catalog_opens_read_only_over_httpfs(factory_env: str, s3_bucket_url: str, sample_dir: Path,
                                                       s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    from urllib.parse import urlsplit

    monkeypatch.setenv("FACTORY_LAKE_URL", s3_bucket_url)
    for day in (D14, D16):
        run_partition(dataset="tickets", partition_key=day)
    install_httpfs()
    with duckdb.connect() as con:
        con.execute("LOAD httpfs")
        con.execute(f"CREATE SECRET (TYPE s3, KEY_ID '{os.environ['AWS_ACCESS_KEY_ID']}', "
                    f"SECRET '{os.environ['AWS_SECRET_ACCESS_KEY']}', REGION 'us-east-1', "
                    f"ENDPOINT '{urlsplit(s3_endpoint).netloc}', URL_STYLE 'path', USE_SSL false)")
        con.execute(f"ATTACH '{s3_bucket_url}/catalog.duckdb' AS lake (READ_ONLY); USE lake")  # as `catalog` prints
        assert con.execute("SELECT count(DISTINCT dt) FROM tickets").fetchone() == (2,)
        assert con.execute("SELECT count(*) FROM ticket_daily_metrics_dt('2026-04-16')").fetchone()[0] > 0
    import shlex
    import subprocess

    command = shlex.split(open_command(open_lake(load_settings()))) + ["-csv", "-c", "SELECT count(*) AS n FROM _catalog WHERE table_name = 'tickets'"]
    opened = subprocess.run(command, capture_output=True, text=True, timeout=60)  # the shell an analyst runs
    assert (opened.returncode, opened.stdout.split()[-2:]) == (0, ["n", "2"]), opened.stderr


def _printed_command(out: str) -> str:
    return next(line.strip() for line in out.splitlines() if "duckdb" in line and ("-readonly" in line or "-cmd" in line))


def test_the_command_catalog_prints_opens_it_read_only(sample_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    import shlex
    import subprocess

    workspace = sample_dir.parent
    lake = Lake(open_storage(str(workspace / "lake")))
    commit(f"sqlite:///{workspace / 'warehouse.db'}", sample_dir, D14, lake=lake)
    code, out, _ = cli(monkeypatch, capsys, workspace, "catalog", "--refresh")
    assert code == 0, out
    command = shlex.split(_printed_command(out)) + ["-csv", "-c", "SELECT count(DISTINCT dt) AS days FROM tickets"]
    opened = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert (opened.returncode, opened.stdout.split()) == (0, ["days", "1"]), opened.stderr
    written = subprocess.run(command[:-1] + ["CREATE TABLE x (a INT)"], capture_output=True, text=True, timeout=60)
    assert written.returncode != 0 and "read-only" in written.stderr
