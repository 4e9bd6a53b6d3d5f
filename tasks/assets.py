"""Prefect assets: the tables a partition run materializes, from the source files it read, with row counts.

Prefect has no partitions, so each run's metadata names its partition; lineage (sources -> bronze,
silver, quarantine) and per-run counts then show on the asset pages of the Prefect UI.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from prefect import Task
from prefect.assets import Asset, AssetProperties
from prefect.context import AssetContext
from prefect.tasks import MaterializingTask
from sqlalchemy.engine import make_url

from schemas.datasets import DatasetSpec
from schemas.manifest import SourceManifest
from schemas.summary import RunCounts


MAX_KEY = 512  # Prefect's limit on an asset key
_RESTRICTED = re.compile(r"""[\s#?&%"'<>\[\]{}|\\^`\x00-\x1f\x7f]""")  # what Prefect refuses in a key


def asset_key(uri: str) -> str:
    """A Prefect asset key for a URI: the characters Prefect refuses become `_`, and a key that had to
    change (or be shortened) ends in a hash of the real URI, so two files never share a key."""
    safe = _RESTRICTED.sub("_", uri)
    if safe == uri and len(uri) <= MAX_KEY:
        return uri
    digest = hashlib.sha256(uri.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{safe[: MAX_KEY - len(digest) - 1]}~{digest}"


def warehouse_location(database_url: str) -> str:
    """Where the warehouse is, as an asset key prefix, without credentials."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return f"sqlite://{Path(url.database or ':memory:').resolve()}"
    return f"postgresql://{url.host or 'localhost'}:{url.port or 5432}/{url.database}"


def table_assets(database_url: str, spec: DatasetSpec) -> dict[str, Asset]:
    """layer -> the asset of the table that holds it."""
    where = warehouse_location(database_url)
    described = {
        "bronze": (spec.bronze_table, f"{spec.name} bronze: one row per {spec.event_key}, raw payload kept"),
        "silver": (spec.silver_table, f"{spec.name} silver: one row per {spec.entity_key}, its greatest event"),
        "quarantine": ("quarantine", "records that broke a contract, with reason code and line"),
    }
    return {layer: Asset(key=asset_key(f"{where}/{table}"), properties=AssetProperties(name=f"{spec.name}.{table}",
                                                                           description=text))
            for layer, (table, text) in described.items()}


def source_assets(manifests: list[SourceManifest]) -> list[Asset]:
    """The files a run reads; URIs that are already URLs (s3://) stay as they are."""
    keys = []
    for manifest in manifests:
        for asset in manifest.assets:
            keys.append(asset.uri if "://" in asset.uri else f"file://{(manifest.base_dir / asset.uri).resolve()}")
    return [Asset(key=asset_key(key)) for key in dict.fromkeys(keys)]


def as_materialization(task: Task, assets: dict[str, Asset], sources: list[Asset]) -> MaterializingTask:
    """The same task (options included), declared as materializing the tables from the sources."""
    return MaterializingTask(
        fn=task.fn, assets=list(assets.values()), asset_deps=list[Asset | str](sources), name=task.name,
        retries=task.retries,
        retry_delay_seconds=task.retry_delay_seconds, retry_jitter_factor=task.retry_jitter_factor,
        retry_condition_fn=task.retry_condition_fn, cache_policy=task.cache_policy,
        task_run_name=task.task_run_name,
    )


def annotate_assets(assets: dict[str, Asset], partition: str, counts: RunCounts, status: str) -> None:
    """Row counts of this run on each table asset; a no-op outside a materializing task (a dry run)."""
    context = AssetContext.get()
    if context is None:
        return
    by_layer = {
        "bronze": {"rows_inserted": counts.bronze_inserted, "rows_existing": counts.bronze_existing},
        "silver": {"rows_inserted": counts.silver_inserted, "rows_updated": counts.silver_updated,
                   "rows_unchanged": counts.silver_unchanged + counts.silver_stale_skipped},
        "quarantine": {"rows_inserted": counts.quarantine_inserted, "records_invalid": counts.invalid},
    }
    declared = {asset.key for asset in context.downstream_assets}
    for layer, asset in assets.items():
        if asset.key in declared:
            context.add_asset_metadata(asset.key, {"partition": partition, "status": status, **by_layer[layer]})
