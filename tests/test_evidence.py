"""Run evidence, Prefect artifacts and assets, and the delivery summary, on Prefect's test harness."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from flows.partition import partition_flow, run_partition, summary_of
from tests.conftest import sqlite_only
from tests.helpers import client_call, fail_the_write
from tests.test_checks import D20, mostly_invalid

# evidence, artifacts and assets do not depend on the database: SQLite only, to keep the suite fast
pytestmark = [pytest.mark.flow, sqlite_only]
D14 = date(2026, 4, 14)


def _evidence_files(tmp_path: Path, partition: str) -> list[dict[str, Any]]:
    files = (tmp_path / "reports" / "run_evidence" / "tickets" / partition).glob("*.json")
    return sorted((json.loads(p.read_text()) for p in files), key=lambda e: e["timings"]["started_at"])


def test_a_held_partition_ends_the_flow_run_failed_naming_the_check(factory_env: str, sample_dir: Path) -> None:
    mostly_invalid(sample_dir)
    state = partition_flow(dataset="tickets", partition_key=D20, return_state=True)
    assert state.is_failed() and "quarantine_ratio" in (state.message or "")
    assert summary_of(state).status == "held"


def test_every_run_leaves_one_evidence_file_dry_runs_marked(factory_env: str, tmp_path: Path) -> None:
    run_partition(dataset="tickets", partition_key=D14)
    run_partition(dataset="tickets", partition_key=D14)  # a skip
    run_partition(dataset="tickets", partition_key=D14, mode="dry-run")
    found = [(e["status"], e["dry_run"], e["downstream"]["decision"]) for e in _evidence_files(tmp_path, "2026-04-14")]
    assert found == [("succeeded", False, "unblock"), ("skipped", False, "unblock"), ("dry_run", True, "hold")]


def test_evidence_names_the_check_that_held_the_partition(factory_env: str, sample_dir: Path, tmp_path: Path) -> None:
    mostly_invalid(sample_dir)
    run_partition(dataset="tickets", partition_key=D20)
    [evidence] = _evidence_files(tmp_path, "2026-04-20")
    assert evidence["downstream"]["decision"] == "hold"
    assert evidence["downstream"]["blocking_checks"] == ["quarantine_ratio"]
    assert evidence["handoff"]["release_id"] is None


def test_evidence_of_a_clean_run_reconciles_and_cites_its_inputs(factory_env: str, sample_dir: Path,
                                                                tmp_path: Path) -> None:
    summary = run_partition(dataset="tickets", partition_key=D14)
    [evidence] = _evidence_files(tmp_path, "2026-04-14")
    declared = json.loads((sample_dir / "tickets-2026-04-14-a.json").read_text())["assets"][0]
    assert evidence["reconcile"] == {**evidence["reconcile"], "reconciled": True, "unexplained": 0}
    assert [(i["uri"], i["sha256"], i["read_count"]) for i in evidence["inputs"]] == [
        (declared["uri"], declared["sha256"], 8)]
    assert evidence["handoff"]["release_id"] == f"tickets/2026-04-14/{summary.run_id}"


def test_a_failed_run_leaves_evidence_with_its_error(factory_env: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fail_the_write(monkeypatch, lambda: ValueError("disk full (injected)"))
    with pytest.raises(ValueError):
        run_partition(dataset="tickets", partition_key=D14)
    [evidence] = _evidence_files(tmp_path, "2026-04-14")
    assert (evidence["status"], evidence["error"], evidence["attempt"]) == (
        "failed", "ValueError: disk full (injected)", 1)


def test_artifacts_are_published_under_stable_keys(factory_env: str) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    summary = run_partition(dataset="tickets", partition_key=D14)

    async def read(client: Any) -> list[Any]:
        keys = ["tickets-2026-04-14-evidence", "tickets-2026-04-14-counts"]
        return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))

    artifacts = {a.key: a for a in client_call(read) if str(a.flow_run_id) == summary.flow_run_id}
    assert {k: a.type for k, a in artifacts.items()} == {
        "tickets-2026-04-14-evidence": "markdown", "tickets-2026-04-14-counts": "table"}
    assert "downstream UNBLOCK" in artifacts["tickets-2026-04-14-evidence"].data
    rows = json.loads(artifacts["tickets-2026-04-14-counts"].data)
    assert {r["name"]: r["value"] for r in rows if r["kind"] == "count"}["bronze_inserted"] == 8


def test_tables_are_materialized_as_prefect_assets_with_row_counts(factory_env: str) -> None:
    from tasks.assets import warehouse_location

    run_partition(dataset="tickets", partition_key=D14)
    ours = warehouse_location(factory_env) + "/"

    async def read(client: Any) -> list[dict[str, Any]]:
        for _ in range(40):  # events reach the server asynchronously
            response = await client._client.post("/events/filter", json={"filter": {
                "event": {"prefix": ["prefect.asset.materialization.succeeded"]},
                "resource": {"id_prefix": [ours]}}, "limit": 50})
            events = response.json()["events"]
            if len(events) >= 3:
                return events
            await asyncio.sleep(0.25)
        return events

    materialized = {e["resource"]["prefect.resource.id"].removeprefix(ours): e["payload"] for e in client_call(read)}
    assert materialized["raw_ticket_event"]["rows_inserted"] == 8
    assert materialized["ticket_fact"]["rows_inserted"] == 4
    assert set(materialized) == {"raw_ticket_event", "ticket_fact", "quarantine"}


def test_the_delivery_summary_lists_the_held_partition_and_why(factory_env: str, sample_dir: Path,
                                                               tmp_path: Path) -> None:
    mostly_invalid(sample_dir)
    run_partition(dataset="tickets", partition_key=D20)
    summary = (tmp_path / "reports" / "delivery_summary.md").read_text()
    held = summary.split("## tickets")[1].split("### Held partitions")[1].split("###")[0]
    assert "**2026-04-20**: held by quarantine_ratio (8 of 10 records quarantined (schema_violation 8))" in held
