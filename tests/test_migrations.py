"""The factory's own tables carry a revision: a warehouse made by release 0.1 is upgraded (SQLite by
itself, PostgreSQL by `datafactory db upgrade`, never behind the operator's back), a newer one refused."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text

from tasks import migrations
from tasks.database import get_engine, open_engine
from tasks.errors import SchemaMismatchError
from tests.helpers import cli, ingest

RELEASE_0_1 = Path(__file__).parent / "data"
D14 = date(2026, 4, 14)


def _release_0_1_warehouse(url: str) -> None:
    """The tables release 0.1 created (its DDL, frozen in tests/data), with one run in its ledger."""
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    ddl = (RELEASE_0_1 / f"release_0_1.{dialect}.sql").read_text()
    engine = open_engine(url)
    with engine.begin() as conn:
        for statement in ddl.split(";\n"):
            if "CREATE" in statement:
                conn.exec_driver_sql(statement)
        conn.execute(text("INSERT INTO ingest_batch VALUES ('b-0.1', 'tickets', '2026-04-01', 'f', '[]', "
                          "'2026-04-01 00:00:00+00:00')"))
        conn.execute(text("INSERT INTO ingest_run (run_id, batch_id, dataset, partition_key, attempt, action, mode, "
                          "reason_code, status, started_at, heartbeat_at) VALUES ('r-0.1', 'b-0.1', 'tickets', "
                          "'2026-04-01', 1, 'run', 'execute', 'operator_request', 'succeeded', "
                          "'2026-04-01 00:00:00+00:00', '2026-04-01 00:00:00+00:00')"))
    engine.dispose()


def _revision(url: str) -> str | None:
    engine = open_engine(url)
    with engine.connect() as conn:
        revision = migrations.recorded_revision(conn)
        recorded = conn.dialect.has_table(conn, migrations.VERSION_TABLE)
    engine.dispose()
    return revision if recorded else None


def test_a_new_warehouse_is_created_at_the_codes_revision(warehouse_url: str) -> None:
    get_engine(warehouse_url)
    assert _revision(warehouse_url) == migrations.head_revision() == "0004"


@pytest.mark.parametrize("warehouse_url", ["sqlite"], indirect=True)
def test_a_release_0_1_sqlite_warehouse_upgrades_itself_and_keeps_its_ledger(warehouse_url: str,
                                                                             sample_dir: Path) -> None:
    _release_0_1_warehouse(warehouse_url)
    assert _revision(warehouse_url) is None  # release 0.1 recorded none
    ingest(warehouse_url, sample_dir, D14)  # the first command upgrades, then runs
    assert _revision(warehouse_url) == "0004"
    with get_engine(warehouse_url).connect() as conn:
        runs = conn.execute(text("SELECT run_id FROM ingest_run ORDER BY run_id")).scalars().all()
        assert conn.execute(text("SELECT COUNT(*) FROM schema_change")).scalar_one() == 0
    assert runs[-1] == "r-0.1" and len(runs) == 2


@pytest.mark.postgres
@pytest.mark.parametrize("warehouse_url", ["postgres"], indirect=True)
def test_a_release_0_1_postgresql_warehouse_is_refused_until_db_upgrade(warehouse_url: str, sample_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture) -> None:
    _release_0_1_warehouse(warehouse_url)
    workspace = sample_dir.parent
    env = {"FACTORY_DATABASE_URL": warehouse_url}
    code, _, err = cli(monkeypatch, capsys, workspace, "status", env=env)
    assert code == 2
    assert err.strip().endswith("the warehouse's factory tables are at revision 0001, this code needs 0004: run "
                                "`datafactory db upgrade` (nothing was changed)")
    assert _revision(warehouse_url) is None  # nothing was changed
    code, out, _ = cli(monkeypatch, capsys, workspace, "db", "upgrade", env=env)
    assert code == 0 and out.strip().endswith("upgraded from revision 0001 to 0004")
    assert _revision(warehouse_url) == "0004"
    ingest(warehouse_url, sample_dir, D14)
    with get_engine(warehouse_url).connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM ingest_run")).scalar_one() == 2


def test_a_warehouse_a_newer_release_wrote_is_refused(warehouse_url: str) -> None:
    get_engine(warehouse_url)
    get_engine.cache_clear()
    engine = open_engine(warehouse_url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(SchemaMismatchError, match="at revision 0099, which this code does not know .its newest is "
                                                  "0004.: a newer data-factory wrote it"):
        get_engine(warehouse_url)
