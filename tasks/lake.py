"""The Parquet lake (DESIGN section 8): partition snapshots behind a commit protocol.

Layout of one partition, under `{lake}/{dataset}/dt=YYYY-MM-DD/`:

    _tmp/{snapshot}/part-00000.parquet    written first, read back and checked
    data/{snapshot}/part-00000.parquet    published (moved) data files; never rewritten
    _snapshots/{snapshot}.json            the snapshot's record: files, rows, sha256, run
    manifest.json                         the marker: a copy of the current snapshot's record
    _SUCCESS                              the current snapshot id

Two stores commit together with the warehouse as the decision (tasks/commit.py): the snapshot's files
and record are staged first, the warehouse transaction then records the snapshot (table lake_snapshot)
and makes it current (lake_current), and only after that commits is the marker moved. A crash before
the warehouse commit leaves a staged snapshot no ledger row names: readers ignore it and the next
commit deletes it. A crash after it leaves the marker one snapshot behind the ledger: the next run of
the partition (a skip included) moves it. Readers read exactly the files a record lists, never a
listing of the prefix.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import polars as pl

from schemas.datasets import DatasetSpec
from schemas.settings import FactorySettings
from tasks.errors import FactoryError
from tasks.storage import MissingObject, Storage, open_storage

LINEAGE = ("_content_hash", "_delivery_key", "_manifest_id", "_source_uri", "_line_number")
CURRENT, SUCCESS, RECORDS = "manifest.json", "_SUCCESS", "_snapshots"
SNAPSHOT_ID = re.compile(r"[0-9]{8}T[0-9]{12}Z-[0-9a-z-]{8}")
FILE_PATH = re.compile(r"data/(?P<snapshot>[0-9]{8}T[0-9]{12}Z-[0-9a-z-]{8})/part-[0-9]{5}\.parquet")
SHA256 = re.compile(r"[0-9a-f]{64}")


class LakeError(FactoryError):
    """A lake object is missing or does not match what recorded it; `reason` is a verify reason code."""

    exit_code = 1

    def __init__(self, reason: str, where: str, message: str) -> None:
        self.reason, self.where = reason, where
        super().__init__(f"{where}: {message} [{reason}]")


@dataclass(frozen=True)
class Lake:
    storage: Storage
    retention: int = 5
    rows_per_file: int = 500_000

    def prefix(self, dataset: str, day: date) -> str:
        return f"{dataset}/dt={day.isoformat()}"

    def where(self, dataset: str, day: date, name: str = "") -> str:
        return f"{self.storage.url}/{self.prefix(dataset, day)}" + (f"/{name}" if name else "")


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
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}Z-{run_id[:8].lower()}"


def is_snapshot_id(text: str) -> bool:
    return isinstance(text, str) and SNAPSHOT_ID.fullmatch(text) is not None


def record_bytes(record: dict[str, Any]) -> bytes:
    return json.dumps(record, indent=2).encode()


# --- snapshot records ----------------------------------------------------------------------------

def check_record(record: Any, dataset: str, day: date, snapshot_id: str, where: str) -> dict[str, Any]:
    """A snapshot record that says what it must: this dataset, partition and id, and data files of its
    own snapshot folder with rows and sha256. Anything else is `snapshot_record_invalid`."""
    def bad(message: str) -> LakeError:
        return LakeError("snapshot_record_invalid", where, message)

    if not isinstance(record, dict):
        raise bad("is not a JSON object")
    for name, expected in (("dataset", dataset), ("partition_key", day.isoformat()), ("snapshot_id", snapshot_id)):
        if record.get(name) != expected:
            raise bad(f"{name} is {record.get(name)!r}, not {expected!r}")
    files = record.get("files")
    if not isinstance(files, list) or not isinstance(record.get("rows"), int):
        raise bad("has no files list or rows count")
    for entry in files:
        match = FILE_PATH.fullmatch(str(entry.get("path"))) if isinstance(entry, dict) else None
        if match is None or match.group("snapshot") != snapshot_id:
            raise bad(f"lists a file outside its snapshot: {entry!r:.120}")
        if not (isinstance(entry.get("rows"), int) and isinstance(entry.get("bytes"), int)
                and SHA256.fullmatch(str(entry.get("sha256")))):
            raise bad(f"file {entry['path']} has no rows, bytes or sha256")
    if sum(e["rows"] for e in files) != record["rows"]:
        raise bad(f"its files hold {sum(e['rows'] for e in files)} rows, not {record['rows']}")
    return record


def read_record(lake: Lake, dataset: str, day: date, snapshot_id: str,
                expected_sha256: str | None = None) -> dict[str, Any]:
    """The record of a snapshot, checked: present, unchanged since the ledger recorded it, and valid."""
    if not is_snapshot_id(snapshot_id):
        raise LakeError("snapshot_record_invalid", lake.where(dataset, day), f"{snapshot_id!r} is not a snapshot id")
    name = f"{RECORDS}/{snapshot_id}.json"
    where = lake.where(dataset, day, name)
    try:
        data = lake.storage.read(f"{lake.prefix(dataset, day)}/{name}")
    except MissingObject:
        raise LakeError("snapshot_record_missing", where, "does not exist") from None
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise LakeError("snapshot_record_changed", where, "differs from the record the ledger committed")
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise LakeError("snapshot_record_invalid", where, "is not valid JSON") from None
    return check_record(record, dataset, day, snapshot_id, where)


def read_marker(lake: Lake, dataset: str, day: date) -> dict[str, Any] | None:
    """The partition's marker (what external readers take as current), or None when it has none."""
    key = f"{lake.prefix(dataset, day)}/{CURRENT}"
    try:
        data = lake.storage.read(key)
    except MissingObject:
        return None
    try:
        marker = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise LakeError("lake_marker_invalid", lake.where(dataset, day, CURRENT), "is not valid JSON") from None
    return marker if isinstance(marker, dict) else None


def check_files(lake: Lake, dataset: str, day: date, record: dict[str, Any], deep: bool) -> None:
    """Every file a record lists is there with its size (and with `deep`, its sha256)."""
    prefix = lake.prefix(dataset, day)
    for entry in record["files"]:
        where, key = lake.where(dataset, day, entry["path"]), f"{prefix}/{entry['path']}"
        size = lake.storage.size(key)
        if size is None:
            raise LakeError("lake_file_missing", where, "does not exist")
        if size != entry["bytes"]:
            raise LakeError("lake_file_corrupt", where, f"is {size} bytes; its record says {entry['bytes']}")
        if deep and hashlib.sha256(lake.storage.read(key)).hexdigest() != entry["sha256"]:
            raise LakeError("lake_file_corrupt", where, "sha256 differs from its record")


def read_files(lake: Lake, dataset: str, day: date, record: dict[str, Any]) -> pl.DataFrame:
    """The rows of exactly the files a record lists, each checked against its sha256."""
    prefix = lake.prefix(dataset, day)
    frames = []
    for entry in record["files"]:
        where = lake.where(dataset, day, entry["path"])
        try:
            data = lake.storage.read(f"{prefix}/{entry['path']}")
        except MissingObject:
            raise LakeError("lake_file_missing", where, "does not exist") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise LakeError("lake_file_corrupt", where, "sha256 differs from its record")
        frames.append(pl.read_parquet(io.BytesIO(data)))
    return pl.concat(frames) if frames else pl.DataFrame()


def conform_to_contract(spec: DatasetSpec, rows: pl.DataFrame) -> pl.DataFrame:
    """A snapshot's rows as the code's contract has them: a field added since it was written is null,
    a field removed is dropped, a kind changed is cast (null where a value does not fit)."""
    if rows.height == 0 and rows.width == 0:
        return rows
    fields = [pl.col(f.name).cast(f.dtype, strict=False) if f.name in rows.columns
              else pl.lit(None, dtype=f.dtype).alias(f.name) for f in spec.fields]
    return rows.select(*fields, *[c for c in rows.columns if c.startswith("_")])


# --- committing ----------------------------------------------------------------------------------

def clean_leftovers(lake: Lake, dataset: str, day: date, keep: set[str]) -> list[str]:
    """Delete what no committed snapshot accounts for: temp files, unfinished writes, and the data and
    records of snapshots the ledger never committed (`keep` = the committed, retained ids).
    Runs under the partition lock, so nothing it deletes belongs to a live writer."""
    prefix = lake.prefix(dataset, day)
    stray = []
    for key in lake.storage.list(prefix, partial=True):
        rest = key[len(prefix) + 1:]
        if rest in (CURRENT, SUCCESS):
            continue
        parts = rest.split("/")
        if parts[0] == RECORDS and len(parts) == 2 and parts[1].removesuffix(".json") in keep:
            continue
        if parts[0] == "data" and len(parts) == 3 and parts[1] in keep and not parts[2].startswith("."):
            continue
        stray.append(key)
    lake.storage.delete(stray)
    lake.storage.prune(f"{prefix}/_tmp")
    return stray


def _write_temp(lake: Lake, prefix: str, snapshot_id: str, frame: pl.DataFrame, first_number: int = 0) -> list[dict[str, Any]]:
    """Write a frame as temp Parquet files of at most `rows_per_file` rows, numbered from `first_number`."""
    files = []
    step = max(1, lake.rows_per_file)
    for number, offset in enumerate(range(0, max(frame.height, 1), step), start=first_number):
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
            raise LakeError("lake_file_corrupt", f"{lake.storage.url}/{key}",
                            f"read back {rows} rows {schema}, wrote {entry['rows']} rows {_schema(frame)}")


class SnapshotWriter:
    """A partition's next snapshot, written as its events arrive: each chunk becomes temp files, read
    back and checked at once (memory holds one chunk, never the snapshot); `stage` then publishes them
    and writes the snapshot's record. Not current yet: the caller's warehouse transaction commits it
    (ledger.record_snapshot), then `publish_marker` shows it. Until `stage`, nothing but `_tmp/` is
    touched; a writer that fails removes its temp files (and the next commit any a crash left)."""

    def __init__(self, lake: Lake, name: str, day: date, run_id: str, keep: set[str]) -> None:
        """`name`: the dataset's (or mart's) folder in the lake."""
        self.lake, self.name, self.day, self.run_id = lake, name, day, run_id
        self.prefix = lake.prefix(name, day)
        clean_leftovers(lake, name, day, keep)
        self.snapshot_id = new_snapshot_id(run_id)
        self.files: list[dict[str, Any]] = []
        self.rows = 0
        self.schema: dict[str, str] | None = None
        self._empty: pl.DataFrame | None = None

    def add(self, frame: pl.DataFrame) -> None:
        """Write a chunk of the snapshot's rows (an empty chunk only records the schema)."""
        schema = _schema(frame)
        if self.schema is not None and schema != self.schema:
            raise LakeError("lake_file_corrupt", self.lake.where(self.name, self.day),
                            f"a chunk's schema {schema} differs from the snapshot's {self.schema}")
        self.schema = schema
        if frame.height == 0:
            self._empty = frame
            return
        files = _write_temp(self.lake, self.prefix, self.snapshot_id, frame, first_number=len(self.files))
        _validate_temp(self.lake, self.prefix, self.snapshot_id, files, frame)
        self.files += files
        self.rows += frame.height

    def stage(self, details: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
        """Publish the temp files and write the snapshot's record; returns the record and the sha256
        of its bytes (the ledger keeps it to detect tampering). A snapshot of no rows is one empty file."""
        if not self.files:
            if self._empty is None:
                raise ValueError("a snapshot needs at least one chunk, empty or not, for its schema")
            self.files = _write_temp(self.lake, self.prefix, self.snapshot_id, self._empty)
            _validate_temp(self.lake, self.prefix, self.snapshot_id, self.files, self._empty)
        self.lake.storage.move(f"{self.prefix}/_tmp/{self.snapshot_id}", f"{self.prefix}/data/{self.snapshot_id}")
        record = {
            "snapshot_id": self.snapshot_id, "dataset": self.name, "partition_key": self.day.isoformat(),
            "run_id": self.run_id, "committed_at": datetime.now(timezone.utc).isoformat(), "rows": self.rows,
            "schema": self.schema, "files": self.files, **(details or {}),
        }
        data = record_bytes(record)
        self.lake.storage.write(f"{self.prefix}/{RECORDS}/{self.snapshot_id}.json", data)
        return record, hashlib.sha256(data).hexdigest()

    def abandon(self) -> None:
        """Remove this writer's temp files (best effort: the next commit's clean-up removes what stays)."""
        temp = f"{self.prefix}/_tmp/{self.snapshot_id}"
        try:
            self.lake.storage.delete(self.lake.storage.list(temp, partial=True))
            self.lake.storage.prune(f"{self.prefix}/_tmp")
        except Exception:  # the run's own failure is what the caller reports
            pass


def stage_snapshot(lake: Lake, spec: DatasetSpec, day: date, frame: pl.DataFrame, run_id: str,
                   keep: set[str], details: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """A whole frame as a staged snapshot (restore and compaction write snapshots this way)."""
    writer = SnapshotWriter(lake, spec.name, day, run_id, keep)
    writer.add(frame)
    return writer.stage(details)


def publish_marker(lake: Lake, dataset: str, day: date, record: dict[str, Any]) -> None:
    """Point external readers at a committed snapshot: manifest.json, then _SUCCESS."""
    prefix = lake.prefix(dataset, day)
    lake.storage.write(f"{prefix}/{CURRENT}", record_bytes(record))
    lake.storage.write(f"{prefix}/{SUCCESS}", record["snapshot_id"].encode())


def marker_is(lake: Lake, dataset: str, day: date, snapshot_id: str) -> bool:
    """Do manifest.json and _SUCCESS both name this snapshot?"""
    try:
        marker = read_marker(lake, dataset, day)
        success = lake.storage.read(f"{lake.prefix(dataset, day)}/{SUCCESS}")
    except (LakeError, MissingObject):
        return False
    return marker is not None and marker.get("snapshot_id") == snapshot_id and success == snapshot_id.encode()


def drop_snapshots(lake: Lake, dataset: str, day: date, snapshot_ids: list[str]) -> None:
    """Delete the files and records of snapshots retention let go."""
    prefix = lake.prefix(dataset, day)
    keys = [k for i in snapshot_ids for k in lake.storage.list(f"{prefix}/data/{i}", partial=True)]
    lake.storage.delete(keys + [f"{prefix}/{RECORDS}/{i}.json" for i in snapshot_ids])


def open_lake(settings: FactorySettings) -> Lake:
    """The lake FACTORY_LAKE_URL names: a local folder, or s3://bucket/prefix through prefect-aws."""
    storage = open_storage(settings.lake_url, settings.s3_block, settings.s3_endpoint_url)
    return Lake(storage, retention=settings.lake_retention, rows_per_file=settings.lake_rows_per_file)
