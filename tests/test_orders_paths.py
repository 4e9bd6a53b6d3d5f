"""`orders` through every path users take (flows and the CLI), and every field kind's round trip:
wire -> bronze -> silver -> lake -> restore, exactly."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select, text

from flows.partition import run_partition, summary_of
from flows.restore import restore_flow
from schemas.settings import load_settings
from schemas.tables import BRONZE
from tasks.database import get_engine, reading
from tasks.generate import write_manifest
from tasks.lake import open_lake, read_files
from tasks.lake_state import current_record
from tests.conftest import sqlite_only
from tests.helpers import cli, silver_rows

D = date(2026, 4, 17)

# one event per edge of a kind, with what each field must be everywhere after it
WIRE = [
    '{"event_id": "K-1", "order_id": "ORD-0000001", "customer_id": "Ünïcode 客户 \\"q\\"", "amount": 0.10, '
    '"currency": "JPY", "status": "paid", "item_count": 10000, "is_gift": true, "order_date": "2026-04-16", '
    '"updated_at": "2026-04-17T08:30:00.123456Z", "weight_kg": 1e-3, "tags": ["ß", ""], '
    '"attributes": {"z": 1, "a": {"deep": [1, 2.5, "x", null]}, "b": false}}',
    '{"event_id": "K-2", "order_id": "ORD-0000002", "customer_id": "c", "amount": "1234567890.12", '
    '"currency": "EUR", "status": "placed", "item_count": 1, "is_gift": false, "order_date": "2026-04-17", '
    '"updated_at": "2026-04-17T09:00:00+00:00", "weight_kg": null, "tags": [], "attributes": null}',
    '{"event_id": "K-3", "order_id": "ORD-0000003", "customer_id": "c", "amount": 5, '
    '"currency": "USD", "status": "shipped", "item_count": 2, "is_gift": false, "order_date": "2026-04-17", '
    '"updated_at": "2026-04-17T10:00:00Z", "weight_kg": 30, "tags": ["a"], "attributes": {}}',
]
EXPECTED = {  # order_id -> (customer_id, amount, item_count, is_gift, order_date, updated_at, weight, tags, attributes)
    "ORD-0000001": ('Ünïcode 客户 "q"', Decimal("0.10"), 10000, True, date(2026, 4, 16),
                    datetime(2026, 4, 17, 8, 30, 0, 123456), 0.001, ["ß", ""],
                    {"z": 1, "a": {"deep": [1, 2.5, "x", None]}, "b": False}),
    "ORD-0000002": ("c", Decimal("1234567890.12"), 1, False, date(2026, 4, 17), datetime(2026, 4, 17, 9), None, [], None),
    "ORD-0000003": ("c", Decimal("5.00"), 2, False, date(2026, 4, 17), datetime(2026, 4, 17, 10), 30.0, ["a"], {}),
}


def _deliver(manifest_dir: Path) -> None:
    source = manifest_dir / "sources" / "kinds" / "events.jsonl"
    source.parent.mkdir(parents=True)
    source.write_text("\n".join(WIRE) + "\n")
    write_manifest(manifest_dir, "orders-kinds", "orders", D, datetime(2026, 4, 17, 23, 50, tzinfo=timezone.utc),
                   [source])


def _silver(url: str) -> dict[str, tuple]:
    def value(row: dict) -> tuple:
        attributes = row["attributes"]
        return (row["customer_id"], row["amount"], row["item_count"], row["is_gift"], row["order_date"],
                row["updated_at"].astimezone(timezone.utc).replace(tzinfo=None) if row["updated_at"].tzinfo
                else row["updated_at"], row["weight_kg"], json.loads(row["tags"]),
                json.loads(attributes) if isinstance(attributes, str) else attributes)
    return {k: value(v) for k, v in silver_rows(url, "orders").items() if k in EXPECTED}


def test_every_field_kind_round_trips_wire_bronze_silver_lake_and_restore(factory_env: str, sample_dir: Path) -> None:
    _deliver(sample_dir)
    assert run_partition(dataset="orders", partition_key=D).status == "succeeded"
    assert _silver(factory_env) == EXPECTED

    with get_engine(factory_env).connect() as conn:  # bronze keeps the payload as delivered, byte for byte
        payloads = dict(conn.execute(select(BRONZE["orders"].c.event_id, BRONZE["orders"].c._raw_payload)
                                     .where(BRONZE["orders"].c.event_id.like("K-%"))).all())
    assert payloads == {f"K-{n}": line for n, line in enumerate(WIRE, start=1)}

    lake = open_lake(load_settings())
    with reading(get_engine(factory_env)) as conn:
        record = current_record(conn, lake, "orders", D)
    frame = read_files(lake, "orders", D, record)
    assert str(frame.schema["amount"]) == "Decimal(precision=12, scale=2)"
    lake_rows = {r["order_id"]: (r["customer_id"], r["amount"], r["item_count"], r["is_gift"], r["order_date"],
                                 r["updated_at"].replace(tzinfo=None), r["weight_kg"], r["tags"],
                                 None if r["attributes"] is None else json.loads(r["attributes"]))
                 for r in frame.to_dicts() if r["order_id"] in EXPECTED}
    assert lake_rows == EXPECTED

    with get_engine(factory_env).begin() as conn:  # silver lost; restore rebuilds it from the lake
        conn.execute(text("DELETE FROM order_fact"))
    restored = restore_flow(dataset="orders", partition_key=D, snapshot_id=record["snapshot_id"], return_state=True)
    assert summary_of(restored).status == "succeeded"
    assert _silver(factory_env) == EXPECTED


def test_orders_through_the_commands_an_operator_runs(factory_env: str, sample_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    """run (dry-run, execute), backfill, replay, checks, evidence, lake snapshots, restore, status, verify
    and health, on orders, as the CLI runs them, on both warehouses."""
    workspace = sample_dir.parent
    orders = ("--dataset", "orders")

    env = {"FACTORY_DEFAULT_DATASET": "orders", "FACTORY_DATABASE_URL": factory_env}

    def ok(*args: str) -> str:
        code, out, err = cli(monkeypatch, capsys, workspace, *args, env=env)
        assert code == 0, (args, out, err)
        return out

    assert json.loads(ok("run", *orders, "--partition", "2026-04-14", "--mode", "dry-run", "--json"))["status"] == "dry_run"
    assert json.loads(ok("run", "--partition", "2026-04-14", "--json"))["bronze_inserted"] == 28  # the default dataset
    ok("backfill", *orders, "--start", "2026-04-14", "--end", "2026-04-17", "--mode", "execute", "--json")
    assert json.loads(ok("replay", "--manifest-id", "orders-2026-04-16-a", "--json"))["dataset"] == "orders"
    assert "iso_4217_code" not in ok("checks", *orders, "--partition", "2026-04-14")
    evidence = json.loads(ok("evidence", *orders, "--partition", "2026-04-17", "--json"))
    assert evidence["dataset"] == "orders"
    snapshots = json.loads(ok("lake", "snapshots", *orders, "--partition", "2026-04-17", "--json"))
    snapshot = snapshots[0]["snapshot_id"] if isinstance(snapshots, list) else snapshots["snapshots"][0]["snapshot_id"]
    assert json.loads(ok("restore", *orders, "--partition", "2026-04-17", "--snapshot", snapshot, "--json"))["status"] \
        == "succeeded"
    status = json.loads(ok("status", *orders, "--json"))
    assert {p["partition"]: p["status"] for p in status["partitions"] if p["partition"] >= "2026-04-14"} == {
        "2026-04-14": "succeeded", "2026-04-15": "no_input", "2026-04-16": "succeeded", "2026-04-17": "succeeded"}
    ok("verify", *orders)
    code, out, _ = cli(monkeypatch, capsys, workspace, "health", "--json", env=env)  # tickets never ran here
    health = json.loads(out)
    assert (code, health["datasets"]["orders"]["findings"]) == (1, 0)


@sqlite_only
def test_verify_accepts_an_event_that_an_earlier_partition_took_over(factory_env: str, sample_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """2026-04-17 redelivers 04-16's OEV-0416-001 with other content; run 04-17 first and 04-16 takes the
    bronze row over (the earliest delivery wins): 04-17's snapshot still lists its version, now a copy."""
    env = {"FACTORY_DEFAULT_DATASET": "orders"}
    for day in ("2026-04-17", "2026-04-16"):
        assert cli(monkeypatch, capsys, sample_dir.parent, "run", "--partition", day, env=env)[0] == 0
    code, out, _ = cli(monkeypatch, capsys, sample_dir.parent, "verify", "--dataset", "orders", env=env)
    assert code == 0, out


def test_with_several_datasets_a_command_names_one(sample_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("FACTORY_DEFAULT_DATASET", raising=False)
    from flows.cli import main

    monkeypatch.setenv("FACTORY_MANIFEST_DIR", str(sample_dir))
    assert main(["status"]) == 2
    assert capsys.readouterr().err.strip() == ("datafactory: --dataset: several datasets are registered (customers, "
                                               "orders, tickets); name one, or set FACTORY_DEFAULT_DATASET")
