"""The shipped marts (schemas/marts/*.sql) against the independent oracle of tests/mart_oracle.py.

Partitions are committed the way partition_flow commits them (tests/helpers.commit with the lake), and
after each commit the dataset's downstream marts are refreshed by the same function after_commit runs
(flows.marts.refresh_marts, its Prefect task called as the plain function it wraps: no Prefect server,
so a property test stays cheap). After every commit, each gold table must hold exactly the oracle's rows
for the partitions committed so far, whatever order the days arrive in.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, Table, inspect, select, text

from tasks.database import get_engine
from tasks.generate import write_manifest
from tests.helpers import commit
from tests.mart_oracle import MARTS, deliveries_from_manifests, expected_marts, order_event, ticket_event
from tests.oracle import parse_line

UTC = timezone.utc
START = date(2026, 4, 10)
COLUMNS = {
    "ticket_sla_breaches": ("dt", "ticket_id", "priority", "channel", "created_at", "deadline", "first_response_at",
                            "minutes_late"),
    "ticket_daily_metrics": ("dt", "priority", "channel", "opened", "solved", "backlog",
                             "median_first_response_minutes", "median_resolution_minutes", "sla_breaches"),
    "orders_revenue": ("dt", "currency", "orders", "paid_orders", "revenue", "refunded"),
}
KEYS = {"ticket_sla_breaches": 2, "ticket_daily_metrics": 3, "orders_revenue": 2}  # leading columns: the row's key
TIMESTAMPS = {"created_at", "deadline", "first_response_at"}
DECIMALS = {"revenue", "refunded"}

EVENT_TYPES = ["created", "updated", "commented", "status_changed", "closed"]
TICKET_STATUSES = ["new", "open", "pending", "on_hold", "solved", "closed"]
PRIORITIES = ["low", "normal", "high", "urgent"]
CHANNELS = ["email", "chat", "phone", "web", "api"]
ORDER_STATUSES = ["placed", "paid", "shipped", "delivered", "cancelled", "refunded"]
CURRENCIES = ["EUR", "USD", "JPY"]
# minutes from a ticket's creation to an event: each SLA (1 h, 4 h, 24 h, 72 h) exactly, and half an hour past it
OFFSETS = [0, 30, 60, 90, 240, 270, 1440, 1470, 4320, 4350]
JITTERS = [timedelta(0), timedelta(0), timedelta(0), timedelta(seconds=1), timedelta(seconds=59, microseconds=500_000)]
ID_PREFIXES = ["E-", "Z-", "e-"]  # bytewise E < Z < e: ties on updated_at are not broken in creation order
EXAMPLES = int(os.environ.get("MART_EXAMPLES", "8"))


# --- running partitions and reading the gold tables -------------------------------------------------

@pytest.fixture
def fresh_warehouse(warehouse_url: str, request: pytest.FixtureRequest,
                    tmp_path: Path) -> Callable[[], AbstractContextManager[str]]:
    """A new, empty warehouse of warehouse_url's kind for each Hypothesis example."""
    if warehouse_url.startswith("sqlite"):
        numbers = itertools.count()

        @contextmanager
        def sqlite() -> Iterator[str]:
            yield f"sqlite:///{tmp_path / f'warehouse-{next(numbers)}.db'}"
            get_engine.cache_clear()

        return sqlite
    from tests.conftest import _drop_pg_database, _new_pg_database

    cluster = request.getfixturevalue("pg_cluster")

    @contextmanager
    def postgres() -> Iterator[str]:
        name, url = _new_pg_database(cluster)
        try:
            yield url
        finally:
            _drop_pg_database(cluster, name)

    return postgres


@pytest.fixture
def plain_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """refresh_marts calls the plain function its Prefect task wraps."""
    import flows.marts
    from tasks.marts import refresh_partition

    monkeypatch.setattr(flows.marts, "refresh_partition_task", refresh_partition)


class Factory:
    """Commit a partition (warehouse, checks, lake snapshot), then refresh the dataset's downstream marts."""

    def __init__(self, url: str, manifest_dir: Path, work: Path) -> None:
        from flows.marts import load_graph
        from schemas.settings import load_settings
        from tasks.lake import open_lake

        self.url, self.manifest_dir = url, manifest_dir
        self.settings = load_settings(database_url=url, lake_url=str(work / "lake"), manifest_dir=manifest_dir,
                                      report_dir=work / "reports")
        self.lake = open_lake(self.settings)
        self.graph = load_graph(self.settings)

    def run(self, dataset: str, day: date) -> Any:
        from flows.marts import refresh_marts

        done = commit(self.url, self.manifest_dir, day, lake=self.lake, dataset=dataset)
        held = [c.name for c in done.checks if c.status == "fail" and c.severity == "error"]
        assert not held, f"{dataset}/{day} held by {held}: the test's deliveries must pass the dataset checks"
        outcomes = refresh_marts(self.settings, get_engine(self.url), self.lake, self.graph,
                                 self.graph.downstream_of({dataset}), None, None)
        assert [(o.plan.mart, o.plan.partition, o.error) for o in outcomes if o.status != "succeeded"] == []
        return done


def _cell(column: str, value: Any) -> Any:
    """A value as both sides can be compared: timestamps naive UTC, decimals exact, doubles to 6 places."""
    if value is None:
        return None
    if column == "dt":
        return value if isinstance(value, date) and not isinstance(value, datetime) else date.fromisoformat(str(value)[:10])
    if column in TIMESTAMPS:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment
    if column in DECIMALS:
        return Decimal(str(value))
    if isinstance(value, float):
        return round(value, 6)
    return value


def _rows(mart: str, rows: list[dict[str, Any]]) -> list[tuple]:
    found = [tuple(_cell(c, row[c]) for c in COLUMNS[mart]) for row in rows]
    return sorted(found, key=lambda r: tuple(str(v) for v in r[:KEYS[mart]]))


def gold(url: str) -> dict[str, list[tuple]]:
    """Every mart's gold table, as rows in column order (a mart not yet committed: no rows)."""
    out: dict[str, list[tuple]] = {}
    with get_engine(url).connect() as conn:
        tables = set(inspect(conn).get_table_names())
        for mart in MARTS:
            if mart not in tables:
                out[mart] = []
                continue
            table = Table(mart, MetaData(), autoload_with=conn)
            assert tuple(c.name for c in table.columns) == COLUMNS[mart]
            out[mart] = _rows(mart, [r._asdict() for r in conn.execute(select(table))])
        states = conn.execute(text("SELECT mart, partition_key, status FROM mart_partition")).all()
    assert [tuple(s) for s in states if s[2] != "succeeded"] == []
    return out


def oracle(tickets: dict[date, list], orders: dict[date, list]) -> dict[str, list[tuple]]:
    return {mart: _rows(mart, rows) for mart, rows in expected_marts(tickets, orders).items()}


# --- deliveries ------------------------------------------------------------------------------------

def day_start(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)


def spelled(moment: datetime, offset_form: bool = False) -> str:
    """A contract timestamp: whole seconds or microseconds, `Z` or `+00:00`."""
    text_ = moment.strftime("%Y-%m-%dT%H:%M:%S" + (".%f" if moment.microsecond else ""))
    return text_ + ("+00:00" if offset_form else "Z")


# A day's lines in delivery order: (a JSON object, or a line that is none; whether it is a valid record).
Lines = dict[date, list[tuple[dict | str, bool]]]


def _finish(draw: st.DrawFn, days: list[date], valid: dict[date, list[dict]], invalid: dict[date, list[dict | str]],
            filler: Callable[[date, int], dict]) -> Lines:
    """Each day: its valid lines, then at most a third as many invalid ones (the quarantine ratio stays at
    or under 25 %: never held); a day with nothing valid gets one event."""
    lines: Lines = {}
    for number, day in enumerate(days):
        if not valid[day]:
            valid[day].append(filler(day, number))
        extra = invalid[day][:len(valid[day]) // 3]
        lines[day] = [(r, True) for r in valid[day]] + [(r, False) for r in extra]
    return lines


@st.composite
def ticket_deliveries(draw: st.DrawFn) -> Lines:
    """2-4 delivery days of a few tickets: every priority, channel, event type and status; responses before,
    at and after the SLA deadline, tickets never answered; priority and channel changing on the way; ties
    on updated_at; events delivered days late, again (identical, even spelled otherwise), twice in one
    delivery, conflicting later in their first delivery, too early (future_event); malformed lines and
    contract violations."""
    days = [START + timedelta(days=o) for o in sorted(draw(st.sets(st.integers(0, 4), min_size=2, max_size=4)))]
    slots = (day_start(days[-1]) + timedelta(days=1) - day_start(days[0])) // timedelta(minutes=30)
    valid: dict[date, list[dict]] = {d: [] for d in days}
    invalid: dict[date, list[dict | str]] = {d: [] for d in days}
    serial = itertools.count(1)
    for number in range(1, draw(st.integers(2, 6)) + 1):
        ticket = f"TCK-{number:06d}"
        priority, channel = draw(st.sampled_from(PRIORITIES)), draw(st.sampled_from(CHANNELS))
        created = day_start(days[0]) + timedelta(minutes=30 * draw(st.integers(-96, slots - 1)))
        answered = draw(st.integers(0, 3)) > 0
        for _ in range(draw(st.integers(1, 4))):
            updated = created + timedelta(minutes=draw(st.sampled_from(OFFSETS))) + draw(st.sampled_from(JITTERS))
            record = {
                "event_id": draw(st.sampled_from(ID_PREFIXES)) + f"{next(serial):04d}",
                "ticket_id": ticket,
                "event_type": draw(st.sampled_from(EVENT_TYPES)) if answered else "created",
                "created_at": spelled(created if draw(st.integers(0, 4)) else created - timedelta(minutes=30)),
                "updated_at": spelled(updated),
                "status": draw(st.sampled_from(TICKET_STATUSES)),
                "priority": priority if draw(st.integers(0, 3)) else draw(st.sampled_from(PRIORITIES)),
                "channel": channel if draw(st.integers(0, 4)) else draw(st.sampled_from(CHANNELS)),
                "customer_id": "CUST-000001", "subject": f"ticket {number}", "body": "",
                "product_line": draw(st.sampled_from([None, "billing"])), "tags": draw(st.sampled_from([[], ["vip"]])),
            }
            _deliver(draw, days, valid, invalid, record, updated,
                     conflicting=lambda r: {**r, "status": draw(st.sampled_from([s for s in TICKET_STATUSES
                                                                                  if s != r["status"]])),
                                           "subject": r["subject"] + " (edited)"})
        for day in days:
            if draw(st.integers(0, 5)) == 0:
                invalid[day].append(draw(st.sampled_from(['{"event_id": "broken", ', "[1, 2]", "not json"])))
            if draw(st.integers(0, 5)) == 0:  # a priority outside the contract
                stamp = spelled(day_start(day) + timedelta(hours=8))
                invalid[day].append({"event_id": f"BAD-{next(serial):04d}", "ticket_id": ticket, "event_type": "created",
                                     "created_at": stamp, "updated_at": stamp, "status": "new", "priority": "critical",
                                     "channel": "email", "customer_id": "CUST-000001", "subject": "s", "body": "",
                                     "product_line": None, "tags": []})

    def filler(day: date, number: int) -> dict:
        stamp = spelled(day_start(day) + timedelta(hours=9))
        return {"event_id": f"F-{number}", "ticket_id": f"TCK-{900 + number:06d}", "event_type": "created",
                "created_at": stamp, "updated_at": stamp, "status": "new", "priority": "normal", "channel": "web",
                "customer_id": "CUST-000001", "subject": "filler", "body": "", "product_line": None, "tags": []}

    return _finish(draw, days, valid, invalid, filler)


def _deliver(draw: st.DrawFn, days: list[date], valid: dict[date, list[dict]], invalid: dict[date, list[dict | str]],
             record: dict, updated: datetime, conflicting: Callable[[dict], dict]) -> None:
    """Deliver an event on a day on or after its date (or, dated after the last day, only too early), maybe
    again on another day (identical), twice in its delivery, conflicting at the end of its first day's
    delivery, or too early as well. A conflicting version on a later day than the first is left out: the
    marts depend on the order partitions commit in then (see the test of that below)."""
    possible = [d for d in days if d >= updated.date()]
    early = [d for d in days if d < updated.date()]
    if early and draw(st.integers(0, 4)) == 0:
        invalid[draw(st.sampled_from(early))].append(record)  # future_event
    if not possible:
        return
    day = draw(st.sampled_from(possible))
    delivered = [day]
    valid[day].append(record)
    others = [d for d in possible if d != day]
    if others and draw(st.integers(0, 2)) == 0:
        again = draw(st.sampled_from(others))
        respelled = {**record, "updated_at": spelled(updated, offset_form=True)} if draw(st.booleans()) else record
        valid[again].append(respelled)
        delivered.append(again)
    if draw(st.integers(0, 6)) == 0:
        valid[day].append(record)
    if draw(st.integers(0, 4)) == 0:
        invalid[min(delivered)].append(conflicting(record))


def _cents_text(draw: st.DrawFn) -> Any:
    cents = draw(st.one_of(st.sampled_from([0, 5, 1050, 99_999, 999_999_999_999]), st.integers(0, 10**7)))
    value = Decimal(cents) / 100
    form = draw(st.integers(0, 2))
    if form == 0:
        return f"{value:.2f}"  # a string
    if form == 1:
        return float(value)  # a JSON number, written as its shortest text
    return int(value) if cents % 100 == 0 else f"{value:.2f}"


@st.composite
def order_deliveries(draw: st.DrawFn) -> Lines:
    """1-3 delivery days of a few orders: every status, a few currencies (changing between versions), exact
    amounts written as strings and numbers, ties on updated_at, late, repeated and conflicting events."""
    days = [START + timedelta(days=o) for o in sorted(draw(st.sets(st.integers(0, 3), min_size=1, max_size=3)))]
    valid: dict[date, list[dict]] = {d: [] for d in days}
    invalid: dict[date, list[dict | str]] = {d: [] for d in days}
    serial = itertools.count(1)
    for number in range(1, draw(st.integers(1, 5)) + 1):
        order, currency = f"ORD-{number:06d}", draw(st.sampled_from(CURRENCIES))
        for _ in range(draw(st.integers(1, 4))):
            dated = draw(st.sampled_from(days)) - timedelta(days=draw(st.sampled_from([0, 0, 1])))
            updated = day_start(dated) + timedelta(hours=draw(st.sampled_from([1, 5, 9])))
            record = {
                "event_id": draw(st.sampled_from(["OE-", "oe-"])) + f"{next(serial):04d}",
                "order_id": order, "customer_id": "C-1", "amount": _cents_text(draw),
                "currency": currency if draw(st.integers(0, 3)) else draw(st.sampled_from(CURRENCIES)),
                "status": draw(st.sampled_from(ORDER_STATUSES)), "item_count": draw(st.integers(1, 3)),
                "is_gift": draw(st.booleans()),
                "order_date": (dated - timedelta(days=draw(st.sampled_from([0, 1])))).isoformat(),
                "updated_at": spelled(updated), "weight_kg": None, "tags": [], "attributes": None,
            }
            _deliver(draw, days, valid, invalid, record, updated,
                     conflicting=lambda r: {**r, "status": draw(st.sampled_from([s for s in ORDER_STATUSES
                                                                                  if s != r["status"]])),
                                           "amount": "7.77"})
        for day in days:
            if draw(st.integers(0, 5)) == 0:
                invalid[day].append('{"event_id": "broken", ')

    def filler(day: date, number: int) -> dict:
        return {"event_id": f"OF-{number}", "order_id": f"ORD-{900 + number:06d}", "customer_id": "C-1",
                "amount": "1.00", "currency": "EUR", "status": "paid", "item_count": 1, "is_gift": False,
                "order_date": day.isoformat(), "updated_at": spelled(day_start(day) + timedelta(hours=2)),
                "weight_kg": None, "tags": [], "attributes": None}

    return _finish(draw, days, valid, invalid, filler)


def write_deliveries(root: Path, dataset: str, lines: Lines, split: dict[date, int]) -> None:
    """Each day's lines as one delivery, or two (the first `split[day]` lines produced an hour earlier)."""
    for day, day_lines in lines.items():
        cut = split.get(day, 0) % (len(day_lines) + 1)
        parts = [day_lines[:cut], day_lines[cut:]] if cut else [day_lines]
        for n, part in enumerate(parts):
            name = f"{dataset}-{day}-{'ab'[n]}"
            source = root / "sources" / f"{name}.jsonl"
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r, _ in part))
            write_manifest(root, name, dataset, day, day_start(day) + timedelta(hours=20 + n), [source])


def valid_events(lines: Lines, typed: Callable[[dict], Any]) -> dict[date, list]:
    """Each day's valid events in delivery order, read back from the JSON written (numbers keep their text)."""
    return {day: [typed(parse_line(json.dumps(r).encode())) for r, ok in day_lines if ok]
            for day, day_lines in lines.items()}


def committed(events: dict[date, list], days: set[date]) -> dict[date, list]:
    return {day: found for day, found in events.items() if day in days}


# --- the tests -------------------------------------------------------------------------------------

@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tickets=ticket_deliveries(), orders=order_deliveries(), data=st.data())
def test_marts_equal_the_oracle_after_every_commit_in_any_order(
        tickets: Lines, orders: Lines, data: st.DataObject, fresh_warehouse: Callable[[], AbstractContextManager[str]],
        plain_refresh: None, tmp_path: Path) -> None:
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        root = work / "manifests"
        for dataset, lines in (("tickets", tickets), ("orders", orders)):
            write_deliveries(root, dataset, lines, data.draw(st.fixed_dictionaries(
                {day: st.integers(0, 3) for day in lines}), label=f"{dataset} split"))
        events = {"tickets": valid_events(tickets, ticket_event), "orders": valid_events(orders, order_event)}
        partitions = [("tickets", d) for d in tickets] + [("orders", d) for d in orders]
        order = data.draw(st.permutations(partitions), label="commit order")
        with fresh_warehouse() as url:
            factory = Factory(url, root, work)
            done: dict[str, set[date]] = {"tickets": set(), "orders": set()}
            for dataset, day in order:
                result = factory.run(dataset, day)
                lines = (tickets if dataset == "tickets" else orders)[day]
                # the deliveries are what the test says they are: its invalid lines, and only those, quarantined
                assert (result.counts.total, result.counts.invalid) == (len(lines), sum(not ok for _, ok in lines))
                done[dataset].add(day)
                expected = oracle(committed(events["tickets"], done["tickets"]),
                                  committed(events["orders"], done["orders"]))
                assert gold(url) == expected, f"after committing {dataset}/{day} (order {order})"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_the_shipped_sample_marts_equal_the_oracle(warehouse_url: str, sample_dir: Path, plain_refresh: None,
                                                   tmp_path: Path) -> None:
    """Every sample day of all three marts, the oracle fed from the sample files with the contracts applied
    by tests/oracle.py (malformed lines, violations, future events out; conflicting duplicates to the rule)."""
    factory = Factory(warehouse_url, sample_dir, tmp_path)
    for dataset in ("tickets", "orders"):
        for day in sorted(deliveries_from_manifests(sample_dir, dataset)):
            factory.run(dataset, day)
    expected = oracle(deliveries_from_manifests(sample_dir, "tickets"), deliveries_from_manifests(sample_dir, "orders"))
    assert {m: {r[0] for r in rows} for m, rows in expected.items() if m != "ticket_sla_breaches"} == {
        "ticket_daily_metrics": {date(2026, 4, 14), date(2026, 4, 16), date(2026, 4, 17)},
        "orders_revenue": {date(2026, 4, 14), date(2026, 4, 16), date(2026, 4, 17)}}
    assert gold(warehouse_url) == expected


def _order(event_id: str, order_id: str, day: date, status: str, amount: str) -> dict:
    stamp = spelled(day_start(day) + timedelta(hours=9))
    return {"event_id": event_id, "order_id": order_id, "customer_id": "C-1", "amount": amount, "currency": "EUR",
            "status": status, "item_count": 1, "is_gift": False, "order_date": day.isoformat(), "updated_at": stamp,
            "weight_kg": None, "tags": [], "attributes": None}


@pytest.mark.parametrize("first", ["earlier day first", "later day first"])
def test_a_conflicting_version_on_a_later_day_is_never_revenue(warehouse_url: str, tmp_path: Path,
                                                                 plain_refresh: None, first: str) -> None:
    """OE-1 is first delivered on day 1 (paid 10.00); day 2 delivers OE-1 again with other content
    (refunded 99.00): a conflicting duplicate, quarantined, the first version wins, so day 2's revenue
    holds only its own order OE-2..OE-5 (paid 1.00 each), whichever day commits first."""
    day1, day2 = START, START + timedelta(days=1)
    lines: Lines = {
        day1: [(_order("OE-1", "ORD-000001", day1, "paid", "10.00"), True)],
        day2: [(_order("OE-1", "ORD-000001", day1, "refunded", "99.00"), True)]
        + [(_order(f"OE-{n}", f"ORD-00000{n}", day2, "paid", "1.00"), True) for n in range(2, 6)],
    }
    write_deliveries(tmp_path / "manifests", "orders", lines, {})
    factory = Factory(warehouse_url, tmp_path / "manifests", tmp_path)
    for day in ([day1, day2] if first == "earlier day first" else [day2, day1]):
        factory.run("orders", day)
    expected = oracle({}, valid_events(lines, order_event))
    assert expected["orders_revenue"] == [(day1, "EUR", 1, 1, Decimal("10.00"), Decimal("0.00")),
                                          (day2, "EUR", 4, 4, Decimal("4.00"), Decimal("0.00"))]
    assert gold(warehouse_url)["orders_revenue"] == expected["orders_revenue"]
