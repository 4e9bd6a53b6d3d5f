"""The reading steps as Prefect tasks: thin wrappers over the plain functions in tasks/manifests.py,
tasks/read.py and tasks/validate.py (which import no Prefect, so the CLI's reads and the tests stay light)."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import date
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from schemas.datasets import DatasetSpec
from schemas.manifest import SourceManifest
from tasks.manifests import partition_manifests, read_manifests
from tasks.read import RawBatch
from tasks.validate import ValidatedBatch, validate_batch


def _stat_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Cache key: the manifest directory's files, with size and mtime; any edit invalidates it."""
    root = Path(parameters["manifest_dir"]).resolve()
    stats = []
    for path in root.rglob("*"):
        try:
            info = path.stat()
        except OSError:
            continue  # a broken link: parsing names it, the key need not
        if stat.S_ISREG(info.st_mode):
            stats.append((str(path), info.st_size, info.st_mtime_ns))
    key = json.dumps([str(root), parameters["dataset"], str(parameters["partition_key"]),
                      parameters.get("accept_changed", False), sorted(stats)])
    return hashlib.sha256(key.encode()).hexdigest()


@task(name="validate-manifests", cache_key_fn=_stat_cache_key, persist_result=True)
def validate_manifests_task(manifest_dir: Path, dataset: str, partition_key: date,
                            accept_changed: bool = False) -> list[SourceManifest]:
    """Verified manifests for a partition; cached until any file under the manifest dir changes."""
    return partition_manifests(manifest_dir, dataset, partition_key, accept_changed)


@task(name="read-assets", cache_policy=NO_CACHE)
def read_assets_task(spec: DatasetSpec, manifests: list[SourceManifest], root: Path) -> RawBatch:
    return read_manifests(spec, manifests, root)


@task(name="validate-contract", cache_policy=NO_CACHE)
def validate_contract_task(spec: DatasetSpec, raw: RawBatch, partition_key: date) -> ValidatedBatch:
    return validate_batch(spec, raw, partition_key)
