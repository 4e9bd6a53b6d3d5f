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
from tasks.manifests import asset_files, asset_error
from tasks.read import RawBatch, UnreadableAsset, read_partition
from tasks.validate import ValidatedBatch, validate_batch


def read_manifests(spec: DatasetSpec, manifests: list[SourceManifest], root: Path) -> RawBatch:
    """Read every asset of already-verified manifests. An s3:// asset is fetched again here, so its
    digest is checked again: the object may have changed since the (cached) verification."""
    with asset_files(manifests, root) as paths:
        for manifest in manifests:
            for index, asset in enumerate(manifest.assets):
                path = paths[(manifest.manifest_id, index)]
                if asset.uri.startswith("s3://") and hashlib.sha256(path.read_bytes()).hexdigest() != asset.sha256:
                    raise asset_error(manifest, index, "sha256", f"{asset.uri} changed since it was verified",
                                      ActionReason.SOURCE_FINGERPRINT_CHANGED)
        try:
            return read_partition(spec, manifests, paths)
        except UnreadableAsset as exc:
            raise asset_error(exc.manifest, exc.index, "format", str(exc)) from None


@task(name="read-assets", cache_policy=NO_CACHE)
def read_assets_task(spec: DatasetSpec, manifests: list[SourceManifest], root: Path) -> RawBatch:
    return read_manifests(spec, manifests, root)


@task(name="validate-contract", cache_policy=NO_CACHE)
def validate_contract_task(spec: DatasetSpec, raw: RawBatch, partition_key: date) -> ValidatedBatch:
    return validate_batch(spec, raw, partition_key)
