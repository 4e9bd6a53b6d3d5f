"""marts_flow: bring marts up to date, partition by partition, in dependency order; then the catalog.

Which mart partitions run is decided from the ledger alone (tasks/mart_plan.py): missing, stale (an
input's snapshot, the input set or the model changed), failed, or released from a hold. Fresh ones are
left alone, so running it after every commit costs a plan, not a recompute. Each partition that runs is
one Prefect task run; a mart's partitions run after every mart it reads.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed, State
from sqlalchemy import Engine

from schemas.datasets import DATASETS
from schemas.mart_models import Freshness, MartModel
from schemas.settings import FactorySettings, load_settings
from tasks.catalog import refresh_catalog
from tasks.database import get_engine, reading
from tasks.errors import InputError
from tasks.lake import Lake, open_lake
from tasks.mart_compute import InputFiles
from tasks.mart_evidence import MartOutcome, outcomes_markdown
from tasks.mart_models import MartGraph, load_models
from tasks.mart_plan import PartitionPlan, plan_mart
from tasks.marts import refresh_partition_task, repair_markers
from tasks.report import refresh_delivery_summary


def load_graph(settings: FactorySettings) -> MartGraph:
    return load_models(Path(settings.marts_dir), DATASETS)


def selected(graph: MartGraph, dataset: str | None, mart: str | None) -> list[MartModel]:
    """A mart and the marts it reads; or every mart downstream of a dataset; or all of them."""
    if mart is not None:
        return graph.with_upstream_marts({graph.get(mart).name})
    if dataset is not None:
        if dataset not in DATASETS:
            raise InputError("--dataset", None, "dataset", f"{dataset!r} is not a registered dataset")
        return graph.downstream_of({dataset})
    return list(graph.models.values())


def plan_marts(engine: Engine, graph: MartGraph, models: list[MartModel], start: date | None,
               end: date | None) -> list[PartitionPlan]:
    """What a run would do now (upstream marts as they are: a run recomputes them first, so a downstream
    partition planned fresh here may still run)."""
    with reading(engine) as conn:
        return [p for m in models for p in plan_mart(conn, graph, m, start, end)]


def refresh_marts(settings: FactorySettings, engine: Engine, lake: Lake, graph: MartGraph, models: list[MartModel],
                  start: date | None, end: date | None, repair: bool = False) -> list[MartOutcome]:
    """Each mart in dependency order: plan it (after its upstream marts committed), then run what is due.
    With `repair`, fresh partitions' lake markers are checked too (and moved where a failure left them)."""
    files = InputFiles(lake, graph, engine)
    outcomes: list[MartOutcome] = []
    flow_run_id = str(flow_run.id) if flow_run.id else None
    try:
        for model in models:
            with reading(engine) as conn:
                plans = plan_mart(conn, graph, model, start, end)
            if repair:
                for note in repair_markers(engine, lake, [p for p in plans if p.freshness is Freshness.FRESH]):
                    get_run_logger().warning(note)
            for plan in plans:
                if plan.to_compute or plan.held_by:
                    outcome = refresh_partition_task(engine, lake, graph, model, plan, files, Path(settings.report_dir),
                                                     flow_run_id)
                    if outcome.run_id is not None:
                        outcomes.append(outcome)
    finally:
        files.close()
    return outcomes


def _report(settings: FactorySettings, engine: Engine, lake: Lake, graph: MartGraph,
            outcomes: list[MartOutcome], refresh_summary: bool = True) -> None:
    """The run's artifact, log lines and delivery summary, then the catalog regenerated."""
    from prefect.artifacts import create_markdown_artifact

    logger = get_run_logger()
    for outcome in outcomes:
        logger.info("%s/%s: %s -> %s (%s)", outcome.plan.mart, outcome.plan.partition, outcome.plan.freshness.value,
                    outcome.status, outcome.error or outcome.plan.why)
    if outcomes:
        create_markdown_artifact(key="marts-run", markdown=outcomes_markdown(outcomes),
                                 description="mart partitions recomputed, held or failed by this run")
        if refresh_summary:
            refresh_delivery_summary(settings)
    note = refresh_catalog(engine, lake)
    if note:
        logger.warning(note)


@flow(name="marts-flow")
def marts_flow(dataset: str | None = None, mart: str | None = None, start: date | None = None,
               end: date | None = None) -> list[dict[str, object]] | State:
    """Recompute the mart partitions that are missing, stale, failed or released, in dependency order,
    and hold those whose inputs are held; then regenerate the lake's catalog.

    Args:
        dataset: only the marts downstream of this dataset (what runs after one of its partitions commits)
        mart: only this mart (and the marts it reads)
        start: first mart partition to consider, YYYY-MM-DD; empty = the first there is
        end: last mart partition to consider; empty = the last there is
    """
    settings = load_settings()
    engine = get_engine(settings.database_url)
    lake = open_lake(settings)
    graph = load_graph(settings)
    outcomes = refresh_marts(settings, engine, lake, graph, selected(graph, dataset, mart), start, end, repair=True)
    _report(settings, engine, lake, graph, outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        return Failed(message=f"{len(failed)} mart partitions failed: " + "; ".join(
            f"{o.plan.mart}/{o.plan.partition}: {o.error}" for o in failed[:3]), data=[o.as_dict() for o in outcomes])
    return [o.as_dict() for o in outcomes]


def after_commit(settings: FactorySettings, dataset: str, refresh_summary: bool = True) -> list[MartOutcome]:
    """After partitions of `dataset` committed (a run, a backfill, a restore, a pull), inside that flow
    run: its downstream marts (one task run per partition recomputed), then the catalog. Marts are off
    with FACTORY_MARTS_AFTER_COMMIT=false (a marts deployment run by the partition's asset event instead);
    the catalog is regenerated either way. Never fails the commit it follows. `refresh_summary=False`:
    the caller regenerates the delivery summary itself (a backfill, once at its end)."""
    logger = get_run_logger()
    engine = get_engine(settings.database_url)
    lake = open_lake(settings)
    graph = MartGraph({}, frozenset(DATASETS))
    try:
        if settings.marts_after_commit:
            graph = load_graph(settings)
    except InputError as exc:  # the commit stands; the models need fixing before marts can run
        logger.error("marts not refreshed: %s", exc)
    outcomes: list[MartOutcome] = []
    try:
        if settings.marts_after_commit and graph.downstream_of({dataset}):
            outcomes = refresh_marts(settings, engine, lake, graph, graph.downstream_of({dataset}), None, None)
        _report(settings, engine, lake, graph, outcomes, refresh_summary)
    except Exception as exc:  # the partitions committed; `marts status` / `health` show what is left to do
        logger.error("downstream marts of %s not brought up to date (`datafactory marts run`): %s: %s", dataset,
                     type(exc).__name__, exc)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        logger.warning("downstream marts of %s: %d failed (`datafactory marts status`): %s", dataset, len(failed),
                       failed[0].error)
    return outcomes
