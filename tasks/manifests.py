"""Discover source manifests, validate them (schema, rules, asset sha256 and record_count), fingerprint them."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tempfile
import uuid
from datetime import date
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import polars as pl
from prefect import task
from prefect.context import TaskRunContext

from schemas.datasets import DATASETS
from schemas.manifest import Asset, SourceManifest, manifest_json_schema
from schemas.reason_codes import ActionReason
from tasks.errors import InputError
from tasks.read import count_jsonl_records

BATCH_NAMESPACE = uuid.UUID("6f1c1d2e-9a1b-4b8e-8d7a-0c6b1f0e2a11")


def _line_of(text: str, path: list[str | int]) -> int:
    """Best-effort line of a JSON path in a manifest: the n-th occurrence of its last key."""
    keys = [p for p in path if isinstance(p, str)]
    index = next((p for p in reversed(path) if isinstance(p, int)), 0)
    if not keys:
        return 1
    hits = [m.start() for m in re.finditer(rf'"{re.escape(keys[-1])}"\s*:', text)]
    if not hits:
        return 1
    return text.count("\n", 0, hits[min(index, len(hits) - 1)]) + 1


def _field_name(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(manifest)"


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(manifest_json_schema(), format_checker=jsonschema.FormatChecker())


def parse_manifest(path: Path) -> SourceManifest:
    """Parse and schema-check one manifest file; the error names file, line and field."""
    stat = path.stat()
    return _parse_manifest(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=65_536)
def _parse_manifest(path: Path, _mtime_ns: int, _size: int) -> SourceManifest:
    """Memoised on the file's identity: a backfill over many partitions parses each manifest once."""
    text = path.read_text(encoding="utf-8")
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, exc.lineno, "(json)", f"not valid JSON: {exc.msg}") from exc
    errors = sorted(_validator().iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        error = errors[0]
        where = list(error.absolute_path)
        if error.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", error.message)
            where = [*where, missing[0]] if missing else where
            line = _line_of(text, list(error.absolute_path)) if error.absolute_path else 1
        else:
            line = _line_of(text, where)
        raise InputError(path, line, _field_name(where), error.message)
    if raw["dataset"] not in DATASETS:
        raise InputError(path, _line_of(text, ["dataset"]), "dataset",
                         f"unknown dataset {raw['dataset']!r} (known: {', '.join(sorted(DATASETS))})")
    try:
        date.fromisoformat(raw["partition_key"])
    except ValueError as exc:
        raise InputError(path, _line_of(text, ["partition_key"]), "partition_key",
                         f"{raw['partition_key']!r} is not a calendar date") from exc
    return SourceManifest(**raw, path=path)


def fetch_s3_asset(uri: str) -> Path:
    """A local copy of an `s3://bucket/key` source, read through the lake's storage interface (prefect-aws)."""
    from schemas.settings import load_settings
    from tasks.storage import open_storage

    settings = load_settings()
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    local = Path(tempfile.gettempdir()) / "datafactory-s3-sources" / bucket / key
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(open_storage(f"s3://{bucket}", None, settings.s3_endpoint_url).read(key))
    return local


def resolve_asset(manifest: SourceManifest, index: int, root: Path) -> Path:
    """The local path of an asset; a URI that escapes the manifest root is rejected."""
    asset = manifest.assets[index]
    field = f"assets[{index}].uri"
    line = _line_of(manifest.path.read_text(encoding="utf-8"), ["assets", index, "uri"])
    if asset.uri.startswith("s3://"):
        return fetch_s3_asset(asset.uri)
    if "://" in asset.uri or asset.uri.startswith("/"):
        raise InputError(manifest.path, line, field,
                         f"{asset.uri!r} must be relative to the manifest directory")
    candidate = (manifest.base_dir / asset.uri).resolve()
    if not candidate.is_relative_to(root.resolve()):
        raise InputError(manifest.path, line, field,
                         f"{asset.uri!r} escapes the manifest directory {root}")
    return candidate


def count_records(data: bytes, fmt: str) -> int:
    """Records in an asset as the reader will see them: non-blank lines (jsonl), rows (csv, parquet)."""
    if fmt == "jsonl":
        return count_jsonl_records(data)
    if fmt == "csv":
        rows = csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))
        next(rows, None)  # header
        return sum(1 for row in rows if row)
    return pl.read_parquet(io.BytesIO(data)).height


def verify_asset(manifest: SourceManifest, index: int, root: Path, accept_changed: bool = False) -> Path:
    """Check that an asset exists, has the declared sha256 and record_count; return its path.

    With `accept_changed` a changed file is not an error here; `accepted_changes` describes it instead.
    """
    asset: Asset = manifest.assets[index]
    path = resolve_asset(manifest, index, root)
    text = manifest.path.read_text(encoding="utf-8")
    if not path.is_file():
        raise InputError(manifest.path, _line_of(text, ["assets", index, "uri"]), f"assets[{index}].uri",
                         f"{asset.uri!r} does not exist")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != asset.sha256 and accept_changed:
        return path
    if digest != asset.sha256:
        raise InputError(manifest.path, _line_of(text, ["assets", index, "sha256"]),
                         f"assets[{index}].sha256",
                         f"declared {asset.sha256[:12]}… but {asset.uri} has {digest[:12]}…",
                         ActionReason.SOURCE_FINGERPRINT_CHANGED)
    found = count_records(data, asset.format)
    if found != asset.record_count:
        raise InputError(manifest.path, _line_of(text, ["assets", index, "record_count"]),
                         f"assets[{index}].record_count",
                         f"declared {asset.record_count} records but {asset.uri} has {found}")
    return path


def discover_manifests(manifest_dir: Path) -> list[SourceManifest]:
    """Every manifest in the directory, parsed; manifest ids must be unique."""
    if not manifest_dir.is_dir():
        raise InputError(manifest_dir, None, "FACTORY_MANIFEST_DIR", "is not a directory")
    manifests: list[SourceManifest] = []
    seen: dict[str, Path] = {}
    for path in sorted(manifest_dir.glob("*.json")):
        manifest = parse_manifest(path)
        if manifest.manifest_id in seen:
            raise InputError(path, _line_of(path.read_text(), ["manifest_id"]), "manifest_id",
                             f"{manifest.manifest_id!r} is also declared by {seen[manifest.manifest_id]}")
        seen[manifest.manifest_id] = path
        manifests.append(manifest)
    return manifests


def delivery_order(manifests: Iterable[SourceManifest]) -> list[SourceManifest]:
    """Deliveries in the order they were produced; ties broken by manifest id."""
    return sorted(manifests, key=lambda m: (m.partition_key, m.produced_at, m.manifest_id))


def partition_manifests(manifest_dir: Path, dataset: str, partition_key: date,
                        accept_changed: bool = False) -> list[SourceManifest]:
    """The verified manifests of one (dataset, partition), in delivery order.

    With `accept_changed`, assets whose files changed are taken as they are now: the returned manifest
    carries their actual sha256 and record count, so the fingerprint (and the batch) are new.
    """
    chosen = [m for m in discover_manifests(manifest_dir)
              if m.dataset == dataset and m.partition_key == partition_key]
    verified = []
    for manifest in chosen:
        assets = []
        for index, asset in enumerate(manifest.assets):
            path = verify_asset(manifest, index, manifest_dir, accept_changed)
            data = path.read_bytes() if accept_changed else b""
            if accept_changed and hashlib.sha256(data).hexdigest() != asset.sha256:
                asset = asset.model_copy(update={"sha256": hashlib.sha256(data).hexdigest(),
                                                 "record_count": count_records(data, asset.format)})
            assets.append(asset)
        verified.append(manifest.model_copy(update={"assets": tuple(assets)}))
    return delivery_order(verified)


def source_fingerprint(manifests: Iterable[SourceManifest]) -> str:
    """One hash of everything a partition consumes: manifest ids and each asset's declared content."""
    described = [
        [m.manifest_id, [[a.uri, a.format, a.sha256, a.record_count] for a in m.assets]]
        for m in sorted(manifests, key=lambda m: m.manifest_id)
    ]
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()


def batch_id_for(dataset: str, partition_key: date, fingerprint: str) -> str:
    """The same inputs for the same partition are the same batch, on every run."""
    return str(uuid.uuid5(BATCH_NAMESPACE, f"{dataset}|{partition_key.isoformat()}|{fingerprint}"))


def find_manifest(manifest_dir: Path, manifest_id: str) -> SourceManifest:
    for manifest in discover_manifests(manifest_dir):
        if manifest.manifest_id == manifest_id:
            return manifest
    raise InputError(manifest_dir, None, "manifest_id", f"no manifest {manifest_id!r} in {manifest_dir}")


def _stat_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Cache key: the manifest directory's files, with size and mtime; any edit invalidates it."""
    root = Path(parameters["manifest_dir"]).resolve()
    stats = sorted(
        (str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()
    )
    key = json.dumps([str(root), parameters["dataset"], str(parameters["partition_key"]),
                      parameters.get("accept_changed", False), stats])
    return hashlib.sha256(key.encode()).hexdigest()


@task(name="validate-manifests", cache_key_fn=_stat_cache_key, persist_result=True)
def validate_manifests_task(manifest_dir: Path, dataset: str, partition_key: date,
                            accept_changed: bool = False) -> list[SourceManifest]:
    """Verified manifests for a partition; cached until any file under the manifest dir changes."""
    return partition_manifests(manifest_dir, dataset, partition_key, accept_changed)
