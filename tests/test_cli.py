"""The `datafactory` command as a user runs it: exit codes, one-line errors, clean demo output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import REPO


def datafactory(workspace: Path, *args: str, api_url: str | None = None,
                extra_env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess on the workspace: on its own ephemeral Prefect server, or on `api_url`'s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACTORY_", "PREFECT_"))}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(
        PREFECT_HOME=str(workspace / "prefect-home"),
        FACTORY_MANIFEST_DIR=str(workspace / "manifests"),
        FACTORY_DATABASE_URL=f"sqlite:///{workspace / 'warehouse.db'}",
        FACTORY_REPORT_DIR=str(workspace / "reports"),
        FACTORY_LAKE_URL=str(workspace / "lake"),
        FACTORY_DEFAULT_DATASET="tickets",
        PYTHONPATH=str(REPO),
    )
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def workspace(sample_dir: Path) -> Path:
    return sample_dir.parent


@pytest.fixture
def api_url(prefect_harness: None) -> str:
    """The test harness's Prefect server: CLI runs skip starting an ephemeral server of their own."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def test_demo_prints_every_partition_and_is_clean(workspace: Path, api_url: str) -> None:
    """`datafactory demo` exits 0 with a per-partition table for each dataset; Prefect prints no errors or tracebacks."""
    first = datafactory(workspace, "demo")
    assert first.returncode == 0, first.stderr
    sections = {block.split()[0]: block for block in first.stdout.split("\ndataset ")[1:]}
    assert sorted(sections) == ["customers", "orders", "tickets"]
    for delivered in ("orders", "tickets"):
        rows = {line.split()[0]: line.split()[1] for line in sections[delivered].splitlines()
                if line.startswith("2026-") and not line.split()[0].endswith(":")}
        assert rows == {"2026-04-14": "succeeded", "2026-04-16": "succeeded", "2026-04-17": "succeeded"}
        assert "2026-04-15: no manifest declares this partition" in sections[delivered]
    # the pulled dataset: two pulls, the second finding the late commit; the cursor only moves forward
    assert "cursor: - -> (2026-04-17T18:00:00Z, CUST-000002)" in sections["customers"]
    assert "cursor: (2026-04-17T18:00:00Z, CUST-000002) -> (2026-04-17T19:00:00Z, CUST-000011)" in sections["customers"]
    for noise in ("Traceback", "ERROR", "telemetry"):
        assert noise not in first.stdout + first.stderr

    again = datafactory(workspace, "demo", "--json", api_url=api_url)  # the ephemeral server was the point above
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert sorted(report) == ["catalog", "customers", "marts", "orders", "tickets"]
    # the shipped marts, computed after the first demo's commits: one partition per delivered day each
    assert sorted({(m["mart"], m["partition_key"], m["status"]) for m in report["marts"]}) == sorted(
        (mart, day, "succeeded") for mart in ("orders_revenue", "ticket_daily_metrics", "ticket_sla_breaches", "ticket_state")
        for day in ("2026-04-14", "2026-04-16", "2026-04-17"))
    assert report["catalog"].endswith(f"-readonly {workspace / 'lake' / 'catalog.duckdb'}")
    for dataset in ("orders", "tickets"):
        assert [p["status"] for p in report[dataset]["partitions"]] == ["skipped", "skipped", "skipped"]
        assert report[dataset]["no_input"] == ["2026-04-15"]
    assert [(p["records"], p["partitions"]) for p in report["customers"]["pulls"]] == [(0, []), (0, [])]


def test_a_no_op_run_is_recorded_without_any_prefect_server(workspace: Path, api_url: str) -> None:
    """An up-to-date partition is skipped from the ledger alone: with the Prefect API unreachable the
    skip still lands in the ledger, the decision log and a valid evidence file (no flow run behind it)."""
    from sqlalchemy import create_engine, text

    assert datafactory(workspace, "run", "--partition", "2026-04-14", api_url=api_url).returncode == 0
    again = datafactory(workspace, "run", "--partition", "2026-04-14", "--json", api_url="http://127.0.0.1:9/api")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["status"], summary["flow_run_id"]) == ("skipped", None)
    engine = create_engine(f"sqlite:///{workspace / 'warehouse.db'}")
    with engine.connect() as conn:
        runs = conn.execute(text("SELECT status FROM ingest_run ORDER BY started_at")).scalars().all()
        decisions = conn.execute(text("SELECT COUNT(*) FROM decision_log WHERE run_id = :r"),
                                 {"r": summary["run_id"]}).scalar_one()
    assert (runs, decisions) == (["succeeded", "skipped"], 1)
    evidence = json.loads(Path(summary["evidence_path"]).read_text())
    assert (evidence["status"], evidence["downstream"]["decision"]) == ("skipped", "unblock")


def test_changed_source_exits_2_with_one_line_and_writes_nothing(workspace: Path) -> None:
    source = workspace / "manifests/sources/tickets/2026-04-14/events.jsonl"
    source.write_text(source.read_text().replace("Refund request", "Refund requested"))
    result = datafactory(workspace, "run", "--partition", "2026-04-14")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"datafactory: {workspace / 'manifests/tickets-2026-04-14-a.json'}:12: assets[0].sha256: declared "
        "c14aa4ac44e8… but sources/tickets/2026-04-14/events.jsonl has 12238778db9d… [source_fingerprint_changed]"]
    assert not (workspace / "warehouse.db").exists()


def test_uri_escaping_the_root_exits_2(workspace: Path) -> None:
    path = workspace / "manifests/tickets-2026-04-16-a.json"
    path.write_text(path.read_text().replace("sources/tickets/2026-04-16/events.jsonl", "../../etc/passwd"))
    result = datafactory(workspace, "manifests", "validate", str(workspace / "manifests"))
    assert result.returncode == 2
    assert "tickets-2026-04-16-a.json:10: assets[0].uri: '../../etc/passwd' escapes" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_date_is_a_usage_error(workspace: Path) -> None:
    result = datafactory(workspace, "run", "--partition", "2026-13-01")
    assert result.returncode == 2 and "is not a date" in result.stderr


def test_backfill_dry_run_prints_the_plan_and_writes_only_the_plan(workspace: Path, api_url: str) -> None:
    result = datafactory(workspace, "backfill", "--start", "2026-04-14", "--end", "2026-04-17",
                         "--mode", "dry-run", "--json", api_url=api_url)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(e["partition_key"], e["gap_reason"]) for e in report["plan"]["entries"]] == [
        ("2026-04-14", "missing_partition"), ("2026-04-15", "no_input_declared"),
        ("2026-04-16", "missing_partition"), ("2026-04-17", "missing_partition")]
    assert Path(report["plan_path"]).is_file()
    assert report["results"] == []


def _held_day(workspace: Path) -> None:
    """2026-04-20 in the workspace: 8 of 10 records invalid."""
    from tests.test_checks import mostly_invalid

    mostly_invalid(workspace / "manifests")


def test_running_a_partition_that_fails_a_check_exits_1_naming_it(workspace: Path, api_url: str) -> None:
    _held_day(workspace)
    result = datafactory(workspace, "run", "--partition", "2026-04-20", api_url=api_url)
    assert result.returncode == 1, result.stderr
    assert "2026-04-20: FAIL quarantine_ratio: 8 of 10 records quarantined (schema_violation 8)" in result.stdout


def test_checks_of_a_held_partition_exit_1(workspace: Path) -> None:
    from tests.helpers import commit

    _held_day(workspace)
    commit(f"sqlite:///{workspace / 'warehouse.db'}", workspace / "manifests", date(2026, 4, 20))
    result = datafactory(workspace, "checks", "--partition", "2026-04-20")
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "tickets/2026-04-20: HELD by quarantine_ratio"


def test_checks_of_a_clean_partition_exit_0(workspace: Path) -> None:
    from tests.helpers import commit

    commit(f"sqlite:///{workspace / 'warehouse.db'}", workspace / "manifests", date(2026, 4, 14))
    result = datafactory(workspace, "checks", "--partition", "2026-04-14", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["held"] is False


def test_status_draws_a_plain_calendar_strip_in_a_pipe(workspace: Path) -> None:
    result = datafactory(workspace, "status")
    assert result.returncode == 0, result.stderr
    assert "2026-04               M.MM" in result.stdout.splitlines()
    assert "\033[" not in result.stdout


def test_evidence_json_prints_the_latest_evidence_file(workspace: Path, api_url: str) -> None:
    result = datafactory(workspace, "run", "--partition", "2026-04-14", api_url=api_url)
    assert result.returncode == 0, result.stderr
    shown = datafactory(workspace, "evidence", "--partition", "2026-04-14", "--json")
    [path] = (workspace / "reports/run_evidence/tickets/2026-04-14").glob("*.json")
    assert (shown.returncode, shown.stdout) == (0, path.read_text())


@pytest.mark.s3
def test_a_missing_lake_bucket_exits_2_in_one_line(workspace: Path, s3_bucket_url: str) -> None:
    result = datafactory(workspace, "run", "--partition", "2026-04-14",
                         extra_env={"FACTORY_LAKE_URL": "s3://no-such-bucket/lake"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "datafactory: s3://no-such-bucket/lake: FACTORY_LAKE_URL: the bucket does not exist"]


def test_health_exits_1_and_names_a_partition_broken_on_purpose(workspace: Path) -> None:
    from tests.helpers import commit

    _held_day(workspace)
    commit(f"sqlite:///{workspace / 'warehouse.db'}", workspace / "manifests", date(2026, 4, 20))
    result = datafactory(workspace, "health", "--json")
    assert result.returncode == 1, result.stderr
    assert {(f["kind"], f["partition"]) for f in json.loads(result.stdout)["findings"]} >= {
        ("held_partition", "2026-04-20"), ("missing_partition", "2026-04-17")}
