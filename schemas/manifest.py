"""Source manifests: the typed form of `json/source_manifest.schema.json`."""

from __future__ import annotations

import json
from datetime import date, datetime
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

AssetFormat = Literal["jsonl", "csv", "parquet"]

# Partition days the factory handles: a day's window (and any instant a run computes from it) must fit
# every datetime type on the way (Python, Polars, both databases), with room to spare.
PARTITION_RANGE = (date(1900, 1, 1), date(9998, 12, 31))


def partition_out_of_range(day: date) -> str | None:
    """Why `day` cannot be a partition, or None when it can."""
    first, last = PARTITION_RANGE
    if first <= day <= last:
        return None
    return f"{day.isoformat()} is outside the partitions the factory handles ({first} to {last})"


class Asset(BaseModel, frozen=True):
    uri: str
    format: AssetFormat
    sha256: str
    record_count: int


class SourceManifest(BaseModel, frozen=True):
    manifest_id: str
    dataset: str
    modality: str
    partition_key: date
    schema_version: str
    produced_at: datetime
    assets: tuple[Asset, ...]
    path: Path  # where the manifest was found; not part of the JSON

    @property
    def base_dir(self) -> Path:
        return self.path.parent


@cache
def manifest_json_schema() -> dict[str, Any]:
    text = files("schemas").joinpath("json/source_manifest.schema.json").read_text()
    return json.loads(text)
