"""The second dataset, `orders` (one field of every kind), against the independent oracle: random deliveries
full of defects, JSONL and CSV, ingested in a random order, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import os
import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from schemas.tables import BRONZE
from tasks.database import get_engine
from tasks.generate import write_manifest
from tasks.manifests import discover_manifests
from tests.helpers import ingest, quarantine_rows, silver_rows
from tests.oracle import expected_state

START = date(2026, 4, 10)
STATUSES = ["placed", "paid", "shipped", "delivered", "cancelled", "refunded"]


def _json_line(fields: dict[str, str]) -> str:
    """An object from (key, JSON text of the value): numbers are written exactly as given."""
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}"


def _amount_text(rng: random.Random, cents: int) -> str:
    """One amount, spelled as senders spell it: trailing zeros or not, a string, an integer."""
    whole, part = divmod(cents, 100)
    form = rng.randrange(4)
    if form == 0:
        return f"{whole}.{part:02d}"
    if form == 1:
        return f"{whole}.{part:02d}".rstrip("0").rstrip(".") if part else str(whole)
    if form == 2:
        return json.dumps(f"{whole}.{part:02d}")
    return f"{whole}.{part:02d}00"


def _event(rng: random.Random, n: int, day: date) -> dict[str, str]:
    """A valid order event as JSON texts per field; few orders and hours, so ties and contests are common."""
    window = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc)
    updated = window + timedelta(hours=rng.choice([1, 5, 9]) - 24 * rng.choice([0, 0, 1, 3]))
    attributes = rng.choice([None, {"channel": "web", "n": 3}, {"n": 3, "channel": "web"},
                             {"nested": {"deep": [1, 2.5, "x"]}, "flag": True}])
    return {
        "event_id": json.dumps(rng.choice(["oe", "OE"]) + f"-{n:05d}"),
        "order_id": json.dumps(f"ORD-{rng.randrange(10):07d}"),
        "customer_id": json.dumps(rng.choice(["C-1", "C-2", "Ünïcode-客户"])),
        "amount": _amount_text(rng, rng.choice([0, 5, 1050, 99999, 123456789012])),
        "currency": json.dumps(rng.choice(["EUR", "USD", "JPY"])),
        "status": json.dumps(rng.choice(STATUSES)),
        "item_count": str(rng.choice([1, 2, 10_000])),
        "is_gift": rng.choice(["true", "false"]),
        "order_date": json.dumps((updated - timedelta(days=rng.choice([0, 1]))).date().isoformat()),
        "updated_at": json.dumps(updated.strftime(rng.choice(["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%f+00:00"]))),
        "weight_kg": rng.choice(["null", "0", "1.5", "2.50", "1e-3"]),
        "tags": json.dumps(rng.sample(["a", "b", "ß"], rng.randint(0, 2))),
        "attributes": json.dumps(attributes),
    }


VIOLATIONS: list[tuple[str, str]] = [
    ("amount", "19.990000000000002"),  # a float where a decimal belongs
    ("amount", "1.5e2"),
    ("amount", '"12,50"'),
    ("amount", "-1.00"),
    ("amount", "12345678901.00"),  # 11 digits before the point
    ("amount", "true"),
    ("item_count", '"3"'),
    ("item_count", "3.0"),
    ("item_count", "0"),
    ("item_count", "true"),
    ("item_count", "9223372036854775808"),
    ("is_gift", '"yes"'),
    ("is_gift", "0"),
    ("order_date", '"2026-02-30"'),
    ("order_date", '"2026/04/01"'),
    ("order_date", "20260401"),
    ("order_date", '"2026-05-01"'),  # after its update
    ("updated_at", '"2026-04-12 10:00:00"'),
    ("weight_kg", '"heavy"'),
    ("weight_kg", "-0.5"),
    ("tags", '"a,b"'),
    ("tags", "[1]"),
    ("tags", '["a", null]'),
    ("attributes", "[1, 2]"),
    ("attributes", '"x"'),
    ("attributes", '{"k": "nul\\u0000"}'),
    ("currency", '"EURO"'),
    ("status", '"lost"'),
    ("customer_id", '"a\\u0000b"'),
    ("order_id", '"ORD-1"'),
]

CSV_FIELDS = ["event_id", "order_id", "customer_id", "amount", "currency", "status", "item_count", "is_gift",
              "order_date", "updated_at", "weight_kg", "tags", "attributes"]


def _csv_cell(text: str) -> str:
    """A field's JSON text as a CSV cell: strings bare, null empty, lists and objects as JSON."""
    value = json.loads(text)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value if isinstance(value, str) else text


def make_deliveries(root: Path, seed: int, days: int = 4) -> list[date]:
    rng = random.Random(seed)
    history: list[dict[str, str]] = []
    counter = 0
    for offset in range(days):
        day = START + timedelta(days=offset)
        for delivery in range(rng.choice([1, 2])):
            events: list[dict[str, str] | str] = []
            for _ in range(rng.randint(12, 24)):
                roll = rng.random()
                if roll < 0.45 or not history:
                    counter += 1
                    event = _event(rng, counter, day)
                    history.append(event)
                    events.append(event)
                elif roll < 0.55:
                    events.append(dict(rng.choice(history)))  # redelivery (maybe of a later day's event)
                elif roll < 0.62:  # other content under a known event id, or the same content spelled otherwise
                    events.append(dict(rng.choice(history), status=json.dumps(rng.choice(STATUSES))))
                elif roll < 0.68 and events:
                    events.append(rng.choice(events))  # in-batch duplicate
                elif roll < 0.72:
                    events.append('{"event_id": "broken", ')
                elif roll < 0.92:
                    counter += 1
                    name, bad = rng.choice(VIOLATIONS)
                    events.append({**_event(rng, counter, day), name: bad})
                else:
                    counter += 1
                    future = _event(rng, counter, day)
                    future["updated_at"] = json.dumps(f"{day + timedelta(days=1)}T00:00:00Z")
                    events.append(future)
            as_csv = rng.random() < 0.3
            source = root / "sources" / f"{day}-{delivery}.{'csv' if as_csv else 'jsonl'}"
            source.parent.mkdir(parents=True, exist_ok=True)
            if as_csv:
                out = io.StringIO()
                writer = csv.writer(out, lineterminator="\n")
                writer.writerow(CSV_FIELDS)
                for event in events:
                    if isinstance(event, dict):
                        writer.writerow([_csv_cell(event[f]) for f in CSV_FIELDS])
                    else:
                        writer.writerow(["broken"])  # one cell where the header has 13
                source.write_text(out.getvalue())
            else:
                source.write_text("".join((e if isinstance(e, str) else _json_line(e)) + "\n" for e in events))
            write_manifest(root, f"o-{day}-{delivery}", "orders", day,
                           datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=20 + delivery),
                           [source])
    return [START + timedelta(days=offset) for offset in range(days)]


def assert_matches_oracle(url: str, root: Path) -> None:
    expected = expected_state(root, "orders")
    with get_engine(url).connect() as conn:
        table = BRONZE["orders"]
        bronze = {r.event_id: (r.updated_at.replace(tzinfo=None), r._partition_key) for r in conn.execute(select(table))}
    assert bronze == {e: (content[9].replace(tzinfo=None), p) for e, (content, p) in expected.bronze.items()}

    def stored(row: dict) -> tuple:
        attributes = row["attributes"]
        return (row["last_event_id"], row["updated_at"].replace(tzinfo=None), row["status"], row["amount"],
                row["item_count"], row["is_gift"], row["order_date"].isoformat(), row["weight_kg"],
                json.loads(row["tags"]), json.loads(attributes) if isinstance(attributes, str) else attributes)

    silver = {k: stored(v) for k, v in silver_rows(url, "orders").items()}
    assert silver == {k: (e, t.replace(tzinfo=None), *rest) for k, (e, t, *rest) in expected.silver.items()}
    assert all(isinstance(v[3], Decimal) for v in silver.values())  # exact, never a float

    rows = quarantine_rows(url, "orders")
    assert {(q["partition_key"], q["source_uri"], q["line_number"], q["reason_code"]) for q in rows} == expected.quarantine
    assert len(rows) == len(expected.quarantine)


SEEDS = [int(s) for s in os.environ.get("ORACLE_SEEDS", "1,2,3,4").split(",")]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_orders_in_random_order_match_the_oracle(warehouse_url: str, tmp_path: Path, seed: int) -> None:
    """Bronze, silver (every kind, decimals exact) and quarantine equal the oracle's, whatever the order."""
    root = tmp_path / "deliveries"
    root.mkdir()
    days = make_deliveries(root, seed)
    random.Random(seed * 7).shuffle(days)
    for day in days:
        ingest(warehouse_url, root, day, dataset="orders")
    assert_matches_oracle(warehouse_url, root)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_reruns_and_replays_of_orders_keep_the_oracle_state(warehouse_url: str, tmp_path: Path, seed: int) -> None:
    root = tmp_path / "deliveries"
    root.mkdir()
    days = make_deliveries(root, seed)
    rng = random.Random(seed)
    for day in rng.sample(days, len(days)):
        ingest(warehouse_url, root, day, dataset="orders")
    manifests = [(m.partition_key, m.manifest_id) for m in discover_manifests(root)]
    for _ in range(4):
        day, manifest_id = rng.choice(manifests)
        ingest(warehouse_url, root, day, force=True, dataset="orders",
               manifest_id=manifest_id if rng.random() < 0.5 else None)
    assert_matches_oracle(warehouse_url, root)


def test_the_shipped_orders_sample_matches_the_oracle(warehouse_url: str, sample_dir: Path) -> None:
    """Every defect the sample carries (README, "Sample data") ends where the oracle says."""
    for day in (date(2026, 4, 17), date(2026, 4, 14), date(2026, 4, 16)):
        ingest(warehouse_url, sample_dir, day, dataset="orders")
    assert_matches_oracle(warehouse_url, sample_dir)
