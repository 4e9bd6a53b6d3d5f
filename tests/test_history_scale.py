"""A partition run finds what it needs by key: no statement it sends scans the ledger or the bronze and
silver tables, so its bookkeeping and checks cost the same after ten thousand partitions, and after a
ticket's thousandth event, as after the first (SQLite's query plan of every statement, as it runs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import event

from tasks.database import get_engine
from tasks.lake import Lake
from tasks.storage import open_storage
from tests.helpers import DAYS, commit

KEYED = ("ingest_batch", "ingest_run", "partition_state", "decision_log", "check_result", "lake_snapshot",
         "lake_current", "verify_finding", "raw_ticket_event", "ticket_fact", "quarantine", "redelivery")
# a full scan, or an automatic index SQLite builds for the statement (by reading the whole table)
FULL_SCAN = re.compile(rf"\b(SCAN ({'|'.join(KEYED)})\b(?! USING)|USING AUTOMATIC)")


@pytest.mark.parametrize("warehouse_url", ["sqlite"], indirect=True)
def test_no_statement_of_a_partition_run_scans_a_keyed_table(warehouse_url: str, sample_dir: Path,
                                                              tmp_path: Path) -> None:
    lake = Lake(open_storage(str(tmp_path / "lake")))
    for day in DAYS[:2]:
        commit(warehouse_url, sample_dir, day, lake=lake)
    engine = get_engine(warehouse_url)
    scans: list[tuple[str, str]] = []
    explained = []

    def explain(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if executemany or not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT")):
            return
        plan = cursor.connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters or ()).fetchall()
        explained.append(statement)
        scans.extend((row[-1], statement[:160]) for row in plan if FULL_SCAN.search(row[-1]))

    event.listen(engine, "before_cursor_execute", explain)
    try:
        commit(warehouse_url, sample_dir, DAYS[2], lake=lake)
        commit(warehouse_url, sample_dir, DAYS[2], lake=lake, force=True)  # bronze and silver hold it all now
        commit(warehouse_url, sample_dir, DAYS[2], lake=lake)  # the skip
    finally:
        event.remove(engine, "before_cursor_execute", explain)
    assert len(explained) > 50 and scans == []
