"""An independent oracle for the three shipped marts (schemas/marts/*.sql), in plain Python: no DuckDB, no
SQL, no Polars, nothing of the factory's. Each mart is computed from the header's words:

ticket_sla_breaches (dt)
    Tickets as the factory knew them at the end of delivery day dt: every ticket event delivered up to
    dt, each once. A ticket is at its greatest event by (updated_at, event_id). Its deadline is created_at
    plus the SLA of its priority (urgent 1 h, high 4 h, normal 24 h, low 72 h); a response is any event of
    the ticket other than `created`. A row for each ticket whose deadline falls on dt (UTC) without a
    response by then; minutes_late runs to the response, or to the end of dt.

ticket_daily_metrics (dt)
    The same tickets, grouped by their greatest event's priority and channel: opened (created on dt),
    solved (now solved or closed, greatest event on dt), backlog (not solved or closed), the median
    first-response minutes of the tickets opened on dt that had a response, the median resolution
    minutes (created_at to the greatest event) of the tickets solved on dt, and the SLA breaches of dt.
    A group with nothing to count is left out.

orders_revenue (dt)
    The orders whose events were delivered on dt, each at its greatest version in that delivery by
    (updated_at, event_id), each event once, by currency: orders, paid_orders (paid, shipped or
    delivered), revenue (their amounts) and refunded (amounts at status refunded); decimals exact.

Durations are counted as the SQL counts them (DuckDB's date_diff('second', a, b): whole-second
boundaries crossed, i.e. the difference of the two instants' epoch seconds, each truncated), then
divided by 60 and rounded to 3 places; medians are statistics.median of the exact minutes.

Which events a partition holds is the dataset rule, written out here too: an event's winner is its
first valid delivery (days in order, a day's records in delivery order); a day keeps, once, each event
it delivered whose content is the winner's (an identical redelivery counts on every day that delivered
it; a conflicting duplicate, never). The caller decides what is valid: `deliveries_from_manifests`
applies the contracts of tests/oracle.py to real manifests; the property test builds only events whose
validity it knows.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from tests.oracle import CONTRACTS, _jsonl_records, amount_of, csv_records, parse_ts

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SLA = {"urgent": timedelta(hours=1), "high": timedelta(hours=4), "normal": timedelta(hours=24),
       "low": timedelta(hours=72)}
SOLVED = frozenset({"solved", "closed"})
PAID = frozenset({"paid", "shipped", "delivered"})
MARTS = ("ticket_state", "ticket_sla_breaches", "ticket_daily_metrics", "orders_revenue")


@dataclass(frozen=True)
class TicketEvent:
    """A valid ticket event, typed (timestamps UTC-aware); `content` is what makes two deliveries the same."""

    event_id: str
    ticket_id: str
    event_type: str
    created_at: datetime
    updated_at: datetime
    status: str
    priority: str
    channel: str
    content: tuple


@dataclass(frozen=True)
class OrderEvent:
    event_id: str
    order_id: str
    currency: str
    status: str
    amount: Decimal
    updated_at: datetime
    content: tuple


Event = TypeVar("Event", TicketEvent, OrderEvent)


def ticket_event(obj: Mapping[str, Any]) -> TicketEvent:
    """A valid ticket record (a parsed JSON object) as the oracle needs it."""
    created, updated = parse_ts(obj["created_at"]), parse_ts(obj["updated_at"])
    assert created is not None and updated is not None, obj
    return TicketEvent(obj["event_id"], obj["ticket_id"], obj["event_type"], created, updated, obj["status"],
                       obj["priority"], obj["channel"], CONTRACTS["tickets"].content(dict(obj)))


def order_event(obj: Mapping[str, Any]) -> OrderEvent:
    updated, amount = parse_ts(obj["updated_at"]), amount_of(obj["amount"])
    assert updated is not None and amount is not None, obj
    return OrderEvent(obj["event_id"], obj["order_id"], obj["currency"], obj["status"], amount, updated,
                      CONTRACTS["orders"].content(dict(obj)))


# --- which events each partition holds -------------------------------------------------------------

def accepted_by_day(valid: Mapping[date, Sequence[Event]]) -> dict[date, list[Event]]:
    """Per delivery day, the events it holds: each event once, when its content is its winner's (the
    first valid delivery over the days in order and each day's records in delivery order)."""
    winner: dict[str, tuple] = {}
    for day in sorted(valid):
        for event in valid[day]:
            winner.setdefault(event.event_id, event.content)
    held: dict[date, list[Event]] = {}
    for day in sorted(valid):
        seen: set[str] = set()
        held[day] = []
        for event in valid[day]:
            if event.event_id not in seen and event.content == winner[event.event_id]:
                seen.add(event.event_id)
                held[day].append(event)
    return held


def delivered_up_to(held: Mapping[date, Sequence[TicketEvent]], dt: date) -> list[TicketEvent]:
    """Every event delivered on a day up to dt, each once (all copies of an event held are the winner)."""
    events: dict[str, TicketEvent] = {}
    for day in sorted(held):
        if day <= dt:
            for event in held[day]:
                events.setdefault(event.event_id, event)
    return list(events.values())


def greatest(events: Iterable[Event], entity: str) -> dict[str, Event]:
    """Each entity at its greatest event by (updated_at, event_id), compared as Python compares them."""
    best: dict[str, Event] = {}
    for event in events:
        key = getattr(event, entity)
        if key not in best or (event.updated_at, event.event_id) > (best[key].updated_at, best[key].event_id):
            best[key] = event
    return best


def first_responses(events: Iterable[TicketEvent]) -> dict[str, datetime]:
    """Per ticket, the earliest updated_at of its events other than `created`."""
    first: dict[str, datetime] = {}
    for event in events:
        if event.event_type != "created":
            if event.ticket_id not in first or event.updated_at < first[event.ticket_id]:
                first[event.ticket_id] = event.updated_at
    return first


# --- durations as the SQL counts them ---------------------------------------------------------------

def micros_between(start: datetime, end: datetime) -> int:
    """Elapsed microseconds (the SQL's epoch_us(end) - epoch_us(start))."""
    return (end - start) // timedelta(microseconds=1)


def minutes(values: Sequence[Fraction]) -> float | None:
    """round(x, 3) of one value (or of the median of several), None for none."""
    if not values:
        return None
    return float(round(statistics.median(values), 3))


def as_minutes(micros: int) -> Fraction:
    return Fraction(micros, 60_000_000)


def end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


# --- the marts ---------------------------------------------------------------------------------------

def ticket_state(held: Mapping[date, Sequence[TicketEvent]], dt: date) -> list[dict[str, Any]]:
    events = delivered_up_to(held, dt)
    responses = first_responses(events)
    return [{"dt": dt, "ticket_id": ticket_id, "status": current.status, "priority": current.priority,
             "channel": current.channel, "created_at": current.created_at, "updated_at": current.updated_at,
             "last_event_id": current.event_id, "first_response_at": responses.get(ticket_id)}
            for ticket_id, current in sorted(greatest(events, "ticket_id").items())]


def ticket_sla_breaches(held: Mapping[date, Sequence[TicketEvent]], dt: date) -> list[dict[str, Any]]:
    events = delivered_up_to(held, dt)
    responses = first_responses(events)
    rows = []
    for ticket_id, current in sorted(greatest(events, "ticket_id").items()):
        deadline = current.created_at + SLA[current.priority]
        response = responses.get(ticket_id)
        if utc_day(deadline) != dt or (response is not None and response <= deadline):
            continue
        late = micros_between(deadline, response if response is not None else end_of(dt))
        rows.append({"dt": dt, "ticket_id": ticket_id, "priority": current.priority, "channel": current.channel,
                     "created_at": current.created_at, "deadline": deadline, "first_response_at": response,
                     "minutes_late": minutes([as_minutes(late)])})
    return rows


def ticket_daily_metrics(held: Mapping[date, Sequence[TicketEvent]], dt: date) -> list[dict[str, Any]]:
    events = delivered_up_to(held, dt)
    responses = first_responses(events)
    breaches: dict[tuple[str, str], int] = {}
    for row in ticket_sla_breaches(held, dt):
        group = (row["priority"], row["channel"])
        breaches[group] = breaches.get(group, 0) + 1
    groups: dict[tuple[str, str], list[TicketEvent]] = {}
    for current in greatest(events, "ticket_id").values():
        groups.setdefault((current.priority, current.channel), []).append(current)
    rows = []
    for (priority, channel), tickets in sorted(groups.items()):
        opened = [t for t in tickets if utc_day(t.created_at) == dt]
        solved = [t for t in tickets if t.status in SOLVED and utc_day(t.updated_at) == dt]
        backlog = [t for t in tickets if t.status not in SOLVED]
        first_response = [as_minutes(micros_between(t.created_at, responses[t.ticket_id]))
                          for t in opened if t.ticket_id in responses]
        resolution = [as_minutes(micros_between(t.created_at, t.updated_at)) for t in solved]
        sla = breaches.get((priority, channel), 0)
        if len(opened) + len(solved) + len(backlog) + sla == 0:
            continue
        rows.append({"dt": dt, "priority": priority, "channel": channel, "opened": len(opened),
                     "solved": len(solved), "backlog": len(backlog),
                     "median_first_response_minutes": minutes(first_response),
                     "median_resolution_minutes": minutes(resolution), "sla_breaches": sla})
    return rows


def orders_revenue(held: Mapping[date, Sequence[OrderEvent]], dt: date) -> list[dict[str, Any]]:
    events: dict[str, OrderEvent] = {}
    for event in held.get(dt, []):
        events.setdefault(event.event_id, event)
    by_currency: dict[str, list[OrderEvent]] = {}
    for current in greatest(events.values(), "order_id").values():
        by_currency.setdefault(current.currency, []).append(current)
    rows = []
    for currency, orders in sorted(by_currency.items()):
        paid = [o for o in orders if o.status in PAID]
        rows.append({"dt": dt, "currency": currency, "orders": len(orders), "paid_orders": len(paid),
                     "revenue": sum((o.amount for o in paid), Decimal("0.00")),
                     "refunded": sum((o.amount for o in orders if o.status == "refunded"), Decimal("0.00"))})
    return rows


def expected_marts(tickets: Mapping[date, Sequence[TicketEvent]],
                   orders: Mapping[date, Sequence[OrderEvent]]) -> dict[str, list[dict[str, Any]]]:
    """Every mart's rows for every delivery day of its anchor dataset, from each day's valid events in
    delivery order."""
    held_tickets, held_orders = accepted_by_day(tickets), accepted_by_day(orders)
    return {
        "ticket_state": [r for day in sorted(held_tickets) for r in ticket_state(held_tickets, day)],
        "ticket_sla_breaches": [r for day in sorted(held_tickets) for r in ticket_sla_breaches(held_tickets, day)],
        "ticket_daily_metrics": [r for day in sorted(held_tickets) for r in ticket_daily_metrics(held_tickets, day)],
        "orders_revenue": [r for day in sorted(held_orders) for r in orders_revenue(held_orders, day)],
    }


# --- real deliveries: the contracts of tests/oracle.py applied to manifests -----------------------------

def deliveries_from_manifests(manifest_dir: Path, dataset: str) -> dict[date, list[Any]]:
    """Each delivery day's valid events of `dataset`, in delivery order (manifests by partition,
    produced_at, id; assets and lines in order): malformed lines, contract violations and events dated
    after the end of their delivery day are left out."""
    contract = CONTRACTS[dataset]
    typed = ticket_event if dataset == "tickets" else order_event
    manifests = [json.loads(p.read_text()) for p in sorted(manifest_dir.glob("*.json"))]
    manifests = sorted((m for m in manifests if m["dataset"] == dataset),
                       key=lambda m: (m["partition_key"], parse_ts(m["produced_at"]), m["manifest_id"]))
    valid: dict[date, list[Any]] = {}
    for manifest in manifests:
        day = date.fromisoformat(manifest["partition_key"])
        events = valid.setdefault(day, [])
        for asset in manifest["assets"]:
            data = (manifest_dir / asset["uri"]).read_bytes()
            if asset["format"] == "csv":
                assert contract.cell is not None
                records = csv_records(data, contract.cell)
            else:
                records = _jsonl_records(data)
            for _, obj in records:
                if obj is None or contract.violations(obj):
                    continue
                if parse_ts(obj["updated_at"]) >= end_of(day):  # type: ignore[operator]
                    continue
                events.append(typed(obj))
    return valid
