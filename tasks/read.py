"""Read a partition's assets into Polars: one row per record, unparseable records kept aside with their line."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import orjson
import polars as pl

from schemas.datasets import DatasetSpec, FieldKind
from schemas.manifest import SourceManifest
from schemas.reason_codes import QuarantineReason

CHUNK_ROWS = 100_000  # bounds the Python objects alive at once on large deliveries

LINEAGE_SCHEMA = {
    "_manifest_id": pl.String,
    "_source_uri": pl.String,
    "_line_number": pl.Int64,
    "_raw_payload": pl.String,
    "_delivery_key": pl.String,
    "_type_errors": pl.String,
}
QUARANTINE_SCHEMA = {
    "manifest_id": pl.String,
    "source_uri": pl.String,
    "line_number": pl.Int64,
    "reason_code": pl.String,
    "detail": pl.String,
    "event_id": pl.String,
    "raw_payload": pl.String,
}


@dataclass
class RawBatch:
    """Everything a partition delivered: parsed records (as sent) and unparseable ones."""

    records: pl.DataFrame  # spec fields as raw strings/lists + lineage columns
    malformed: pl.DataFrame  # QUARANTINE_SCHEMA rows
    read_counts: dict[str, int]  # source uri -> records read
    # the source's own field names, from a sample of records (the schema drift check judges them)
    field_sample: dict[str, int] = dataclass_field(default_factory=dict)  # field -> sampled records carrying it
    sampled_records: int = 0
    declared_records: int = 0  # what the manifests say the assets hold

    @property
    def total(self) -> int:
        return self.records.height + self.malformed.height


def raw_schema(spec: DatasetSpec) -> dict[str, pl.DataType]:
    return {
        f.name: pl.List(pl.String) if f.kind is FieldKind.STRING_LIST else pl.String
        for f in spec.fields
    }


def delivery_prefix(manifest: SourceManifest, asset_index: int) -> str:
    """Sortable prefix of a record's delivery key; the line number completes it."""
    produced = manifest.produced_at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
    # space sorts below every character a manifest id may hold, so the key orders like the tuple
    return f"{manifest.partition_key.isoformat()} {produced} {manifest.manifest_id} {asset_index:04d} "


def _csv_rows(data: bytes, spec: DatasetSpec) -> Iterator[tuple[int, str | None, Any]]:
    """CSV rows as objects: an empty cell is null where the contract allows null, else ''."""
    reader = csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))
    header = next(reader, [])
    kinds = {f.name: f for f in spec.fields}
    for row in reader:
        if not row:
            continue
        line_number = reader.line_num
        text = json.dumps(row)
        if len(row) != len(header):
            yield line_number, text, f"{len(row)} cells where the header has {len(header)}"
            continue
        obj: dict[str, Any] = {}
        for name, cell in zip(header, row):
            field = kinds.get(name)
            if field is not None and field.kind is FieldKind.STRING_LIST:
                try:
                    obj[name] = json.loads(cell) if cell else []
                except json.JSONDecodeError:
                    obj[name] = cell  # reported as a type violation of that column
            elif cell == "" and field is not None and field.nullable:
                obj[name] = None
            else:
                obj[name] = cell
        yield line_number, json.dumps(obj), obj


def _parquet_rows(data: bytes) -> Iterator[tuple[int, str | None, Any]]:
    frame = pl.read_parquet(io.BytesIO(data))
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime):  # typed timestamps become ISO-8601 text, as on the wire
            frame = frame.with_columns(
                pl.col(name).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
                if dtype.time_zone else pl.col(name).dt.strftime("%Y-%m-%dT%H:%M:%S%.6f")
            )
    for row_number, obj in enumerate(frame.iter_rows(named=True), start=1):
        yield row_number, json.dumps(obj, default=str), obj


def _python_type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def columns_from_objects(spec: DatasetSpec, objects: list[dict[str, Any]]) -> tuple[dict[str, list[Any]], list[str | None]]:
    """Column lists for the raw schema; a value of the wrong JSON type becomes null plus a type error."""
    errors: list[list[str] | None] = [None] * len(objects)
    columns: dict[str, list[Any]] = {}
    for field in spec.fields:
        values = [o.get(field.name) for o in objects]
        if field.kind is FieldKind.STRING_LIST:
            def ok(v: Any) -> bool:
                return v is None or (type(v) is list and all(type(x) is str or x is None for x in v))
            expected = "list of strings"
        else:
            def ok(v: Any) -> bool:
                return v is None or type(v) is str
            expected = "string"
        for i, value in enumerate(values):
            if not ok(value):
                errors[i] = (errors[i] or []) + [f"{field.name}: dtype({expected}) got {_python_type(value)}"]
                values[i] = None
        columns[field.name] = values
    return columns, ["; ".join(e) if e else None for e in errors]


_JSON_STRING = r'"(?:[^"\\]|\\.)*"'


def _suspect_patterns(spec: DatasetSpec) -> tuple[str, list[tuple[str, str]]]:
    """Regexes that flag lines whose JSON types Polars would silently coerce.

    A string field whose value does not start with a quote or null, or a list field that is not a
    list of strings and nulls, sends the line to the exact per-record path. Flags may be false
    alarms (that path then finds nothing); a wrong type is never missed, because a top-level key
    is always followed by its value.
    """
    strings = "|".join(re.escape(f.name) for f in spec.fields if f.kind is not FieldKind.STRING_LIST)
    scalar = rf'"(?:{strings})"\s*:\s*[^"\sn]'
    item = rf"(?:{_JSON_STRING}|null)"
    lists = [(rf'"{re.escape(f.name)}"\s*:', rf'"{re.escape(f.name)}"\s*:\s*(?:null|\[\s*(?:{item}\s*(?:,\s*{item}\s*)*)?\])')
             for f in spec.fields if f.kind is FieldKind.STRING_LIST]
    return scalar, lists


def _exact_rows(numbered: list[tuple[int, bytes]]) -> Iterator[tuple[int, str | None, Any]]:
    """Per-line parsing for the lines the bulk decoder cannot be trusted with."""
    for line_number, line in numbered:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield line_number, line.decode("utf-8", errors="replace"), f"not valid JSON: {exc}"
            continue
        text = line.decode("utf-8")
        yield line_number, text, obj if type(obj) is dict else f"a JSON {type(obj).__name__}, not an object"


SPLIT_BLOCK_BYTES = 32 * 2**20  # split in blocks: a million Python bytes objects at once cost ~0.5 GB
BLANK = b" \t\r\n\x0b\x0c"  # a line of only these is no record (ASCII whitespace, as bytes.strip sees it)


def _blocks(data: bytes) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the block's first line, its lines) over blocks that end at a newline."""
    start, first_line = 0, 1
    while start < len(data):
        end = data.find(b"\n", min(start + SPLIT_BLOCK_BYTES, len(data)))
        end = len(data) if end == -1 else end + 1
        parts = data[start:end].split(b"\n")
        if end < len(data) or parts[-1] == b"":
            parts.pop()  # the piece after the block's last newline belongs to the next block
        yield first_line, parts
        first_line += len(parts)
        start = end


def _pick_lines(data: bytes, wanted: set[int]) -> dict[int, bytes]:
    """The raw bytes of some lines, by number, without splitting the whole file at once."""
    picked: dict[int, bytes] = {}
    for first_line, parts in _blocks(data):
        for offset, line in enumerate(parts):
            if first_line + offset in wanted:
                picked[first_line + offset] = line.rstrip(b"\r")
    return picked


def count_jsonl_records(data: bytes) -> int:
    """Records in a JSONL asset exactly as the reader counts them: lines that are not blank."""
    return sum(sum(1 for line in parts if line.strip(BLANK)) for _, parts in _blocks(data))


def _utf8_or_none(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _physical_lines(data: bytes) -> pl.DataFrame:
    """Non-blank lines with their 1-based numbers; invalid UTF-8 becomes null (the exact path reports it)."""
    blocks: list[pl.DataFrame] = []
    for first_line, parts in _blocks(data):
        try:
            texts = pl.Series(parts, dtype=pl.Binary).cast(pl.String)
        except pl.exceptions.PolarsError:
            texts = pl.Series([_utf8_or_none(part) for part in parts], dtype=pl.String)
        blocks.append(
            pl.DataFrame({"_raw_payload": texts})
            .with_row_index("_line_number", offset=first_line)
            .with_columns(pl.col("_line_number").cast(pl.Int64), pl.col("_raw_payload").str.strip_suffix("\r"))
            .filter(pl.col("_raw_payload").is_null()
                    | (pl.col("_raw_payload").str.strip_chars(BLANK.decode()) != ""))
        )
    empty = pl.DataFrame(schema={"_line_number": pl.Int64, "_raw_payload": pl.String})
    return pl.concat([empty, *blocks]) if blocks else empty


def _read_jsonl(spec: DatasetSpec, manifest: SourceManifest, asset_index: int,
                path: Path) -> tuple[list[pl.DataFrame], pl.DataFrame]:
    """JSONL: Polars decodes trustworthy lines in bulk; malformed or oddly typed lines go one by one.

    Polars alone would coerce a number into a string column and fail a whole file on one bad line,
    so suspect lines (see `_suspect_patterns`) and, if the bulk decode fails, the whole file take the
    exact path, where every record gets its own verdict and line number.
    """
    data = path.read_bytes()
    lines = _physical_lines(data)
    scalar, lists = _suspect_patterns(spec)
    suspect = pl.col("_raw_payload").str.contains(scalar)
    for key_pattern, valid_pattern in lists:
        suspect = suspect | (pl.col("_raw_payload").str.count_matches(key_pattern)
                             != pl.col("_raw_payload").str.count_matches(valid_pattern))
    lines = lines.with_columns(suspect.fill_null(True).alias("_suspect"))
    fast = lines.filter(~pl.col("_suspect"))
    suspects = lines.filter(pl.col("_suspect"))
    physical: dict[int, bytes] = {}  # raw bytes of the lines that take the exact path
    if suspects.height:
        physical = _pick_lines(data, set(suspects["_line_number"].to_list()))
    del data  # the bulk decoder reads the file itself; keep one copy of the text in memory, not two
    decoded = None
    if fast.height:
        source: Any = path if fast.height == lines.height else io.BytesIO(
            fast["_raw_payload"].str.join("\n").item().encode())
        try:
            decoded = pl.read_ndjson(source, schema=raw_schema(spec))
        except (pl.exceptions.PolarsError, ValueError):
            decoded = None  # a malformed line somewhere: every line takes the exact path
        if decoded is not None and decoded.height != fast.height:
            decoded = None
    if decoded is None and fast.height:
        physical.update(_pick_lines(path.read_bytes(), set(fast["_line_number"].to_list())))
    slow = lines if decoded is None else suspects
    numbered = [(n, physical[n]) for n in slow["_line_number"].to_list()]
    frames, malformed = _frames_from_rows(spec, manifest, asset_index, _exact_rows(numbered))
    if decoded is not None and fast.height:
        frames.append(_with_lineage(decoded.with_columns(fast["_raw_payload"]), manifest, asset_index,
                                    fast["_line_number"], None))
    return frames, malformed


def _with_lineage(frame: pl.DataFrame, manifest: SourceManifest, asset_index: int,
                  lines: list[int] | pl.Series, type_errors: list[str | None] | None) -> pl.DataFrame:
    asset = manifest.assets[asset_index]
    line_numbers = pl.Series("_line_number", lines, dtype=pl.Int64)
    return frame.with_columns(
        pl.lit(manifest.manifest_id).alias("_manifest_id"),
        pl.lit(asset.uri).alias("_source_uri"),
        line_numbers,
        (pl.lit(delivery_prefix(manifest, asset_index)) + line_numbers.cast(pl.String).str.zfill(10)).alias("_delivery_key"),
        pl.Series("_type_errors", type_errors if type_errors is not None else [None] * len(lines), dtype=pl.String),
    ).select([*frame.columns[: frame.columns.index("_raw_payload")], *LINEAGE_SCHEMA])


def read_asset(spec: DatasetSpec, manifest: SourceManifest, asset_index: int, path: Path) -> tuple[list[pl.DataFrame], pl.DataFrame]:
    """Frames of parsed records (chunked) and a frame of malformed ones for one asset."""
    asset = manifest.assets[asset_index]
    if asset.format == "jsonl":
        return _read_jsonl(spec, manifest, asset_index, path)
    data = path.read_bytes()
    rows = _csv_rows(data, spec) if asset.format == "csv" else _parquet_rows(data)
    return _frames_from_rows(spec, manifest, asset_index, rows)


def _frames_from_rows(spec: DatasetSpec, manifest: SourceManifest, asset_index: int,
                      rows: Iterator[tuple[int, str | None, Any]]) -> tuple[list[pl.DataFrame], pl.DataFrame]:
    """The exact per-record path: (line, raw text, object or error) rows into frames, chunk by chunk."""
    asset = manifest.assets[asset_index]
    frames: list[pl.DataFrame] = []
    malformed: list[dict[str, Any]] = []
    chunk_lines: list[int] = []
    chunk_text: list[str | None] = []
    chunk_objects: list[dict[str, Any]] = []

    def flush() -> None:
        if not chunk_objects:
            return
        columns, type_errors = columns_from_objects(spec, chunk_objects)
        frame = pl.DataFrame(columns, schema=raw_schema(spec)).with_columns(
            pl.Series("_raw_payload", chunk_text, dtype=pl.String))
        frames.append(_with_lineage(frame, manifest, asset_index, chunk_lines, type_errors))
        chunk_lines.clear(), chunk_text.clear(), chunk_objects.clear()

    for line_number, text, parsed in rows:
        if isinstance(parsed, str):
            malformed.append({
                "manifest_id": manifest.manifest_id, "source_uri": asset.uri, "line_number": line_number,
                "reason_code": QuarantineReason.MALFORMED_RECORD.value, "detail": parsed,
                "event_id": None, "raw_payload": text or "",
            })
            continue
        chunk_lines.append(line_number)
        chunk_text.append(text)
        chunk_objects.append(parsed)
        if len(chunk_objects) >= CHUNK_ROWS:
            flush()
    flush()
    return frames, pl.DataFrame(malformed, schema=QUARANTINE_SCHEMA)


FIELD_SAMPLE_RECORDS = 1000


def sample_fields(fmt: str, path: Path, limit: int = FIELD_SAMPLE_RECORDS) -> tuple[Counter[str], int]:
    """The field names an asset's records carry, from its first records (a header or schema counts once)."""
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            return Counter(next(csv.reader(handle), [])), 1
    if fmt == "parquet":
        return Counter(pl.read_parquet_schema(path)), 1
    seen: Counter[str] = Counter()
    sampled = 0
    with path.open("rb") as handle:
        for line in handle:
            if sampled >= limit:
                break
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # blank or malformed: the reader quarantines it; no fields to learn from
            if type(obj) is dict:
                seen.update(obj.keys())
                sampled += 1
    return seen, sampled


def read_partition(spec: DatasetSpec, manifests: list[SourceManifest], paths: dict[tuple[str, int], Path]) -> RawBatch:
    """All assets of a partition's manifests, in delivery order."""
    frames: list[pl.DataFrame] = []
    malformed: list[pl.DataFrame] = []
    read_counts: dict[str, int] = {}
    fields: Counter[str] = Counter()
    sampled = 0
    for manifest in manifests:
        for index, asset in enumerate(manifest.assets):
            path = paths[(manifest.manifest_id, index)]
            asset_frames, asset_malformed = read_asset(spec, manifest, index, path)
            frames.extend(asset_frames)
            malformed.append(asset_malformed)
            read_counts[f"{manifest.manifest_id}:{asset.uri}"] = sum(f.height for f in asset_frames) + asset_malformed.height
            asset_fields, asset_sampled = sample_fields(asset.format, path)
            fields.update(asset_fields)
            sampled += asset_sampled
    empty = pl.DataFrame(schema={**raw_schema(spec), **LINEAGE_SCHEMA})
    records = pl.concat([empty, *frames], how="vertical") if frames else empty
    bad = pl.concat(malformed) if malformed else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    declared = sum(a.record_count for m in manifests for a in m.assets)
    return RawBatch(records=records, malformed=bad, read_counts=read_counts,
                    field_sample=dict(fields), sampled_records=sampled, declared_records=declared)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
