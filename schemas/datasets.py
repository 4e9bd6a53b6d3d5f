"""Dataset registry (code-first): everything the factory needs to know about a dataset, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import pandera.polars as pa

from schemas.checks import DEFAULT_CHECKS, CheckSpec
from schemas.tickets import TicketEvent


class FieldKind(StrEnum):
    STRING = "string"
    TIMESTAMP = "timestamp"  # ISO-8601 UTC text on the wire, a UTC timestamp in the warehouse
    STRING_LIST = "string_list"  # JSON array of strings; stored as JSON text


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: FieldKind
    nullable: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its contract, keys and tables. Tables are generated from `fields`."""

    name: str
    model: type[pa.DataFrameModel]
    fields: tuple[FieldSpec, ...]
    event_key: str  # bronze idempotency key
    entity_key: str  # silver upsert key
    ordering_column: str  # newer wins by (ordering_column, event_key)
    partition_column: str  # the event time judged against the partition window
    bronze_table: str
    silver_table: str
    # bronze column -> silver column, for columns whose meaning changes in silver
    silver_renames: dict[str, str] = field(default_factory=dict)
    # checks run after every materialization, with their warn and error limits (schemas/checks.py)
    checks: tuple[CheckSpec, ...] = DEFAULT_CHECKS

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.fields if f.name == name)

    @property
    def bronze_fields(self) -> list[FieldSpec]:
        """Typed columns bronze keeps beside the raw payload: just what keys and ordering need."""
        wanted = {self.event_key, self.entity_key, self.ordering_column}
        return [f for f in self.fields if f.name in wanted]

    def silver_name(self, bronze_column: str) -> str:
        return self.silver_renames.get(bronze_column, bronze_column)

    @property
    def required_silver_columns(self) -> list[str]:
        return [self.silver_name(f.name) for f in self.fields if not f.nullable]


S, T, L = FieldKind.STRING, FieldKind.TIMESTAMP, FieldKind.STRING_LIST

TICKETS = DatasetSpec(
    name="tickets",
    model=TicketEvent,
    fields=(
        FieldSpec("event_id", S),
        FieldSpec("ticket_id", S),
        FieldSpec("event_type", S),
        FieldSpec("created_at", T),
        FieldSpec("updated_at", T),
        FieldSpec("status", S),
        FieldSpec("priority", S),
        FieldSpec("channel", S),
        FieldSpec("customer_id", S),
        FieldSpec("subject", S),
        FieldSpec("body", S),
        FieldSpec("product_line", S, nullable=True),
        FieldSpec("tags", L),
    ),
    event_key="event_id",
    entity_key="ticket_id",
    ordering_column="updated_at",
    partition_column="updated_at",
    bronze_table="raw_ticket_event",
    silver_table="ticket_fact",
    silver_renames={"event_id": "last_event_id", "event_type": "last_event_type"},
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (TICKETS,)}


class UnknownDatasetError(KeyError):
    pass


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise UnknownDatasetError(f"unknown dataset {name!r} (known: {known})") from None
