"""Pulling a paged JSON API (a real HTTP server on loopback: pytest-httpserver) into the `customers`
dataset: every paging style, throttling and server errors retried by Prefect, a failed or killed pull
resumed after its last landed page, repeated records, late commits inside the lookback, re-pulls that
never move the cursor back, and the health of a cursor that does not move."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlalchemy import create_engine, text

from flows.pull import pull_flow
from schemas.sources import Paging
from tasks import cursor
from tasks.database import get_engine, reading
from tests.conftest import REPO, sqlite_only
from tests.pull_helpers import PagedApi, count, customer, declare, expected_silver, serve, silver_state

pytestmark = [pytest.mark.flow, sqlite_only]

# ten versions of eight customers over three days; fast retries for the tests
RECORDS = [customer(1, "2026-04-15T08:00:00Z"), customer(2, "2026-04-15T09:00:00.5Z"),
           customer(3, "2026-04-15T10:00:00Z"), customer(1, "2026-04-16T08:00:00Z", tier="enterprise"),
           customer(4, "2026-04-16T09:00:00Z"), customer(5, "2026-04-16T10:00:00.123456Z"),
           customer(6, "2026-04-17T08:00:00Z"), customer(2, "2026-04-17T09:00:00Z", name="Renamed"),
           customer(7, "2026-04-17T10:00:00Z"), customer(8, "2026-04-17T10:00:00Z")]
NEWEST = cursor.CursorValue(datetime(2026, 4, 17, 10, tzinfo=timezone.utc), "CUST-000008")


@pytest.fixture
def source(factory_env: str, httpserver: Any, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Callable[..., PagedApi]:
    """Serve a PagedApi and declare the customers source to match it (as a user's module would)."""
    monkeypatch.setenv("FACTORY_LANDING_DIR", str(tmp_path / "landing"))

    def start(api: PagedApi, **declared: Any) -> PagedApi:
        monkeypatch.setenv("FACTORY_SOURCE_URLS", json.dumps({"customers": serve(httpserver, api)}))
        declare(monkeypatch, paging=api.paging, page_size=api.page_size, backoff_seconds=0.01, **declared)
        return api
    return start


def _pages(url: str) -> list[tuple[int, int, int]]:
    with create_engine(url).connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT page, record_count, attempts FROM pull_page ORDER BY page"))]


def _read_pages(factory_env: str) -> list[tuple[int, str | None, list[Any], str | None, int]]:
    """The pages as a pull reads them (no landing), inside a flow run as a pull's page tasks are."""
    from prefect import flow

    from flows.pull import _Pages
    from schemas.datasets import get_dataset
    from schemas.settings import load_settings
    from tasks.pull_ledger import PullRun

    reader = _Pages(load_settings(), get_dataset("customers"), get_engine(factory_env))
    window = datetime(2026, 3, 1, tzinfo=timezone.utc), datetime(2026, 5, 1, tzinfo=timezone.utc)
    run = PullRun("run", "customers", "default", cursor.Direction.FORWARD, *window, None, "RUNNING")
    return flow(name="read-pages")(lambda: list(reader.pages(run, [])))()  # type: ignore[no-any-return]


@pytest.mark.parametrize("paging", list(Paging))
def test_every_paging_style_reads_every_record_once_and_stops(source: Callable[..., PagedApi], factory_env: str,
                                                             paging: Paging) -> None:
    source(PagedApi(paging=paging, records=list(RECORDS)), page_param="from" if paging is Paging.LINK_HEADER else "page")
    pages = _read_pages(factory_env)
    positional = paging in (Paging.PAGE_NUMBER, Paging.OFFSET)  # these end on an empty page (a short one may
    assert [number for number, *_ in pages] == [1, 2, 3, 4, 5][:5 if positional else 4]  # be a server's cap)
    assert [record for _, _, records, _, _ in pages for record in records] == PagedApi(records=RECORDS).visible(None)
    assert pages[-1][3] is None  # the last page names no next one


def test_the_bearer_token_is_read_from_the_secret_block_at_every_pull(source: Callable[..., PagedApi],
                                                                      factory_env: str) -> None:
    """Rotating a credential is writing the block: the next pull sends the new token."""
    from prefect.blocks.system import Secret

    Secret(value="old-token").save("crm-token-test", overwrite=True)
    api = source(PagedApi(records=list(RECORDS), token="new-token"), auth_secret_block="crm-token-test")
    with pytest.raises(Exception, match=r"/customers \(page 1\): HTTP 401"):
        _read_pages(factory_env)
    Secret(value="new-token").save("crm-token-test", overwrite=True)
    assert sum(len(records) for _, _, records, _, _ in _read_pages(factory_env)) == 10
    assert [status for _, status, _ in api.log] == [401, 200, 200, 200, 200, 200]


def test_a_pull_lands_every_record_once_and_moves_the_cursor_to_the_newest(source: Callable[..., PagedApi],
                                                                            factory_env: str) -> None:
    source(PagedApi(records=list(RECORDS)))
    summary = pull_flow(dataset="customers")
    assert (summary.pages, summary.records) == (5, 10)  # three full pages, a short one, an empty one
    assert silver_state(factory_env) == expected_silver(RECORDS)
    assert count(factory_env, "SELECT COUNT(*) FROM raw_customer_version") == 10
    assert [p.partition_key for p in summary.partitions] == [date(2026, 4, 15), date(2026, 4, 16), date(2026, 4, 17)]
    assert summary.cursor_after == str(NEWEST)


def test_throttling_and_server_errors_are_retried_by_prefect_honouring_retry_after(
        source: Callable[..., PagedApi], factory_env: str) -> None:
    api = source(PagedApi(records=list(RECORDS), faults={1: (429, {"Retry-After": "1"}), 4: (503, {})}))
    pull_flow(dataset="customers")
    (throttled_at, status, _), (retried_at, *_) = api.log[:2]
    assert status == 429 and retried_at - throttled_at >= 1.0  # the server's word, not our 10 ms backoff
    assert _pages(factory_env) == [(1, 3, 2), (2, 3, 1), (3, 3, 2), (4, 1, 1), (5, 0, 1)]  # each landed once
    assert count(factory_env, "SELECT COUNT(*) FROM raw_customer_version") == 10
    assert silver_state(factory_env) == expected_silver(RECORDS)


def test_a_client_error_fails_in_one_line_and_the_next_pull_resumes_after_the_landed_pages(
        source: Callable[..., PagedApi], factory_env: str) -> None:
    api = source(PagedApi(paging=Paging.CURSOR_TOKEN, records=list(RECORDS), faults={3: (404, {})}))
    with pytest.raises(Exception, match=r"/customers \(page 3\): HTTP 404") as failed:
        pull_flow(dataset="customers")
    assert "\n" not in str(failed.value)
    assert count(factory_env, "SELECT COUNT(*) FROM pull_run WHERE status = 'FAILED'") == 1
    summary = pull_flow(dataset="customers")
    assert summary.resumed and summary.pages == 4
    assert [q.get("page") for q in api.requests_for_pages()] == [None, "3", "6", "9"]  # pages 1-2 asked once
    assert silver_state(factory_env) == expected_silver(RECORDS)
    assert count(factory_env, "SELECT COUNT(*) FROM pull_run WHERE status = 'SUCCEEDED'") == 1


def test_a_pull_that_cannot_finish_is_given_up_by_restart_and_the_next_reads_from_the_cursor(
        source: Callable[..., PagedApi], factory_env: str) -> None:
    source(PagedApi(paging=Paging.CURSOR_TOKEN, records=list(RECORDS), faults={2: (400, {})}))  # "token expired"
    with pytest.raises(Exception, match="HTTP 400"):
        pull_flow(dataset="customers")
    summary = pull_flow(dataset="customers", restart=True)
    assert not summary.resumed and silver_state(factory_env) == expected_silver(RECORDS)
    with create_engine(factory_env).connect() as conn:
        assert [r[0] for r in conn.execute(text("SELECT status FROM pull_run ORDER BY started_at"))] == [
            "ABANDONED", "SUCCEEDED"]


def test_a_resumed_page_numbered_pull_reads_again_from_page_one_so_no_shifted_record_is_lost(
        source: Callable[..., PagedApi], factory_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Page numbers are positions: two records updated while the pull was down move every later record
    up two places, and page 2 of the resumed pull would skip two of them for good."""
    from tests.faults import Injected, inject

    api = source(PagedApi(records=list(RECORDS)))
    with monkeypatch.context() as patch:
        inject(patch, "tasks.pull_ledger:record_page:after:1")
        with pytest.raises(Injected):
            pull_flow(dataset="customers")
    moved = [customer(1, "2026-04-17T11:00:00Z", tier="free"), customer(2, "2026-04-17T11:30:00Z", tier="free")]
    api.records[:2] = moved  # updated in place: their old versions are gone from the source
    summary = pull_flow(dataset="customers")
    assert summary.resumed
    assert silver_state(factory_env) == expected_silver(RECORDS + moved)  # CUST-000004 and -5 included


def test_a_record_that_is_no_object_is_quarantined_once_however_often_it_is_read(
        source: Callable[..., PagedApi], factory_env: str) -> None:
    source(PagedApi(records=[*RECORDS, "lost in transit"]))
    pull_flow(dataset="customers")
    again = pull_flow(dataset="customers", start=date(2026, 4, 15), end=date(2026, 4, 17), replay=True)
    assert (again.records, again.partitions) == (0, [])
    assert count(factory_env, "SELECT COUNT(*) FROM quarantine WHERE reason_code = 'malformed_record'") == 1


def test_a_source_clock_behind_the_window_fails_the_pull_in_one_line(source: Callable[..., PagedApi],
                                                                     factory_env: str) -> None:
    source(PagedApi(records=list(RECORDS)), settle=timedelta(days=36500))  # as if its clock were a century late
    with pytest.raises(Exception, match=r"the source's clock .* minus settle is before the window's start"):
        pull_flow(dataset="customers")


def test_a_pull_killed_after_a_page_resumes_from_the_next_and_converges(
        source: Callable[..., PagedApi], factory_env: str, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    api = source(PagedApi(records=list(RECORDS), page_size=5))  # the registered declaration: 5 a page
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
           "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-m", "tests.faults", "tasks.pull_ledger:record_page:after:1", "--",
                             "cli", "pull", "--dataset", "customers"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert count(factory_env, "SELECT COUNT(*) FROM pull_run WHERE status = 'RUNNING'") == 1
    summary = pull_flow(dataset="customers")
    # page numbers are positions: the resumed pull reads from page 1 again (two full pages, then an empty
    # one), landing after the killed pull's page
    assert summary.resumed and summary.pages == 4
    assert [q.get("page") for q in api.requests_for_pages()] == ["1", "1", "2", "3"]
    assert silver_state(factory_env) == expected_silver(RECORDS)
    assert count(factory_env, "SELECT COUNT(*) FROM pull_run WHERE status <> 'SUCCEEDED'") == 0
    assert count(factory_env, "SELECT COUNT(*) FROM ingest_run WHERE status = 'running'") == 0
    assert list(tmp_path.rglob("*.tmp")) == []


def test_a_record_repeated_on_the_next_page_is_one_event(source: Callable[..., PagedApi], factory_env: str) -> None:
    source(PagedApi(paging=Paging.OFFSET, records=list(RECORDS), repeat_last_on_next_page=True))
    summary = pull_flow(dataset="customers")
    assert summary.records > 10  # the source sent some records twice
    assert count(factory_env, "SELECT COUNT(*) FROM raw_customer_version") == 10
    assert count(factory_env, "SELECT COUNT(*) FROM quarantine") == 0
    assert silver_state(factory_env) == expected_silver(RECORDS)


def test_a_late_commit_older_than_the_cursor_is_ingested_by_the_next_pull(source: Callable[..., PagedApi],
                                                                          factory_env: str) -> None:
    api = source(PagedApi(records=list(RECORDS)))
    pull_flow(dataset="customers")
    late = customer(3, "2026-04-17T09:30:00Z", tier="free")  # committed now, stamped 30 min before the cursor
    api.records.append(late)
    second = pull_flow(dataset="customers")
    assert second.records == 1 and second.already_ingested == 3  # the lookback's overlap lands nothing again
    assert silver_state(factory_env)["CUST-000003"][1] == "free"
    assert silver_state(factory_env) == expected_silver(RECORDS + [late])
    assert second.cursor_after == str(NEWEST)  # nothing newer: the cursor stays


def test_records_newer_than_the_clock_minus_settle_wait_for_a_later_pull(source: Callable[..., PagedApi],
                                                                          factory_env: str) -> None:
    just_now = (datetime.now(timezone.utc) - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    source(PagedApi(records=[*RECORDS, customer(9, just_now)]))
    summary = pull_flow(dataset="customers")
    assert summary.records == 10 and "CUST-000009" not in silver_state(factory_env)
    assert summary.cursor_after == str(NEWEST)
    assert summary.newest_seen is not None and summary.newest_seen > NEWEST.value


def test_a_backfill_repull_records_its_event_and_never_moves_the_cursor_back(source: Callable[..., PagedApi],
                                                                              factory_env: str) -> None:
    from flows.backfill import backfill_flow

    api = source(PagedApi(records=list(RECORDS)))
    pull_flow(dataset="customers")
    api.records.append(customer(9, "2026-04-15T23:00:00Z"))  # a record the source had not shown before
    backfill_flow(dataset="customers", start=date(2026, 4, 15), end=date(2026, 4, 15), mode="execute")
    assert "CUST-000009" in silver_state(factory_env)
    with reading(get_engine(factory_env)) as conn:
        events = cursor.timeline(conn, "customers", "default")
        assert [e["direction"] for e in events] == ["FORWARD", "BACKFILL"]
        assert events[0]["batch_key"] == f"{events[0]['run_id']}:4"  # the page holding the newest record
        assert events[1]["new_value"] == datetime(2026, 4, 15, 23, tzinfo=timezone.utc)
        assert events[1]["window_start"] == datetime(2026, 4, 15, tzinfo=timezone.utc)
        assert events[1]["window_end"] == datetime(2026, 4, 16, tzinfo=timezone.utc)
        assert cursor.rebuild_from_events(events) == cursor.current(conn, "customers", "default") == NEWEST


def test_health_flags_a_cursor_that_stopped_while_the_source_shows_newer_data(
        source: Callable[..., PagedApi], factory_env: str) -> None:
    from tasks.health import HealthThresholds, pull_problems
    from schemas.datasets import get_dataset

    just_now = (datetime.now(timezone.utc) - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    source(PagedApi(records=[*RECORDS, customer(9, just_now)]))
    pull_flow(dataset="customers")
    engine = get_engine(factory_env)
    later = datetime.now(timezone.utc) + timedelta(hours=7)
    found = pull_problems(engine, get_dataset("customers"), HealthThresholds(), later)
    assert [f.kind for f in found] == ["cursor_stagnation"]
    assert "has not moved for 7.0 h while the source shows" in found[0].detail
    assert pull_problems(engine, get_dataset("customers"), HealthThresholds(), datetime.now(timezone.utc)) == []


def test_health_flags_a_source_whose_cursor_was_never_set(source: Callable[..., PagedApi], factory_env: str) -> None:
    from tasks.health import HealthThresholds, pull_problems
    from schemas.datasets import get_dataset

    just_now = (datetime.now(timezone.utc) - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    source(PagedApi(records=[customer(9, just_now)]))  # only a record past the settle line: nothing read
    pull_flow(dataset="customers")
    found = pull_problems(get_engine(factory_env), get_dataset("customers"), HealthThresholds(),
                          datetime.now(timezone.utc) + timedelta(hours=7))
    assert [(f.kind, f.detail.split(" has ")[0]) for f in found] == [("cursor_stagnation", "cursor (never set)")]
