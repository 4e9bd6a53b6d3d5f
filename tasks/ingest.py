"""Prefect task wrappers for reading and validating a partition; the plain functions live beside them."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from schemas.datasets import DatasetSpec
from schemas.manifest import SourceManifest
from schemas.reason_codes import ActionReason
from tasks.errors import InputError
from tasks.manifests import resolve_asset
from tasks.read import RawBatch, read_partition
from tasks.validate import ValidatedBatch, validate_batch


def read_manifests(spec: DatasetSpec, manifests: list[SourceManifest], root: Path) -> RawBatch:
    """Read every asset of already-verified manifests. An s3:// asset is fetched again here, so its
    digest is checked again: the object may have changed since the (cached) verification."""
    paths = {(m.manifest_id, i): resolve_asset(m, i, root) for m in manifests for i in range(len(m.assets))}
    for (manifest_id, index), path in paths.items():
        manifest = next(m for m in manifests if m.manifest_id == manifest_id)
        asset = manifest.assets[index]
        if asset.uri.startswith("s3://") and hashlib.sha256(path.read_bytes()).hexdigest() != asset.sha256:
            raise InputError(manifest.path, None, f"assets[{index}].sha256",
                             f"{asset.uri} changed since it was verified", ActionReason.SOURCE_FINGERPRINT_CHANGED)
    return read_partition(spec, manifests, paths)


@task(name="read-assets", cache_policy=NO_CACHE)
def read_assets_task(spec: DatasetSpec, manifests: list[SourceManifest], root: Path) -> RawBatch:
    return read_manifests(spec, manifests, root)


@task(name="validate-contract", cache_policy=NO_CACHE)
def validate_contract_task(spec: DatasetSpec, raw: RawBatch, partition_key: date) -> ValidatedBatch:
    return validate_batch(spec, raw, partition_key)
