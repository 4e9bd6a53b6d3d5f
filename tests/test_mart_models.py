"""Mart models are files; a folder that cannot make a dependency graph is refused in one line naming
the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.datasets import DATASETS
from tasks.errors import InputError
from tasks.mart_models import load_models

SHIPPED = Path(__file__).resolve().parent.parent / "schemas" / "marts"


def _folder(tmp_path: Path, **models: str) -> Path:
    for name, sql in models.items():
        (tmp_path / f"{name}.sql").write_text(sql)
    return tmp_path


def _refusal(tmp_path: Path, **models: str) -> str:
    with pytest.raises(InputError) as refused:
        load_models(_folder(tmp_path, **models), DATASETS)
    assert "\n" not in str(refused.value)
    return str(refused.value).replace(str(tmp_path) + "/", "")


def test_the_shipped_marts_load_in_dependency_order() -> None:
    graph = load_models(SHIPPED, DATASETS)
    order = list(graph.models)
    assert set(order) == {"orders_revenue", "ticket_state", "ticket_sla_breaches", "ticket_daily_metrics"}
    assert order.index("ticket_state") < order.index("ticket_sla_breaches") < order.index("ticket_daily_metrics")
    assert graph.models["ticket_daily_metrics"].columns["median_first_response_minutes"] == "DOUBLE"
    assert graph.models["orders_revenue"].columns["revenue"] == "DECIMAL(18,2)"


def test_a_cycle_is_refused_naming_the_file_line_and_the_cycle(tmp_path: Path) -> None:
    message = _refusal(tmp_path, a="-- grain: dt\n-- upstream: tickets\n-- upstream: b\nSELECT $dt AS dt",
                       b="-- grain: dt\n-- upstream: a\nSELECT $dt AS dt")
    assert message == "a.sql:3: upstream: cycle: a -> b -> a"


def test_a_mart_reading_itself_is_a_cycle(tmp_path: Path) -> None:
    assert _refusal(tmp_path, a="-- grain: dt\n-- upstream: a[-1:0]\nSELECT $dt AS dt") == \
        "a.sql:2: upstream: cycle: a -> a"


def test_an_unknown_upstream_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, a="-- grain: dt\n-- upstream: tikets\nSELECT $dt AS dt")
    assert message == "a.sql:2: upstream: 'tikets' is neither a dataset (customers, orders, tickets) nor a mart"


def test_a_grain_that_is_not_a_date_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, a="-- grain: dt\n-- upstream: tickets\nSELECT 'x' AS dt")
    assert message == "a.sql:1: grain: dt is VARCHAR, not a DATE (a daily partition column)"


def test_a_grain_missing_from_the_select_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, a="-- upstream: tickets\n-- grain: day\nSELECT $dt AS dt")
    assert message == "a.sql:2: grain: the SELECT has no column day"


def test_sql_reading_a_table_it_does_not_declare_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, a="-- grain: dt\n-- upstream: tickets\nSELECT $dt AS dt FROM orders")
    assert message.startswith("a.sql: sql: DuckDB cannot bind it: Catalog Error: Table with name orders does not exist")


def test_a_window_without_its_own_day_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, a="-- grain: dt\n-- upstream: tickets[-7:-1]\nSELECT $dt AS dt")
    assert message.startswith("a.sql:2: upstream: no upstream window holds day 0")


@pytest.mark.parametrize(("header", "expected"), [
    ("-- grain: dt\n-- upstreams: tickets", "a.sql:2: upstreams: unknown header key (grain, upstream, policy, check, assert)"),
    ("-- grain: dt\n-- upstream: tickets[0:-1]", "a.sql:2: upstream: window [0:-1] ends before it starts"),
    ("-- grain: dt\n-- upstream: tickets\n-- policy: ignore", "a.sql:3: policy: 'ignore' is not hold or refresh"),
    ("-- grain: dt\n-- upstream: tickets\n-- check: error unique(nope)", "a.sql:3: check: unique(nope): no column nope"),
    ("-- grain: dt\n-- upstream: tickets\n-- check: warn row_count_change(0.5)\n-- check: error row_count_change(2)",
     "a.sql:4: row_count_change: row_count_change is declared twice (line 3): one check per name"),
    ("-- grain: dt\n-- upstream: tickets\n-- check: fatal unique(dt)",
     "a.sql:3: check: write `-- check: error|warn unique(col, …)`, `not_null(col, …)` or `row_count_change(ratio)`"),
])
def test_a_bad_header_line_is_refused_naming_its_line(tmp_path: Path, header: str, expected: str) -> None:
    assert _refusal(tmp_path, a=header + "\nSELECT $dt AS dt") == expected


def test_a_mart_named_like_a_dataset_or_table_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, ticket_fact="-- grain: dt\n-- upstream: tickets\nSELECT $dt AS dt")
    assert message == "ticket_fact.sql: file name: 'ticket_fact' is already a dataset or a warehouse table"


def test_a_column_with_no_warehouse_type_is_refused_at_load(tmp_path: Path) -> None:
    message = _refusal(tmp_path, a="-- grain: dt\n-- upstream: tickets\nSELECT $dt AS dt, list(tags) AS all_tags FROM tickets")
    assert message.startswith("a.sql: all_tags: a mart column of type VARCHAR[][] has no warehouse type")


def test_an_assertion_that_does_not_bind_is_refused_at_load(tmp_path: Path) -> None:
    message = _refusal(tmp_path, a="-- grain: dt\n-- upstream: tickets\n-- assert: error none: SELECT * FROM thiss\n"
                       "SELECT $dt AS dt")
    assert message.startswith("a.sql:3: assert: none: DuckDB cannot bind it: Catalog Error: Table with name thiss")


def test_a_missing_models_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nowhere: FACTORY_MARTS_DIR: is not a folder"):
        load_models(tmp_path / "nowhere", DATASETS)


def test_a_second_grain_line_is_refused(tmp_path: Path) -> None:
    assert _refusal(tmp_path, a="-- grain: dt\n-- upstream: tickets\n-- grain: day\nSELECT $dt AS dt") == \
        "a.sql:3: grain: declared twice (line 1)"
