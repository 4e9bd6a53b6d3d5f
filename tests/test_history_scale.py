"""A partition run finds its ledger rows by key: no statement it sends scans a ledger table, so its
bookkeeping costs the same after ten thousand partitions as after three (SQLite's query plans)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import event

from tasks.database import get_engine
from tasks.lake import Lake
from tasks.storage import open_storage
from tests.helpers import DAYS, commit

LEDGER = ("ingest_batch", "ingest_run", "partition_state", "decision_log", "check_result", "lake_snapshot",
          "lake_current", "verify_finding")
FULL_SCAN = re.compile(rf"\bSCAN ({'|'.join(LEDGER)})\b(?! USING)")


@pytest.mark.parametrize("warehouse_url", ["sqlite"], indirect=True)
def test_no_statement_of_a_partition_run_scans_a_ledger_table(warehouse_url: str, sample_dir: Path,
                                                              tmp_path: Path) -> None:
    lake = Lake(open_storage(str(tmp_path / "lake")))
    for day in DAYS[:2]:
        commit(warehouse_url, sample_dir, day, lake=lake)
    engine = get_engine(warehouse_url)
    sent: list[tuple[str, object]] = []

    def collect(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        touches_ledger = any(re.search(rf"\b{table}\b", statement) for table in LEDGER)
        staged = re.search(r"\b_(stg|run)_\w+", statement)  # temp tables of the write: gone by the EXPLAIN
        if touches_ledger and not staged and not executemany and statement.lstrip().upper().startswith(
                ("SELECT", "UPDATE", "DELETE", "INSERT")):
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", collect)
    try:
        commit(warehouse_url, sample_dir, DAYS[2], lake=lake)
        commit(warehouse_url, sample_dir, DAYS[2], lake=lake)  # the skip, too
    finally:
        event.remove(engine, "before_cursor_execute", collect)
    scans = []
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        for statement, parameters in sent:
            plan = [row[-1] for row in raw.execute(f"EXPLAIN QUERY PLAN {statement}", parameters or ())]
            scans += [(step, statement[:120]) for step in plan if FULL_SCAN.search(step)]
    assert len(sent) > 20 and scans == []
