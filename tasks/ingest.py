"""The manifest step as a Prefect task: a thin, cached wrapper over tasks/manifests.py (which imports no
Prefect, so the CLI's reads and the tests stay light). Reading and validating happen chunk by chunk inside
the write step (tasks/delivery.py, tasks/materialize.py)."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import date
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from schemas.manifest import SourceManifest
from tasks.manifests import partition_manifests


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
