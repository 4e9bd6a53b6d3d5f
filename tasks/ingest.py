"""Prefect task wrappers for reading and validating a partition; the plain functions live beside them."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from schemas.datasets import DatasetSpec
from schemas.manifest import SourceManifest
from tasks.manifests import resolve_asset
from tasks.read import RawBatch, read_partition
from tasks.validate import ValidatedBatch, validate_batch


def read_manifests(spec: DatasetSpec, manifests: list[SourceManifest], root: Path) -> RawBatch:
    """Read every asset of already-verified manifests."""
    paths = {(m.manifest_id, i): resolve_asset(m, i, root) for m in manifests for i in range(len(m.assets))}
    return read_partition(spec, manifests, paths)


@task(name="read-assets", cache_policy=NO_CACHE)
def read_assets_task(spec: DatasetSpec, manifests: list[SourceManifest], root: Path) -> RawBatch:
    return read_manifests(spec, manifests, root)


@task(name="validate-contract", cache_policy=NO_CACHE)
def validate_contract_task(spec: DatasetSpec, raw: RawBatch, partition_key: date) -> ValidatedBatch:
    return validate_batch(spec, raw, partition_key)
