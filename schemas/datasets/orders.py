"""Orders: order events from a shop (the second dataset; one field of every kind the factory knows)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import pandera.polars as pa
import polars as pl

from schemas.datasets import DatasetSpec, SyntheticData
from schemas.kinds import json_object

# ISO 4217 active codes (2024), letters only
CURRENCIES = sorted("""
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD
CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ
GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR
LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN
PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB
TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWG
""".split())
STATUSES = ["placed", "paid", "shipped", "delivered", "cancelled", "refunded"]
ORDER_ID_PATTERN = r"^ORD-[0-9]{6,30}$"
MAX_KEY_LENGTH = 200
UTC = pl.Datetime("us", "UTC")


class OrderEvent(pa.DataFrameModel):
    """One order event, typed: a new version of the order each time it changes."""

    event_id: str = pa.Field(str_length={"min_value": 1, "max_value": MAX_KEY_LENGTH})
    order_id: str = pa.Field(str_matches=ORDER_ID_PATTERN)
    customer_id: str = pa.Field(str_length={"min_value": 1, "max_value": MAX_KEY_LENGTH})
    amount: pl.Decimal(12, 2) = pa.Field(ge=0)  # type: ignore[valid-type]
    currency: str
    status: str = pa.Field(isin=STATUSES)
    item_count: int = pa.Field(ge=1, le=10_000)
    is_gift: bool
    order_date: date
    updated_at: UTC  # type: ignore[valid-type]
    weight_kg: float = pa.Field(nullable=True, ge=0)
    tags: pl.List(pl.String)  # type: ignore[valid-type]
    attributes: str = json_object(nullable=True)

    @pa.check("currency", name="iso_4217_code")
    @classmethod
    def iso_4217_code(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).is_in(CURRENCIES))

    @pa.dataframe_check(name="order_date <= updated_at")
    @classmethod
    def ordered_before_updated(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("order_date") <= pl.col("updated_at").dt.date()).fill_null(True))

    class Config:
        strict = False
        coerce = False


def synthetic_orders(day: date, count: int, orders: int, seed: int) -> Iterator[dict[str, Any]]:
    """Valid order events dated inside `day`, spread over `orders` orders; deterministic per seed."""
    rng = random.Random(seed)
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    for n in range(count):
        order = rng.randrange(orders)
        updated = start + timedelta(seconds=rng.randrange(86_400))
        yield {
            "event_id": f"OEV-{day:%Y%m%d}-{seed:04d}-{n:09d}",
            "order_id": f"ORD-{order:08d}",
            "customer_id": f"CUST-{rng.randrange(100_000):06d}",
            "amount": rng.randrange(100, 500_000) / 100,  # a float whose shortest text has two places
            "currency": rng.choice(["EUR", "USD", "GBP", "JPY", "CHF"]),
            "status": rng.choice(STATUSES),
            "item_count": rng.randint(1, 12),
            "is_gift": rng.random() < 0.1,
            "order_date": (updated - timedelta(days=1 + rng.randrange(3))).date().isoformat(),
            "updated_at": updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "weight_kg": rng.choice([None, round(rng.uniform(0.1, 30), 3)]),
            "tags": rng.sample(["express", "fragile", "b2b", "promo"], rng.randint(0, 2)),
            "attributes": rng.choice([None, {"channel": rng.choice(["web", "app"]), "coupon": None}]),
        }


DATASET = DatasetSpec(
    name="orders",
    model=OrderEvent,
    event_key="event_id",
    entity_key="order_id",
    ordering_column="updated_at",
    partition_column="updated_at",
    bronze_table="raw_order_event",
    silver_table="order_fact",
    silver_renames={"event_id": "last_event_id"},
    synthetic=SyntheticData(
        events=synthetic_orders,
        violate=lambda event: {**event, "item_count": str(event["item_count"])},  # "3" where 3 belongs
        edit=lambda event: {**event, "status": "cancelled" if event["status"] != "cancelled" else "paid"},
    ),
)
