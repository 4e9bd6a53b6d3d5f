"""The Parquet lake (DESIGN section 8): partition snapshots behind a commit protocol.

Layout of one partition, under `{lake}/{dataset}/dt=YYYY-MM-DD/`:

    _tmp/{snapshot}/part-00000.parquet    written first, read back and checked
    data/{snapshot}/part-00000.parquet    published (moved) data files; never rewritten
    manifest.json                         the commit marker: the current snapshot, written last
    _snapshots/{snapshot}.json            every committed snapshot's manifest (restore targets)
    _SUCCESS                              the current snapshot id

Readers read exactly the files a manifest lists, never a listing of the prefix, so a failure at any
step leaves the previous snapshot readable. The next commit deletes what a failed one left behind.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import polars as pl

from schemas.datasets import DatasetSpec
from schemas.settings import FactorySettings
from tasks.storage import Storage, open_storage

LINEAGE = ("_content_hash", "_delivery_key", "_manifest_id", "_source_uri", "_line_number")
CURRENT, SUCCESS = "manifest.json", "_SUCCESS"


class LakeError(Exception):
    """A lake object is missing or does not match its manifest."""


@dataclass(frozen=True)
class Lake:
    storage: Storage
    retention: int = 5
    rows_per_file: int = 500_000

    def prefix(self, dataset: str, day: date) -> str:
        return f"{dataset}/dt={day.isoformat()}"


def lake_frame(spec: DatasetSpec, events: pl.DataFrame) -> pl.DataFrame:
    """What the lake keeps of an event: its typed fields and where it was delivered (no raw payload).
    Rows stay in delivery order: sorting a million rows would only cost a copy."""
    return events.select(*spec.field_names, *LINEAGE)


def _parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def _schema(frame: pl.DataFrame) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in frame.schema.items()}


def new_snapshot_id(run_id: str) -> str:
    """Sortable by commit time; unique per run."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}-{run_id[:8]}"


# --- reading -------------------------------------------------------------------------------------

def current_manifest(lake: Lake, dataset: str, day: date) -> dict[str, Any] | None:
    key = f"{lake.prefix(dataset, day)}/{CURRENT}"
    return json.loads(lake.storage.read(key)) if lake.storage.exists(key) else None


def snapshot_manifest(lake: Lake, dataset: str, day: date, snapshot_id: str) -> dict[str, Any]:
    key = f"{lake.prefix(dataset, day)}/_snapshots/{snapshot_id}.json"
    if not lake.storage.exists(key):
        current = current_manifest(lake, dataset, day)
        if current and current["snapshot_id"] == snapshot_id:
            return current
        raise LakeError(f"{lake.storage.url}/{lake.prefix(dataset, day)}: no snapshot {snapshot_id!r} "
                        "(list them with `datafactory lake snapshots`)")
    return json.loads(lake.storage.read(key))


def list_snapshots(lake: Lake, dataset: str, day: date) -> list[dict[str, Any]]:
    """Every retained snapshot of a partition, oldest first, the current one marked."""
    prefix = lake.prefix(dataset, day)
    found = {m["snapshot_id"]: m for m in (json.loads(lake.storage.read(k))
                                          for k in lake.storage.list(f"{prefix}/_snapshots") if k.endswith(".json"))}
    current = current_manifest(lake, dataset, day)
    if current:
        found.setdefault(current["snapshot_id"], current)
    return [{**m, "current": bool(current) and m["snapshot_id"] == current["snapshot_id"]}  # type: ignore[index]
            for _, m in sorted(found.items())]


def read_files(lake: Lake, prefix: str, manifest: dict[str, Any]) -> pl.DataFrame:
    """The rows of exactly the files a manifest lists, each checked against its sha256."""
    frames = []
    for entry in manifest["files"]:
        data = lake.storage.read(f"{prefix}/{entry['path']}")
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise LakeError(f"{lake.storage.url}/{prefix}/{entry['path']}: sha256 differs from its manifest")
        frames.append(pl.read_parquet(io.BytesIO(data)))
    return pl.concat(frames) if frames else pl.DataFrame()


def read_partition(lake: Lake, dataset: str, day: date, snapshot_id: str | None = None) -> pl.DataFrame | None:
    """A partition's rows as of its current snapshot (or `snapshot_id`); None when it has none."""
    manifest = (snapshot_manifest(lake, dataset, day, snapshot_id) if snapshot_id
                else current_manifest(lake, dataset, day))
    return None if manifest is None else read_files(lake, lake.prefix(dataset, day), manifest)


def committed_partitions(lake: Lake, dataset: str) -> list[date]:
    """Partitions with a current snapshot (one listing of the markers, not of the data)."""
    days = set()
    for key in lake.storage.list(dataset):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == CURRENT and parts[1].startswith("dt="):
            days.add(date.fromisoformat(parts[1][3:]))
    return sorted(days)


# --- committing ----------------------------------------------------------------------------------

def clean_leftovers(lake: Lake, dataset: str, day: date) -> list[str]:
    """Delete temp objects and data files no committed snapshot lists (what a failed commit left)."""
    prefix = lake.prefix(dataset, day)
    listed = {f"{prefix}/{f['path']}" for m in list_snapshots(lake, dataset, day) for f in m["files"]}
    stray = [k for k in lake.storage.list(prefix)
             if (k.startswith(f"{prefix}/_tmp/") or k.startswith(f"{prefix}/data/")) and k not in listed]
    lake.storage.delete(stray)
    return stray


def _write_temp(lake: Lake, prefix: str, snapshot_id: str, frame: pl.DataFrame) -> list[dict[str, Any]]:
    files = []
    step = max(1, lake.rows_per_file)
    for number, offset in enumerate(range(0, max(frame.height, 1), step)):
        chunk = frame.slice(offset, step)
        data = _parquet(chunk)
        name = f"part-{number:05d}.parquet"
        lake.storage.write(f"{prefix}/_tmp/{snapshot_id}/{name}", data)
        files.append({"path": f"data/{snapshot_id}/{name}", "rows": chunk.height, "bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()})
    return files


def _validate_temp(lake: Lake, prefix: str, snapshot_id: str, files: list[dict[str, Any]],
                   frame: pl.DataFrame) -> None:
    """Read the temp files back: every byte as written, and as Parquet the rows and schema intended
    (row counts from one column, so validating a large snapshot does not hold it in memory twice)."""
    for entry in files:
        key = f"{prefix}/{entry['path'].replace('data/', '_tmp/', 1)}"
        data = lake.storage.read(key)
        rows = pl.read_parquet(io.BytesIO(data), columns=[frame.columns[0]]).height
        schema = {name: str(dtype) for name, dtype in pl.read_parquet_schema(io.BytesIO(data)).items()}
        if hashlib.sha256(data).hexdigest() != entry["sha256"] or rows != entry["rows"] or schema != _schema(frame):
            raise LakeError(f"{lake.storage.url}/{key}: read back {rows} rows {schema}, "
                            f"wrote {entry['rows']} rows {_schema(frame)} (sha256 {entry['sha256'][:12]}…)")


def _write_marker(lake: Lake, prefix: str, manifest: dict[str, Any]) -> None:
    """The commit point: from here on readers see the new snapshot."""
    lake.storage.write(f"{prefix}/{CURRENT}", json.dumps(manifest, indent=2).encode())


def apply_retention(lake: Lake, dataset: str, day: date) -> list[str]:
    """Keep the newest `retention` snapshots (and always the current one); delete the rest."""
    prefix = lake.prefix(dataset, day)
    snapshots = list_snapshots(lake, dataset, day)
    keep = {m["snapshot_id"] for m in snapshots[-max(1, lake.retention):]} | {
        m["snapshot_id"] for m in snapshots if m["current"]}
    dropped = [m for m in snapshots if m["snapshot_id"] not in keep]
    keys = [f"{prefix}/{f['path']}" for m in dropped for f in m["files"]]
    keys += [f"{prefix}/_snapshots/{m['snapshot_id']}.json" for m in dropped]
    lake.storage.delete(keys)
    return [m["snapshot_id"] for m in dropped]


def commit_snapshot(lake: Lake, spec: DatasetSpec, day: date, frame: pl.DataFrame, run_id: str,
                    details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Temp files → read back and check → publish → manifest.json (the commit) → snapshot record, _SUCCESS."""
    prefix = lake.prefix(spec.name, day)
    clean_leftovers(lake, spec.name, day)
    snapshot_id = new_snapshot_id(run_id)
    files = _write_temp(lake, prefix, snapshot_id, frame)
    _validate_temp(lake, prefix, snapshot_id, files, frame)
    lake.storage.move(f"{prefix}/_tmp/{snapshot_id}", f"{prefix}/data/{snapshot_id}")
    manifest = {
        "snapshot_id": snapshot_id, "dataset": spec.name, "partition_key": day.isoformat(), "run_id": run_id,
        "committed_at": datetime.now(timezone.utc).isoformat(), "rows": frame.height,
        "schema": _schema(frame), "files": files, **(details or {}),
    }
    _write_marker(lake, prefix, manifest)
    lake.storage.write(f"{prefix}/_snapshots/{snapshot_id}.json", json.dumps(manifest, indent=2).encode())
    lake.storage.write(f"{prefix}/{SUCCESS}", snapshot_id.encode())
    apply_retention(lake, spec.name, day)
    return manifest


def make_current(lake: Lake, dataset: str, day: date, snapshot_id: str) -> dict[str, Any]:
    """Restore: a retained snapshot becomes the current one again (its files were never touched)."""
    prefix = lake.prefix(dataset, day)
    manifest = snapshot_manifest(lake, dataset, day, snapshot_id)
    read_files(lake, prefix, manifest)  # every file still there and intact, before it becomes current
    _write_marker(lake, prefix, manifest)
    lake.storage.write(f"{prefix}/{SUCCESS}", snapshot_id.encode())
    return manifest


def open_lake(settings: FactorySettings) -> Lake:
    """The lake FACTORY_LAKE_URL names: a local folder, or s3://bucket/prefix through prefect-aws."""
    storage = open_storage(settings.lake_url, settings.s3_block, settings.s3_endpoint_url)
    return Lake(storage, retention=settings.lake_retention, rows_per_file=settings.lake_rows_per_file)


def compact_partition(lake: Lake, spec: DatasetSpec, day: date) -> dict[str, Any] | None:
    """Rewrite a partition's current snapshot into as few files as `rows_per_file` allows, through the
    same commit protocol, and prove the rows identical; None when it is already one file (or absent)."""
    old = current_manifest(lake, spec.name, day)
    if old is None or len(old["files"]) <= 1:
        return None
    prefix = lake.prefix(spec.name, day)
    rows = read_files(lake, prefix, old).sort(spec.event_key)
    details = {k: old[k] for k in ("batch_id", "manifest_ids") if k in old}
    new = commit_snapshot(lake, spec, day, rows, f"compact-{old['run_id']}",
                          {**details, "compacted_from": old["snapshot_id"]})
    if not read_files(lake, prefix, new).sort(spec.event_key).equals(rows):
        make_current(lake, spec.name, day, old["snapshot_id"])
        raise LakeError(f"{lake.storage.url}/{prefix}: compacted rows differ; snapshot {old['snapshot_id']} kept")
    return {"partition_key": day.isoformat(), "rows": new["rows"], "files_before": len(old["files"]),
            "files_after": len(new["files"]), "snapshot_before": old["snapshot_id"], "snapshot_after": new["snapshot_id"]}


def compact_month(lake: Lake, spec: DatasetSpec, month: str) -> list[dict[str, Any]]:
    """Compact every committed partition of `YYYY-MM`."""
    done = []
    for day in committed_partitions(lake, spec.name):
        if day.strftime("%Y-%m") == month:
            report = compact_partition(lake, spec, day)
            if report:
                done.append(report)
    return done
