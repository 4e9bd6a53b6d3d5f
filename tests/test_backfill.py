"""Backfill plans, gap-only execution, resumption and replay, on Prefect's test harness and both databases."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import event, select

import flows.backfill as backfill_module
from flows.backfill import backfill_flow
from flows.replay import replay_flow
from schemas.tables import decision_log
from tasks.database import get_engine
from tasks.errors import InputError
from tasks.manifests import discover_manifests
from tasks.plan import plan_backfill, plan_json_schema
from tests.conftest import sqlite_only
from tests.helpers import all_tables, client_call, data_tables, silver_rows
from tests.oracle import expected_state

pytestmark = pytest.mark.flow
START, END = date(2026, 4, 13), date(2026, 4, 18)


def _plan(summary) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(Path(summary.plan_path).read_text())


def test_dry_run_names_every_gap_and_changes_no_table(factory_env: str) -> None:
    before = all_tables(factory_env)
    summary = backfill_flow(dataset="tickets", start=START, end=END, mode="dry-run")
    plan = _plan(summary)
    jsonschema.Draft202012Validator(plan_json_schema(), format_checker=jsonschema.FormatChecker()).validate(plan)
    assert {e["partition_key"]: (e["gap_reason"], e["proposed_action"]) for e in plan["entries"]} == {
        "2026-04-13": ("no_input_declared", "hold"), "2026-04-14": ("missing_partition", "backfill"),
        "2026-04-15": ("no_input_declared", "hold"), "2026-04-16": ("missing_partition", "backfill"),
        "2026-04-17": ("missing_partition", "backfill"), "2026-04-18": ("no_input_declared", "hold")}
    assert summary.results == []
    assert all_tables(factory_env) == before


def test_execute_matches_the_oracle_and_a_second_execute_does_nothing(factory_env: str, sample_dir: Path) -> None:
    first = backfill_flow(dataset="tickets", start=START, end=END, mode="execute", max_concurrency=2)
    assert sorted(r["partition_key"] for r in first.results if r["status"] == "succeeded") == [
        "2026-04-14", "2026-04-16", "2026-04-17"]
    expected = expected_state(sample_dir)
    silver = {k: (v["last_event_id"], v["status"]) for k, v in silver_rows(factory_env).items()}
    assert silver == {k: (e, s) for k, (e, _, s, _) in expected.silver.items()}
    tables = data_tables(factory_env)
    second = backfill_flow(dataset="tickets", start=START, end=END, mode="execute")
    assert (second.to_ingest, second.results) == (0, [])
    assert {e["gap_reason"] for e in _plan(second)["entries"]} == {"up_to_date", "no_input_declared"}
    assert data_tables(factory_env) == tables


@sqlite_only
def test_a_backfill_regenerates_the_delivery_summary_once_with_every_partition(
        factory_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each partition leaves its evidence; the summary (a roll-up of all of them) is written at the end."""
    import tasks.report as report_module

    written: list[str] = []
    real = report_module.write_delivery_summary

    def counted(*args):  # type: ignore[no-untyped-def]
        written.append("summary")
        return real(*args)

    monkeypatch.setattr(report_module, "write_delivery_summary", counted)
    backfill_flow(dataset="tickets", start=START, end=END, mode="execute", max_concurrency=2)
    summary = (tmp_path / "reports" / "delivery_summary.md").read_text()
    assert written == ["summary"]
    assert all(f"2026-04-{day}" in summary for day in (14, 16, 17))
    assert len(list((tmp_path / "reports" / "run_evidence" / "tickets").rglob("*.json"))) == 3


def test_a_failed_partition_does_not_stop_the_others_and_a_rerun_resumes(
        factory_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill the 04-16 run part-way: the others land; the same command again runs only 04-16."""
    real = backfill_module.ingest_partition

    def dies_on_the_16th(settings, dataset, partition_key, *args, **kwargs):  # type: ignore[no-untyped-def]
        if partition_key == date(2026, 4, 16):
            raise RuntimeError("worker killed (injected)")
        return real(settings, dataset, partition_key, *args, **kwargs)

    monkeypatch.setattr(backfill_module, "ingest_partition", dies_on_the_16th)
    first = backfill_flow(dataset="tickets", start=START, end=END, mode="execute")
    assert {r["partition_key"]: r["status"] for r in first.results} == {
        "2026-04-14": "succeeded", "2026-04-16": "failed", "2026-04-17": "succeeded"}
    assert first.failed[0]["error"] == "RuntimeError: worker killed (injected)"

    monkeypatch.setattr(backfill_module, "ingest_partition", real)
    again = backfill_flow(dataset="tickets", start=START, end=END, mode="execute")
    assert [(r["partition_key"], r["status"]) for r in again.results] == [("2026-04-16", "succeeded")]


@sqlite_only  # the flow-level behaviour; both databases' semantics are in test_warehouse
def test_all_reruns_up_to_date_partitions_without_changing_data(factory_env: str) -> None:
    backfill_flow(dataset="tickets", start=START, end=END, mode="execute")
    tables = data_tables(factory_env)
    rerun = backfill_flow(dataset="tickets", start=START, end=END, mode="execute", only_gaps=False)
    assert sorted((r["partition_key"], r["status"]) for r in rerun.results) == [
        ("2026-04-14", "succeeded"), ("2026-04-16", "succeeded"), ("2026-04-17", "succeeded")]
    assert data_tables(factory_env) == tables


@sqlite_only  # the flow-level behaviour; both databases' semantics are in test_warehouse
def test_replaying_an_ingested_manifest_changes_no_data_table(factory_env: str) -> None:
    backfill_flow(dataset="tickets", start=START, end=END, mode="execute")
    tables = data_tables(factory_env)
    summary = replay_flow(manifest_id="tickets-2026-04-16-a")
    assert (summary.action, summary.bronze_inserted, summary.bronze_existing) == ("replay", 0, 30)
    assert data_tables(factory_env) == tables
    with get_engine(factory_env).connect() as conn:
        last = conn.execute(select(decision_log).order_by(decision_log.c.id.desc())).first()
    assert (last.action, last.partition_key, last.outcome) == ("replay", "2026-04-16", "succeeded")


@sqlite_only  # the flow-level behaviour; both databases' semantics are in test_warehouse
def test_replay_refuses_a_changed_source_unless_accepted(factory_env: str, sample_dir: Path) -> None:
    backfill_flow(dataset="tickets", start=START, end=END, mode="execute")
    source = sample_dir / "sources/tickets/2026-04-14/events.jsonl"
    source.write_text(source.read_text().replace('"Please refund order 991."', '"Please refund order 992."'))
    with pytest.raises(InputError) as err:
        replay_flow(manifest_id="tickets-2026-04-14-a")
    assert err.value.reason_code == "source_fingerprint_changed"
    accepted = replay_flow(manifest_id="tickets-2026-04-14-a", accept_changed=True)
    assert accepted.invalid_by_reason == {"conflicting_duplicate": 1}  # E-0003's new content loses to bronze


def test_planning_reads_the_ledger_once_for_the_whole_window(factory_env: str, sample_dir: Path) -> None:
    """10,000 partitions are planned with one query, not one per partition."""
    from schemas.datasets import get_dataset

    engine = get_engine(factory_env)
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        entries = plan_backfill(engine, get_dataset("tickets"), discover_manifests(sample_dir), date(2000, 1, 1),
                                date(2027, 5, 18), date(2000, 1, 1), "dry-run", True, "test", "plan.json")
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(entries) == 10_000
    assert len([s for s in statements if "partition_state" in s]) == 1


def test_a_held_partition_is_reported_and_the_next_plan_holds_it(factory_env: str, sample_dir: Path) -> None:
    from tests.test_checks import D20, mostly_invalid

    mostly_invalid(sample_dir)
    first = backfill_flow(dataset="tickets", start=D20, end=D20, mode="execute")
    again = backfill_flow(dataset="tickets", start=D20, end=D20, mode="dry-run")
    assert [(r["partition_key"], r["status"]) for r in first.held] == [("2026-04-20", "held")]
    assert [(e["gap_reason"], e["proposed_action"]) for e in _plan(again)["entries"]] == [("held_partition", "hold")]


@sqlite_only  # what Prefect shows does not depend on the warehouse
def test_each_partition_is_one_task_run_of_the_backfill_with_its_evidence_artifact(factory_env: str) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    state = backfill_flow(dataset="tickets", start=START, end=END, mode="execute", return_state=True)
    backfill_run = state.state_details.flow_run_id
    days = ["2026-04-14", "2026-04-16", "2026-04-17"]

    async def read(client):  # type: ignore[no-untyped-def]
        runs = await client.read_flow_runs()
        tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[backfill_run])))
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[f"tickets-{day}-evidence" for day in days])))
        return runs, tasks, artifacts

    runs, tasks, artifacts = client_call(read)
    assert [r.id for r in runs if r.parent_task_run_id in {t.id for t in tasks}] == []  # no subflows
    partition_tasks = {t.name: t for t in tasks if t.name.startswith("tickets/")}
    assert sorted(partition_tasks) == [f"tickets/{day}" for day in days]
    assert {t.state_type.value for t in partition_tasks.values()} == {"COMPLETED"}
    by_task = {a.task_run_id: a.key for a in artifacts if a.flow_run_id == backfill_run}
    assert sorted(by_task[t.id] for t in partition_tasks.values()) == [f"tickets-{day}-evidence" for day in days]


@sqlite_only  # the task runner, not the warehouse, is under test
def test_a_backfill_on_a_dask_cluster_matches_the_oracle(factory_env: str, sample_dir: Path) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        summary = backfill_flow(dataset="tickets", start=START, end=END, mode="execute",
                                dask_address=cluster.scheduler_address)
        finished_on_dask = cluster.scheduler.task_prefixes["ingest_partition_task"].state_counts["memory"]
    assert finished_on_dask == 3
    assert sorted((r["partition_key"], r["status"]) for r in summary.results) == [
        ("2026-04-14", "succeeded"), ("2026-04-16", "succeeded"), ("2026-04-17", "succeeded")]
    expected = expected_state(sample_dir)
    silver = {k: (v["last_event_id"], v["status"]) for k, v in silver_rows(factory_env).items()}
    assert silver == {k: (e, s) for k, (e, _, s, _) in expected.silver.items()}
