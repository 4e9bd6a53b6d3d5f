"""The writing steps as Prefect tasks: commit_partition (tasks/commit.py) with retries on transient
errors only, declared as materializing the tables (tasks/assets.py), and restore_partition
(tasks/restore.py). Thin wrappers; the plain functions import no Prefect."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from sqlalchemy import Engine

from schemas.datasets import DatasetSpec
from tasks.assets import annotate_assets, table_assets
from tasks.commit import HEARTBEAT_S, Batches, Committed, commit_partition, is_transient
from tasks.lake import Lake
from tasks.ledger import RunIdentity
from tasks.restore import restore_partition


def retry_on_transient(task, task_run, state) -> bool:  # type: ignore[no-untyped-def]
    """Prefect retry_condition_fn: retry only when the failure was transient."""
    try:
        state.result()
    except Exception as exc:  # the state's own exception, re-raised to classify it
        return is_transient(exc)
    return False


@task(name="write-partition", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
      retry_jitter_factor=0.5, retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE)
def commit_partition_task(engine: Engine, spec: DatasetSpec, delivery: Batches, who: RunIdentity,
                          dry_run: bool, force: bool, lake: Lake | None = None,
                          heartbeat_s: float = HEARTBEAT_S) -> Committed:
    """Read, validate and write chunk by chunk, check, snapshot; as a materializing task (see
    tasks/assets.py) it also reports row counts per table. A retry reads the sources again."""
    done = commit_partition(engine, spec, delivery, who, dry_run, force, lake=lake, heartbeat_s=heartbeat_s)
    status = "skipped" if done.result.skipped else "held" if done.held else "succeeded"
    annotate_assets(table_assets(engine.url.render_as_string(), spec), done.who.partition, done.counts, status)
    return done


@task(name="restore-partition", cache_policy=NO_CACHE)
def restore_partition_task(engine: Engine, lake: Lake, spec: DatasetSpec, who: RunIdentity,
                           record: dict[str, Any]) -> Committed:
    return restore_partition(engine, lake, spec, who, record)
