"""Dataset tables follow their contract: an additive change is applied by the next run (old rows null until
a schema_change backfill fills them from bronze); a destructive one is refused, naming the field, until
`schema apply --allow-destructive`; field names that are SQL reserved words or mixed case work."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime, timezone
from pathlib import Path

import pandera.polars as pa
import polars as pl
import pytest
from sqlalchemy import select, text

from schemas import datasets
from schemas.datasets import DatasetSpec
from schemas.datasets.orders import DATASET as ORDERS
from schemas.datasets.orders import OrderEvent
from schemas.tables import schema_change, silver_table
from tasks.database import get_engine
from tasks.errors import SchemaMismatchError
from tasks.generate import write_manifest
from tasks.schema_evolution import evolve
from tests.helpers import cli, ingest, silver_rows

D1, D2 = date(2026, 4, 14), date(2026, 4, 15)


def _order(n: int, day: date, **extra: object) -> str:
    event = {"event_id": f"E-{day:%d}-{n}", "order_id": f"ORD-00000{n}", "customer_id": "c", "amount": 10,
             "currency": "EUR", "status": "paid", "item_count": 1, "is_gift": False, "order_date": day.isoformat(),
             "updated_at": f"{day}T0{n}:00:00Z", "weight_kg": None, "tags": [], "attributes": None, **extra}
    return json.dumps(event)


def _deliver(root: Path, day: date, lines: list[str]) -> None:
    source = root / "sources" / f"{day}.jsonl"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("\n".join(lines) + "\n")
    write_manifest(root, f"o-{day}", "orders", day, datetime(day.year, day.month, day.day, 23, tzinfo=timezone.utc),
                   [source])


def _with_coupon(nullable: bool) -> DatasetSpec:
    """orders with a field the sources have sent all along (`coupon`), as a user would add it to the model."""
    class OrderWithCoupon(OrderEvent):
        coupon: str = pa.Field(nullable=nullable)

    return replace(ORDERS, model=OrderWithCoupon)


def _use(monkeypatch: pytest.MonkeyPatch, spec: DatasetSpec) -> None:
    monkeypatch.setitem(datasets.DATASETS, spec.name, spec)


def _coupons(url: str) -> dict[str, object]:
    return {k: v.get("coupon") for k, v in silver_rows(url, "orders").items()}


def _silver_columns(url: str) -> tuple[list[str], list[str]]:
    """(entity keys, column names) of the silver table as it is, whatever the code's contract says."""
    with get_engine(url).connect() as conn:
        result = conn.execute(text("SELECT * FROM order_fact ORDER BY order_id"))
        return [r.order_id for r in result], list(result.keys())


def _changes(url: str) -> list[tuple[str, str, str | None]]:
    with get_engine(url).connect() as conn:
        return [(r.field, r.change, r.after) for r in conn.execute(select(schema_change).order_by(schema_change.c.id))]


@pytest.fixture
def orders_delivered(warehouse_url: str, tmp_path: Path) -> Path:
    """Two orders ingested under the shipped contract; every record also carried `coupon`."""
    root = tmp_path / "deliveries"
    _deliver(root, D1, [_order(1, D1, coupon="SPRING"), _order(2, D1, coupon="SUMMER")])
    ingest(warehouse_url, root, D1, dataset="orders")
    return root


def test_a_new_nullable_field_is_added_by_the_next_run_and_old_rows_keep_null(
        warehouse_url: str, orders_delivered: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, _with_coupon(nullable=True))
    _deliver(orders_delivered, D2, [_order(3, D2, coupon="AUTUMN")])
    ingest(warehouse_url, orders_delivered, D2, dataset="orders")
    assert _coupons(warehouse_url) == {"ORD-000001": None, "ORD-000002": None, "ORD-000003": "AUTUMN"}
    assert _changes(warehouse_url) == [("coupon", "added", "string null")]


def test_a_schema_change_backfill_fills_old_rows_from_the_bronze_payloads(
        warehouse_url: str, orders_delivered: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, _with_coupon(nullable=True))
    ingest(warehouse_url, orders_delivered, D1, dataset="orders", force=True, reason="schema_change")
    assert _coupons(warehouse_url) == {"ORD-000001": "SPRING", "ORD-000002": "SUMMER"}


def test_a_redelivery_after_a_change_is_a_duplicate_not_a_conflict(
        warehouse_url: str, orders_delivered: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract defines what makes two deliveries the same: bronze's hashes follow the change."""
    _use(monkeypatch, _with_coupon(nullable=True))
    _deliver(orders_delivered, D2, [_order(1, D1, coupon="SPRING")])  # 04-14's first event again
    result, rejected = ingest(warehouse_url, orders_delivered, D2, dataset="orders")
    assert (result.bronze_existing, rejected) == (1, 0)


def test_a_new_required_field_is_refused_naming_it_and_nothing_is_written(
        warehouse_url: str, orders_delivered: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, _with_coupon(nullable=False))
    _deliver(orders_delivered, D2, [_order(3, D2, coupon="AUTUMN")])
    with pytest.raises(SchemaMismatchError) as refused:
        ingest(warehouse_url, orders_delivered, D2, dataset="orders")
    assert str(refused.value) == (
        "orders: field 'coupon' added (string) is not an additive change (1 such change(s)); nothing was written: "
        "run `datafactory schema apply --dataset orders --allow-destructive` (silver is rebuilt from bronze) or "
        "make the change additive (a new field nullable)")
    keys, columns = _silver_columns(warehouse_url)
    assert keys == ["ORD-000001", "ORD-000002"] and "coupon" not in columns
    assert _changes(warehouse_url) == []


def test_schema_apply_allow_destructive_rebuilds_silver_from_bronze(
        warehouse_url: str, orders_delivered: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    _use(monkeypatch, _with_coupon(nullable=False))
    env = {"FACTORY_DATABASE_URL": warehouse_url}
    code, _, err = cli(monkeypatch, capsys, orders_delivered.parent, "schema", "apply", "--dataset", "orders", env=env)
    assert code == 2 and "field 'coupon' added (string) is not an additive change" in err
    code, out, _ = cli(monkeypatch, capsys, orders_delivered.parent, "schema", "apply", "--dataset", "orders",
                       "--allow-destructive", env=env)
    assert code == 0 and out.strip() == "orders: applied 'coupon' added (string)"
    assert _coupons(warehouse_url) == {"ORD-000001": "SPRING", "ORD-000002": "SUMMER"}
    with get_engine(warehouse_url).connect() as conn:
        nullable = {c.name: c.nullable for c in silver_table(_with_coupon(False)).columns}
        assert nullable["coupon"] is False
        row = conn.execute(text("SELECT how FROM schema_change")).scalar_one()
    assert row == "silver rebuilt from bronze (2 entities)"
    _deliver(orders_delivered, D2, [_order(3, D2, coupon="AUTUMN")])  # and runs go on under the new contract
    ingest(warehouse_url, orders_delivered, D2, dataset="orders")
    assert _coupons(warehouse_url)["ORD-000003"] == "AUTUMN"


def test_an_apply_that_current_events_cannot_fill_is_refused_naming_one(
        warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "deliveries"
    _deliver(root, D1, [_order(1, D1, coupon="SPRING"), _order(2, D1)])  # the second never sent one
    ingest(warehouse_url, root, D1, dataset="orders")
    _use(monkeypatch, _with_coupon(nullable=False))
    with pytest.raises(SchemaMismatchError, match=r"^orders: 1 entities' current events do not fit the new contract "
                                                  r"\(first: ORD-000002: required: coupon\); nothing was changed"):
        with get_engine(warehouse_url).begin() as conn:
            evolve(conn, datasets.DATASETS["orders"], datetime.now(timezone.utc), "test", allow_destructive=True)
    assert "coupon" not in _silver_columns(warehouse_url)[1]  # rolled back: nothing was changed


def test_a_removed_field_is_refused_then_applied(warehouse_url: str, orders_delivered: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spec = replace(ORDERS, model=_drop_field(OrderEvent, "weight_kg"))
    _use(monkeypatch, spec)
    with pytest.raises(SchemaMismatchError, match="field 'weight_kg' removed .was float null. is not an additive"):
        ingest(warehouse_url, orders_delivered, D1, dataset="orders", force=True)
    with get_engine(warehouse_url).begin() as conn:
        applied = evolve(conn, spec, datetime.now(timezone.utc), "test", allow_destructive=True)
    assert [str(c) for c in applied] == ["'weight_kg' removed (was float null)"]
    assert "weight_kg" not in next(iter(silver_rows(warehouse_url, "orders").values()))


def _drop_field(model: type[pa.DataFrameModel], name: str) -> type[pa.DataFrameModel]:
    """The model without one field: its schema with the column removed, as a user deleting the line."""
    schema = model.to_schema().remove_columns([name])

    class Slim(pa.DataFrameModel):
        class Config:
            strict = False

    Slim.to_schema = classmethod(lambda cls: schema)  # type: ignore[method-assign, assignment]
    Slim.validate = classmethod(lambda cls, frame, **kw: schema.validate(frame, **kw))  # type: ignore[method-assign, assignment]
    Slim.__name__ = f"{model.__name__}Without{name}"
    return Slim


# --- reserved words and mixed case ---------------------------------------------------------------

class Awkward(pa.DataFrameModel):
    event_id: str
    Order: str = pa.Field(str_length={"min_value": 1})  # mixed case, the entity key
    group: int = pa.Field(alias="group")
    select: pl.Decimal(10, 2) = pa.Field(alias="select", nullable=True)  # type: ignore[valid-type]
    from_: str = pa.Field(alias="from")
    user: str = pa.Field(alias="User Name", nullable=True)
    updated_at: pl.Datetime("us", "UTC")  # type: ignore[valid-type]

    class Config:
        strict = False


AWKWARD = DatasetSpec(name="awkward", model=Awkward, event_key="event_id", entity_key="Order",
                      ordering_column="updated_at", partition_column="updated_at", bronze_table="raw_awkward_event",
                      silver_table="awkward_fact", silver_renames={"event_id": "last_event_id"})


def test_reserved_words_and_mixed_case_field_names_work(warehouse_url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, AWKWARD)
    root = tmp_path / "deliveries"
    source = root / "sources" / "a.jsonl"
    source.parent.mkdir(parents=True)
    lines = [{"event_id": "a1", "Order": "X", "group": 1, "select": "1.50", "from": "here", "User Name": "ß",
              "updated_at": "2026-04-14T01:00:00Z"},
             {"event_id": "a2", "Order": "X", "group": 2, "select": None, "from": "there", "User Name": None,
              "updated_at": "2026-04-14T02:00:00Z"},
             {"event_id": "a3", "Order": "Y", "group": "3", "select": 1, "from": "x", "updated_at": "2026-04-14T03:00:00Z"}]
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    write_manifest(root, "awk-1", "awkward", D1, datetime(2026, 4, 14, 23, tzinfo=timezone.utc), [source])
    result, rejected = ingest(warehouse_url, root, D1, dataset="awkward")
    assert (result.bronze_inserted, rejected) == (2, 1)
    rows = silver_rows(warehouse_url, "awkward")
    assert {k: (v["last_event_id"], v["group"], v["select"], v["from"], v["User Name"]) for k, v in rows.items()} == {
        "X": ("a2", 2, None, "there", None)}


def test_the_documented_backfill_fills_old_rows_through_the_cli(warehouse_url: str, orders_delivered: Path,
                                                                prefect_harness: None,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    """README, *Change a dataset*: `schema status`, then `backfill --all --reason schema_change`."""
    _use(monkeypatch, _with_coupon(nullable=True))
    env = {"FACTORY_DATABASE_URL": warehouse_url, "FACTORY_MANIFEST_DIR": str(orders_delivered)}
    workspace = orders_delivered.parent
    code, out, _ = cli(monkeypatch, capsys, workspace, "schema", "status", "--dataset", "orders", env=env)
    assert (code, out.splitlines()[1:]) == (0, ["  'coupon' added (string null): additive, the next run applies it"])
    code, out, err = cli(monkeypatch, capsys, workspace, "backfill", "--dataset", "orders", "--start", "2026-04-14",
                         "--end", "2026-04-14", "--mode", "execute", "--all", "--reason", "schema_change", env=env)
    assert code == 0, out + err
    assert _coupons(warehouse_url) == {"ORD-000001": "SPRING", "ORD-000002": "SUMMER"}
    assert _changes(warehouse_url) == [("coupon", "added", "string null")]


def test_a_csv_delivery_reads_the_same_from_bronze_after_a_change_as_from_its_file(
        warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bronze keeps a CSV row's cells as delivered: a field added later reads from bronze as a new delivery
    of the file would read it (an empty cell is null, "1.5" a float), so the schema_change rerun finds the
    same events (no conflicting copies) and fills silver with the file's values."""
    import csv as csv_module
    import io

    root = tmp_path / "deliveries"
    header = ["event_id", "order_id", "customer_id", "amount", "currency", "status", "item_count", "is_gift",
              "order_date", "updated_at", "weight_kg", "tags", "attributes", "coupon", "discount"]
    rows = [["E-1", "ORD-000001", "c", "10.00", "EUR", "paid", "1", "false", "2026-04-14", "2026-04-14T01:00:00Z",
             "", "[]", "", "", "1.5"],
            ["E-2", "ORD-000002", "c", "11.00", "EUR", "paid", "2", "true", "2026-04-14", "2026-04-14T02:00:00Z",
             "2.5", "[]", "", "X", ""]]
    out = io.StringIO()
    csv_module.writer(out, lineterminator="\n").writerows([header, *rows])
    source = root / "sources" / "orders.csv"
    source.parent.mkdir(parents=True)
    source.write_text(out.getvalue())
    write_manifest(root, "o-csv", "orders", D1, datetime(2026, 4, 14, 23, tzinfo=timezone.utc), [source])
    ingest(warehouse_url, root, D1, dataset="orders")

    class WithCouponAndDiscount(OrderEvent):
        coupon: str = pa.Field(nullable=True)
        discount: float = pa.Field(nullable=True)

    _use(monkeypatch, replace(ORDERS, model=WithCouponAndDiscount))
    result, rejected = ingest(warehouse_url, root, D1, dataset="orders", force=True, reason="schema_change")
    assert (result.bronze_existing, result.conflicting, rejected) == (2, 0, 0)
    assert {k: (v["coupon"], v["discount"]) for k, v in silver_rows(warehouse_url, "orders").items()} == {
        "ORD-000001": (None, 1.5), "ORD-000002": ("X", None)}


def test_schema_apply_rebuild_fills_every_old_row_whatever_its_partitions_state(
        warehouse_url: str, orders_delivered: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    _use(monkeypatch, _with_coupon(nullable=True))
    env = {"FACTORY_DATABASE_URL": warehouse_url, "FACTORY_MANIFEST_DIR": str(orders_delivered)}
    workspace = orders_delivered.parent
    code, out, _ = cli(monkeypatch, capsys, workspace, "schema", "apply", "--dataset", "orders", "--rebuild", env=env)
    assert (code, out.splitlines()) == (0, ["orders: applied 'coupon' added (string null)",
                                            "orders: silver rebuilt from bronze (2 entities)"])
    assert _coupons(warehouse_url) == {"ORD-000001": "SPRING", "ORD-000002": "SUMMER"}


def test_schema_status_exits_1_while_a_change_waits_for_an_operator(
        warehouse_url: str, orders_delivered: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    _use(monkeypatch, _with_coupon(nullable=False))
    env = {"FACTORY_DATABASE_URL": warehouse_url, "FACTORY_MANIFEST_DIR": str(orders_delivered)}
    code, out, _ = cli(monkeypatch, capsys, orders_delivered.parent, "schema", "status", "--dataset", "orders", env=env)
    assert (code, out.splitlines()[1:]) == (1, ["  'coupon' added (string): needs `datafactory schema apply "
                                                "--allow-destructive`"])


def test_an_apply_that_dies_midway_leaves_the_tables_as_they_were(
        warehouse_url: str, orders_delivered: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault after silver was dropped and recreated, before it is filled: the transaction rolls back,
    silver keeps its rows and columns, nothing is logged, and the apply run again succeeds."""
    import tasks.schema_evolution as evolution

    spec = _with_coupon(nullable=False)
    _use(monkeypatch, spec)

    def dies(*_: object) -> None:
        raise RuntimeError("killed between the new table and its rows")

    monkeypatch.setattr(evolution, "winners_from_bronze", dies)
    with pytest.raises(RuntimeError):
        with get_engine(warehouse_url).begin() as conn:
            evolve(conn, spec, datetime.now(timezone.utc), "test", allow_destructive=True)
    keys, columns = _silver_columns(warehouse_url)
    assert keys == ["ORD-000001", "ORD-000002"] and "coupon" not in columns and _changes(warehouse_url) == []
    monkeypatch.undo()
    _use(monkeypatch, spec)
    with get_engine(warehouse_url).begin() as conn:
        evolve(conn, spec, datetime.now(timezone.utc), "test", allow_destructive=True)
    assert _coupons(warehouse_url) == {"ORD-000001": "SPRING", "ORD-000002": "SUMMER"}
