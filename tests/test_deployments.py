"""deployments/prefect.yaml: every entrypoint loads, every parameter it sets is valid, schedules parse."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema

from tests.conftest import REPO

SPEC = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}


def _schema(deployment: dict[str, Any]) -> dict[str, Any]:
    flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
    return parameter_schema(flow.fn).model_dump(exclude_none=True)


def test_every_flow_the_design_names_is_deployed_on_the_work_pool() -> None:
    assert {d["entrypoint"] for d in SPEC["deployments"]} == {
        "flows/partition.py:partition_flow", "flows/backfill.py:backfill_flow", "flows/replay.py:replay_flow",
        "flows/restore.py:restore_flow", "flows/health.py:health_flow", "flows/verify.py:verify_flow",
        "flows/pull.py:pull_flow", "flows/marts.py:marts_flow"}
    assert {d["work_pool"]["name"] for d in SPEC["deployments"]} == {"data-factory"}


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_deployment_parameters_validate_against_the_flow(name: str) -> None:
    schema = _schema(DEPLOYMENTS[name])
    given = DEPLOYMENTS[name].get("parameters", {})
    assert set(given) <= set(schema["properties"])
    jsonschema.Draft202012Validator({**schema, "required": []}).validate(given)


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_every_parameter_has_a_description_for_the_ui_form(name: str) -> None:
    properties = _schema(DEPLOYMENTS[name])["properties"]
    assert [p for p, spec in properties.items() if not spec.get("description")] == []


def test_the_daily_run_is_scheduled_early_each_utc_day_and_health_hourly() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    daily, hourly = DEPLOYMENTS["tickets-daily"]["schedules"][0], DEPLOYMENTS["hourly"]["schedules"][0]
    CronSchedule(cron=daily["cron"], timezone=daily["timezone"])  # Prefect's own validation
    CronSchedule(cron=hourly["cron"], timezone=hourly["timezone"])
    assert daily["cron"].split()[1:] == ["2", "*", "*", "*"] and hourly["cron"].split()[1] == "*"
    assert daily["timezone"] == hourly["timezone"] == "UTC"


def test_every_pulled_dataset_is_pulled_hourly() -> None:
    from prefect.client.schemas.schedules import IntervalSchedule

    from schemas.datasets import DATASETS

    pulled = {name for name, spec in DATASETS.items() if spec.pulled}
    hourly = {d["parameters"]["dataset"]: d for d in SPEC["deployments"] if d["entrypoint"] == "flows/pull.py:pull_flow"}
    assert set(hourly) == pulled
    for deployment in hourly.values():
        schedule = deployment["schedules"][0]
        assert IntervalSchedule(interval=schedule["interval"], anchor_date=schedule["anchor_date"]).interval.total_seconds() == 3600


def test_every_dataset_with_marts_runs_them_on_its_silver_tables_materialization_event() -> None:
    from flows.marts import load_graph
    from schemas.datasets import DATASETS
    from schemas.settings import load_settings
    from tasks.assets import table_assets

    graph = load_graph(load_settings())
    with_marts = {name for name in DATASETS if graph.downstream_of({name})}
    triggered = {d["parameters"]["dataset"]: d["triggers"][0] for d in SPEC["deployments"]
                 if d["entrypoint"] == "flows/marts.py:marts_flow"}
    assert set(triggered) == with_marts == {"tickets", "orders"}
    for dataset, trigger in triggered.items():
        silver = table_assets("sqlite:///w.db", DATASETS[dataset])["silver"]  # the event names the asset so
        assert trigger["match"] == {"prefect.resource.name": silver.properties.name}
        assert trigger["expect"] == ["prefect.asset.materialization.succeeded"]
