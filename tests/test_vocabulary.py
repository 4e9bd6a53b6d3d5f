"""One vocabulary: statuses, gap reasons, proposed actions and counts are defined once (schemas/), and every
JSON Schema enum, column list and table the code prints is that definition or is held to it here."""

from __future__ import annotations

from schemas.reason_codes import GapReason, PartitionStatus, ProposedAction, RunStatus
from schemas.summary import RunCounts
from tasks.evidence import evidence_json_schema
from tasks.plan import ACTIONS, plan_json_schema

ENTRY = plan_json_schema()["properties"]["entries"]["items"]["properties"]


def test_the_backfill_plan_schema_names_exactly_the_gap_reasons_actions_and_partition_statuses() -> None:
    assert set(ENTRY["gap_reason"]["enum"]) == {g.value for g in GapReason}
    assert set(ENTRY["proposed_action"]["enum"]) == {a.value for a in ProposedAction}
    assert set(ENTRY["current_status"]["enum"]) == {s.value for s in PartitionStatus}


def test_every_gap_reason_has_a_proposed_action() -> None:
    assert set(ACTIONS) == set(GapReason)


def test_the_evidence_schema_names_the_run_statuses_a_run_can_end_in() -> None:
    ledger_only = {RunStatus.RUNNING, RunStatus.ABANDONED}
    assert set(evidence_json_schema()["properties"]["status"]["enum"]) == {s.value for s in RunStatus} - ledger_only


def test_evidence_counts_are_exactly_run_counts() -> None:
    counts = evidence_json_schema()["properties"]["counts"]
    assert set(counts["properties"]) == set(RunCounts.model_fields)
    assert set(counts["required"]) <= set(RunCounts.model_fields)


def test_the_cli_summary_table_shows_run_counts_only() -> None:
    from flows.cli import SUMMARY_COLUMNS

    beside_counts = {"partition_key", "status", "reconciled", "downstream"}
    assert {key for _, key in SUMMARY_COLUMNS} - beside_counts <= set(RunCounts.model_fields)
