"""Customers: pulled from a CRM's JSON API by `updated_at` (schemas/sources.py), not delivered as files.

The API has no event id: the event key is built from the customer and the instant of the change
(`event_key_from`), so the same version of a customer read by two pulls (the lookback overlaps) is one
event, and a changed record with the same `updated_at` is a conflict, quarantined. `make demo` serves the
shipped fixture (data/api/customers.json) on loopback and pulls it twice; point the source at your API
with FACTORY_SOURCE_URLS='{"customers": "https://crm.example.com/api/customers"}'.
"""

from __future__ import annotations

from datetime import timedelta

import pandera.polars as pa
import polars as pl

from schemas.datasets import DatasetSpec
from schemas.sources import HttpSource, Paging

TIERS = ["free", "pro", "enterprise"]
UTC = pl.Datetime("us", "UTC")


class CustomerVersion(pa.DataFrameModel):
    """One version of a customer, as the API returns it."""

    version_id: str = pa.Field(str_length={"min_value": 1, "max_value": 200})  # customer_id@updated_at
    customer_id: str = pa.Field(str_matches=r"^CUST-[0-9]{6}$")
    name: str = pa.Field(str_length={"min_value": 1})
    email: str = pa.Field(nullable=True, str_matches=r"^[^@\s]+@[^@\s]+$")
    tier: str = pa.Field(isin=TIERS)
    country: str = pa.Field(str_matches=r"^[A-Z]{2}$")
    updated_at: UTC  # type: ignore[valid-type]

    class Config:
        strict = False
        coerce = False


DATASET = DatasetSpec(
    name="customers",
    model=CustomerVersion,
    event_key="version_id",
    entity_key="customer_id",
    ordering_column="updated_at",
    partition_column="updated_at",
    bronze_table="raw_customer_version",
    silver_table="customer_dim",
    silver_renames={"version_id": "last_version_id"},
    source=HttpSource(
        url="http://127.0.0.1:8765/customers",
        paging=Paging.PAGE_NUMBER,
        records_path="data",
        since_param="updated_since",
        page_param="page",
        size_param="page_size",
        page_size=5,
        cursor_field="updated_at",
        key_field="customer_id",
        event_key_from=("customer_id", "updated_at"),
        lookback=timedelta(hours=1),
        settle=timedelta(minutes=5),
        backoff_seconds=0.1,  # the demo's API says when to come back (Retry-After): no need to wait longer
    ),
)
