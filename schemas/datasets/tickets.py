"""Tickets: support-ticket events (DESIGN section 6). The model is the contract: one annotation per
field names its kind, `nullable=True` where a field may be null, and the rules; the factory checks each
value's kind (and that no text holds NUL) before these rules run."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import pandera.polars as pa
import polars as pl

from schemas.datasets import DatasetSpec, SyntheticData

EVENT_TYPES = ["created", "updated", "commented", "status_changed", "closed"]
STATUSES = ["new", "open", "pending", "on_hold", "solved", "closed"]
PRIORITIES = ["low", "normal", "high", "urgent"]
CHANNELS = ["email", "chat", "phone", "web", "api"]

TICKET_ID_PATTERN = r"^TCK-[0-9]{6,30}$"
# Keys are indexed: PostgreSQL refuses index entries above ~2.7 kB, so a key has a length limit.
MAX_KEY_LENGTH = 200
UTC = pl.Datetime("us", "UTC")


class TicketEvent(pa.DataFrameModel):
    """One ticket event, typed."""

    event_id: str = pa.Field(str_length={"min_value": 1, "max_value": MAX_KEY_LENGTH})
    ticket_id: str = pa.Field(str_matches=TICKET_ID_PATTERN)
    event_type: str = pa.Field(isin=EVENT_TYPES)
    created_at: UTC  # type: ignore[valid-type]
    updated_at: UTC  # type: ignore[valid-type]
    status: str = pa.Field(isin=STATUSES)
    priority: str = pa.Field(isin=PRIORITIES)
    channel: str = pa.Field(isin=CHANNELS)
    customer_id: str = pa.Field(str_length={"min_value": 1})
    subject: str = pa.Field(str_length={"min_value": 1})
    body: str
    product_line: str = pa.Field(nullable=True)
    tags: pl.List(pl.String)  # type: ignore[valid-type]

    @pa.dataframe_check(name="updated_at >= created_at")
    @classmethod
    def updated_not_before_created(cls, data: pa.PolarsData) -> pl.LazyFrame:
        # a timestamp that did not parse is reported by its own column, not here
        return data.lazyframe.select((pl.col("updated_at") >= pl.col("created_at")).fill_null(True).alias("ok"))

    class Config:
        strict = False  # extra fields are kept in the raw payload; drift is a check, not a rejection
        coerce = False


def synthetic_tickets(day: date, count: int, tickets: int, seed: int) -> Iterator[dict[str, Any]]:
    """Valid ticket events dated inside `day`, spread over `tickets` tickets; deterministic per seed."""
    rng = random.Random(seed)
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    for n in range(count):
        ticket = rng.randrange(tickets)
        updated = start + timedelta(seconds=rng.randrange(86_400))
        created = updated - timedelta(seconds=rng.randrange(3 * 86_400))
        yield {
            "event_id": f"EV-{day:%Y%m%d}-{seed:04d}-{n:09d}",
            "ticket_id": f"TCK-{ticket:08d}",
            "event_type": rng.choice(EVENT_TYPES),
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "updated_at": updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "status": rng.choice(STATUSES),
            "priority": rng.choice(PRIORITIES),
            "channel": rng.choice(CHANNELS),
            "customer_id": f"CUST-{rng.randrange(100_000):06d}",
            "subject": f"Ticket {ticket} about order {rng.randrange(10**6)}",
            "body": "Customer reports an issue with their order; details follow. " * rng.randint(1, 3),
            "product_line": rng.choice([None, "billing", "shipping", "accounts", "mobile"]),
            "tags": rng.sample(["vip", "refund", "bug", "urgent", "follow-up", "sla"], rng.randint(0, 3)),
        }


DATASET = DatasetSpec(
    name="tickets",
    model=TicketEvent,
    event_key="event_id",
    entity_key="ticket_id",
    ordering_column="updated_at",
    partition_column="updated_at",
    bronze_table="raw_ticket_event",
    silver_table="ticket_fact",
    silver_renames={"event_id": "last_event_id", "event_type": "last_event_type"},
    synthetic=SyntheticData(
        events=synthetic_tickets,
        violate=lambda event: {**event, "priority": "x-" + event["priority"]},
        edit=lambda event: {**event, "subject": event["subject"] + " (edited)"},
    ),
)
