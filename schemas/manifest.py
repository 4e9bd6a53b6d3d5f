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
