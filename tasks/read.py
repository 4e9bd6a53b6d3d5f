"""Read a partition's assets into Polars: one row per record, unparseable records kept aside with their line.

One parse rule for every format and path (tasks/strict_json.py): a record is a JSON object (a CSV row,
a Parquet row) with no key twice, in valid UTF-8. JSONL is decoded by Polars in bulk, block by block;
lines Polars would read differently from that rule (wrong JSON types it would coerce, repeated or
escaped keys, surrogate escapes, control characters, deep nesting) are sent to the exact per-line
path, and so are the lines of a block Polars refuses that are not JSON at all. Raw payloads are kept as delivered; bytes that
are not text a database can hold (invalid UTF-8, NUL) are kept base64-encoded, and the detail says so.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import polars as pl

from schemas.datasets import DatasetSpec
from schemas.kinds import KINDS, FieldKind, decimal_literal_parser
from schemas.manifest import SourceManifest
from schemas.reason_codes import QuarantineReason
from tasks.errors import printable
from tasks.strict_json import MAX_DEPTH, loads_strict

CHUNK_ROWS = 100_000  # bounds the Python objects alive at once on large deliveries
BULK_BLOCK_LINES = 16_384  # Polars decodes this many lines at once; a block it refuses is bisected
BOM = b"\xef\xbb\xbf"

LINEAGE_SCHEMA: dict[str, Any] = {
    "_manifest_id": pl.String,
    "_source_uri": pl.String,
    "_line_number": pl.Int64,
    "_raw_payload": pl.String,
    "_delivery_key": pl.String,
    "_type_errors": pl.String,
}
QUARANTINE_SCHEMA: dict[str, Any] = {
    "manifest_id": pl.String,
    "source_uri": pl.String,
    "line_number": pl.Int64,
    "reason_code": pl.String,
    "detail": pl.String,
    "event_id": pl.String,
    "raw_payload": pl.String,
}


class UnreadableAsset(ValueError):
    """An asset that is not its declared format at all (a 'Parquet' file that is none)."""

    def __init__(self, manifest: SourceManifest, index: int, why: str) -> None:
        self.manifest, self.index, self.why = manifest, index, why
        super().__init__(f"{manifest.assets[index].uri} {why}")


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


def empty_records(spec: DatasetSpec) -> pl.DataFrame:
    """No records, in the shape the reader gives them (spec fields as delivered, then lineage)."""
    return pl.DataFrame(schema={**raw_schema(spec), **LINEAGE_SCHEMA})


def raw_schema(spec: DatasetSpec) -> dict[str, pl.DataType]:
    return spec.raw_schema


def delivery_prefix(manifest: SourceManifest, asset_index: int) -> str:
    """Sortable prefix of a record's delivery key; the line number completes it."""
    produced = manifest.produced_at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
    # space sorts below every character a manifest id may hold, so the key orders like the tuple
    return f"{manifest.partition_key.isoformat()} {produced} {manifest.manifest_id} {asset_index:04d} "


def storable_payload(raw: bytes) -> tuple[str, str]:
    """(text a database can store, note for the detail): the text itself, or base64 when the bytes are
    not valid UTF-8 or hold NUL, which PostgreSQL text cannot. Nothing of a record is lost either way."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        return text, ""
    return base64.b64encode(raw).decode("ascii"), " (raw payload stored base64: not UTF-8 text)"


# --- records and their types -------------------------------------------------------------------

def _python_type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def columns_from_objects(spec: DatasetSpec, objects: list[dict[str, Any]]) -> tuple[dict[str, list[Any]], list[str | None]]:
    """Column lists for the raw schema; a value of the wrong JSON type becomes null plus a type error."""
    errors: list[list[str] | None] = [None] * len(objects)
    columns: dict[str, list[Any]] = {}
    for field in spec.fields:
        rules = field.rules
        values = [o.get(field.name) for o in objects]
        for i, value in enumerate(values):
            if value is None:
                continue
            if rules.accepts(value):
                values[i] = rules.to_raw(value)
            else:
                errors[i] = (errors[i] or []) + [f"{field.name}: dtype({rules.expected}) got {_python_type(value)}"]
                values[i] = None
        columns[field.name] = values
    return columns, ["; ".join(e) if e else None for e in errors]


def exact_decimals(spec: DatasetSpec, text: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The object with its decimal fields' numbers as their exact text (orjson reads them as floats)."""
    decimals = [f.name for f in spec.fields if f.rules.number_text and type(obj.get(f.name)) is float]
    if not decimals:
        return obj
    exact = json.loads(text, parse_float=decimal_literal_parser)
    return {**obj, **{name: exact[name] for name in decimals}}


Parsed = tuple[int, str, "dict[str, Any] | str"]  # (line, raw payload as stored, object or why it is none)


def parse_record_line(line: bytes) -> tuple[str, dict[str, Any] | str]:
    """One JSONL line by the strict rule: (stored payload, the object or why it is not one)."""
    payload, note = storable_payload(line)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return payload, f"not valid UTF-8: byte 0x{line[exc.start]:02x} at column {exc.start + 1}{note}"
    try:
        obj = loads_strict(text)
    except ValueError as exc:
        return payload, f"not valid JSON: {printable(exc)}{note}"
    if type(obj) is not dict:
        return payload, f"a JSON {type(obj).__name__}, not an object"
    return payload, obj


# --- JSONL -------------------------------------------------------------------------------------

_JSON_STRING = r'"(?:[^"\\]|\\.)*"'
_KEY_TOKEN_PLAIN = r'"[^"\\]*"\s*:'  # a key spelled without escapes; escaped keys are flagged apart


def _literal(name: str) -> str:
    """A field name as a Rust regex matching it literally (every ASCII punctuation escaped, which Rust allows)."""
    return "".join("\\" + ch if ch.isascii() and not ch.isalnum() and ch not in " _\"" else ch for ch in name)


def _suspect(spec: DatasetSpec) -> pl.Expr:
    """Lines Polars could read differently from the strict rule; they take the exact path.

    Polars coerces numbers, booleans and objects into string columns, keeps the first of two equal
    keys, decodes a lone surrogate escape to NUL and accepts deeper nesting than we do. Each test
    below may raise a false alarm (the exact path then finds nothing wrong); none misses a case.
    Repeated keys are found after the bulk decode (`_repeating_keys`), where it is cheap.
    """
    line = pl.col("_raw_payload")
    string_valued = {f.name for f in spec.fields if f.rules.wire_value == KINDS[FieldKind.STRING].wire_value}
    flags = [
        line.is_null(),  # not UTF-8
        ~line.str.contains(r"^[ \t\r\n]*\{") | ~line.str.contains(r"\}[ \t\r\n]*$"),  # not one object
        line.str.contains(r"[\x00-\x1f]"),  # raw control characters: invalid inside strings
        line.str.contains(r"\\u[dD][89a-fA-F]"),  # surrogate escapes: Polars decodes a lone one to NUL
        line.str.contains(r'\\.[^"\\]*"\s*:'),  # a key spelled with an escape may alias a contract field
        line.str.contains(r'"\s+:'),  # whitespace before a colon: `_repeating_keys` counts `":` only
        line.str.count_matches(r"[\[{]") > MAX_DEPTH,
    ]
    if string_valued:  # a string-valued field whose value is no string (one pattern for them all: the common case)
        names = "|".join(_literal(name) for name in sorted(string_valued))
        flags.append(line.str.contains(rf'"(?:{names})"\s*:\s*[^"\sn]'))
    for f in spec.fields:
        key = rf'"{_literal(f.name)}"\s*:'
        if f.name in string_valued:
            continue
        if f.rules.wire_value is None:  # no bulk reading is exact for this kind: any value goes one by one
            flags.append(line.str.contains(rf"{key}\s*[^\sn]"))
        else:  # every occurrence must be a value Polars reads exactly
            # the value's end is part of the match: `1.5e2` must not pass as the decimal `1.5`
            whole_value = rf"{key}\s*{f.rules.wire_value}\s*[,}}]"
            flags.append(line.str.count_matches(key) != line.str.count_matches(whole_value))
        if f.rules.number_text:  # its text is taken from the line: the key must be there once at most
            flags.append(line.str.count_matches(key) > 1)
    return pl.any_horizontal(flags).fill_null(True)


def _decimal_texts(spec: DatasetSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """Decimal fields as the line spells them: Polars reads a JSON number through a float."""
    line = pl.col("_raw_payload")
    exprs = []
    for f in spec.fields:
        if f.rules.number_text:
            number = line.str.extract(rf'"{_literal(f.name)}"\s*:\s*(-?[0-9][0-9.]*)(?:\s*[,}}])', 1)
            exprs.append(pl.coalesce(number, pl.col(f.name)).alias(f.name))
    return frame.with_columns(exprs) if exprs else frame


def _repeating_keys(spec: DatasetSpec, frame: pl.DataFrame) -> pl.Series:
    """Decoded lines that name a key twice (whose Polars reading, first wins, is not the rule's).

    In JSON that Polars decoded, `"subject":` can only be a key named subject (inside a string every
    quote is escaped), and every key of a line not flagged suspect ends in `":`. So a line with as
    many `":` as contract fields it names holds each of them once and nothing else. Cheapest first:
    a field decoded to a value is named; then the fields are looked for by name; the lines left
    (extra fields, nested objects, `\\":` inside strings) have their keys compared exactly."""
    line = pl.col("_raw_payload")
    valued = pl.sum_horizontal([pl.col(f.name).is_not_null().cast(pl.Int32) for f in spec.fields])
    lines = frame.select(line, line.str.count_matches('":', literal=True).alias("_tokens"),
                         valued.alias("_valued"), pl.int_range(pl.len()).alias("_row"))
    # each filter runs on the lines the cheaper one before left open
    lines = lines.filter(pl.col("_tokens") != pl.col("_valued"))
    named = pl.sum_horizontal([line.str.contains(f'"{f.name}":', literal=True).cast(pl.Int32) for f in spec.fields])
    lines = lines.filter(pl.col("_tokens") != named)
    keys = line.str.extract_all(_KEY_TOKEN_PLAIN).list.eval(pl.element().str.strip_chars_end(": \t"))
    lines = lines.filter(keys.list.n_unique() < keys.list.len())
    return pl.repeat(False, frame.height, eager=True).scatter(lines["_row"], True)


def _utf8_or_none(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


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


# a newline that ends a line and starts a blank one: the lookahead fails at once on a record's "{"
_BEFORE_BLANK_LINE = re.compile(rb"\n(?=[ \t\r\x0b\x0c]*\n)")


def count_jsonl_records(data: bytes) -> int:
    """Records in a JSONL asset exactly as the reader counts them: lines that are not blank."""
    return count_jsonl_lines(data.removeprefix(BOM))


def count_jsonl_lines(block: bytes) -> int:
    """Non-blank lines of a block of whole lines (the last may lack its newline), counted without
    splitting it into a Python object per line."""
    first_end = block.find(b"\n")
    if first_end == -1:
        return 1 if block.strip(BLANK) else 0
    blank = len(_BEFORE_BLANK_LINE.findall(block)) + (0 if block[:first_end].strip(BLANK) else 1)
    tail = block[block.rfind(b"\n") + 1:]
    return block.count(b"\n") - blank + (1 if tail.strip(BLANK) else 0)


FILE_BLOCK_BYTES = 64 * 2**20


def jsonl_blocks(handle: BinaryIO, block_bytes: int = FILE_BLOCK_BYTES) -> Iterator[tuple[int, bytes]]:
    """(number of the block's first line, the block) over a JSONL file read about `block_bytes` at a
    time; every block ends at a newline (or the end of the file), so no line is split; a leading byte
    order mark is dropped. Memory holds one block (and the longest line), not the file."""
    carry, first_line, bom_checked = b"", 1, False
    while True:
        piece = handle.read(block_bytes)
        data = carry + piece if carry else piece
        if not bom_checked and (len(data) >= len(BOM) or not piece):
            data, bom_checked = data.removeprefix(BOM), True
        if not piece:
            if data:
                yield first_line, data
            return
        end = data.rfind(b"\n")
        if not bom_checked or end == -1:
            carry = data  # too short to judge a BOM, or one line longer than a block: read on
            continue
        block, carry = data[: end + 1], data[end + 1:]
        yield first_line, block
        first_line += block.count(b"\n")


def _physical_lines(data: bytes, first_line: int = 1) -> tuple[pl.DataFrame, dict[int, bytes]]:
    """Non-blank lines with their 1-based numbers (the first being `first_line`; invalid UTF-8 becomes
    null), and the raw bytes of the lines that are not UTF-8 (the exact path needs them)."""
    frames: list[pl.DataFrame] = []
    undecodable: dict[int, bytes] = {}
    for block_line, parts in _blocks(data):
        first_line_of_block = first_line + block_line - 1
        try:
            texts = pl.Series(parts, dtype=pl.Binary).cast(pl.String)
        except pl.exceptions.PolarsError:
            decoded = [_utf8_or_none(part) for part in parts]
            undecodable.update({first_line_of_block + i: part.rstrip(b"\r") for i, (part, text) in
                                enumerate(zip(parts, decoded)) if text is None})
            texts = pl.Series(decoded, dtype=pl.String)
        frames.append(
            pl.DataFrame({"_raw_payload": texts})
            .with_row_index("_line_number", offset=first_line_of_block)
            .with_columns(pl.col("_line_number").cast(pl.Int64), pl.col("_raw_payload").str.strip_suffix("\r"))
            .filter(pl.col("_raw_payload").is_null()
                    | (pl.col("_raw_payload").str.strip_chars(BLANK.decode()) != ""))
        )
    empty = pl.DataFrame(schema={"_line_number": pl.Int64, "_raw_payload": pl.String})
    return (pl.concat([empty, *frames]) if frames else empty), undecodable


def _polars_decode(spec: DatasetSpec, block: pl.DataFrame) -> pl.DataFrame | None:
    """The block's lines decoded by Polars, or None when it refuses one of them."""
    text = block["_raw_payload"].str.join("\n").item().encode()
    try:
        frame = pl.read_ndjson(io.BytesIO(text), schema=raw_schema(spec))
    except (pl.exceptions.PolarsError, ValueError):
        return None
    return frame if frame.height == block.height else None


def _json_parses(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _decode_blocks(spec: DatasetSpec, lines: pl.DataFrame) -> tuple[list[pl.DataFrame], list[int]]:
    """Bulk-decode trustworthy lines block by block. In a block Polars refuses, the lines that are not
    JSON at all are found with one cheap parse each and sent to the exact path; the rest is decoded
    again (and bisected, should Polars still refuse). Returns the frames and the refused line numbers."""
    decoded: list[pl.DataFrame] = []
    refused: list[int] = []
    pending = [(lines.slice(offset, BULK_BLOCK_LINES), True)
               for offset in range(0, lines.height, BULK_BLOCK_LINES)]
    while pending:
        block, first_try = pending.pop()
        frame = _polars_decode(spec, block)
        if frame is not None:
            decoded.append(_decimal_texts(spec, frame.with_columns(block["_raw_payload"], block["_line_number"])))
        elif first_try:
            parses = pl.Series([_json_parses(t) for t in block["_raw_payload"].to_list()], dtype=pl.Boolean)
            refused += block.filter(~parses)["_line_number"].to_list()
            if parses.any():
                pending.append((block.filter(parses), False))
        elif block.height == 1:
            refused.append(block["_line_number"].item())
        else:
            half = block.height // 2
            pending += [(block.slice(half), False), (block.slice(0, half), False)]
    return decoded, refused


def _read_jsonl(spec: DatasetSpec, manifest: SourceManifest, asset_index: int,
                data: bytes, first_line: int = 1) -> tuple[list[pl.DataFrame], pl.DataFrame]:
    """JSONL lines (the first numbered `first_line`, any byte order mark already dropped): Polars decodes
    trustworthy lines in bulk; suspect and refused lines go one by one."""
    lines, undecodable = _physical_lines(data, first_line)
    lines = lines.with_columns(_suspect(spec).alias("_suspect"))
    fast = lines.filter(~pl.col("_suspect")).drop("_suspect")
    suspects = lines.filter(pl.col("_suspect"))
    decoded, refused = _decode_blocks(spec, fast)
    kept = []
    for frame in decoded:
        repeating = _repeating_keys(spec, frame)
        if repeating.any():
            refused += frame.filter(repeating)["_line_number"].to_list()
            frame = frame.filter(~repeating)
        if frame.height:
            kept.append(frame)
    decoded = kept
    slow = pl.concat([suspects.drop("_suspect"), fast.filter(pl.col("_line_number").is_in(refused))])
    rows = []
    for number, text in slow.sort("_line_number").iter_rows():
        raw = undecodable[number] if text is None else text.encode("utf-8")
        payload, obj = parse_record_line(raw)
        rows.append((number, payload, exact_decimals(spec, payload, obj) if isinstance(obj, dict) else obj))
    frames, malformed = _frames_from_rows(spec, manifest, asset_index, iter(rows))
    for frame in sorted(decoded, key=lambda f: f["_line_number"][0]):
        frames.append(_with_lineage(frame.drop("_line_number"), manifest, asset_index, frame["_line_number"], None))
    return frames, malformed


# --- CSV and Parquet ---------------------------------------------------------------------------

_NUL_STANDIN = "\udc00"  # surrogateescape yields only U+DC80-U+DCFF: U+DC00 can stand for NUL unambiguously


def csv_table(data: bytes) -> tuple[list[str], Iterator[tuple[int, list[str] | str, str]]]:
    """The header, and per data row (first line of the row, its cells or why it is no record, raw
    payload as stored).

    A leading byte order mark is dropped; a cell that is not UTF-8 makes its row malformed; a header
    naming a column twice makes every row malformed (the same key twice)."""
    text = data.removeprefix(BOM).decode("utf-8", errors="surrogateescape").replace("\x00", _NUL_STANDIN)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        header = []
    problem = None
    if any(_bad_text(h) for h in header):
        problem = "the header is not valid UTF-8 text"
    elif len(set(header)) < len(header):
        twice = sorted({h for h in header if header.count(h) > 1})
        problem = "the header names " + ", ".join(repr(_restore_nul(h)) for h in twice) + " twice"
    return [_restore_nul(h) for h in header], _csv_records(reader, header, problem)


csv.field_size_limit(2**31 - 1)  # a cell may be as long as a file: the default 128 KiB would split records


def _csv_records(reader: Any, header: list[str], problem: str | None) -> Iterator[tuple[int, list[str] | str, str]]:
    previous_end = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # past an error the reader can no longer tell where records begin: text inside a cell could
            # pass for a record, so the file is refused rather than read on
            raise ValueError(f"is not readable as CSV from line {previous_end + 1}: {printable(exc)}") from None
        start, previous_end = previous_end + 1, reader.line_num
        if not row:
            continue
        raw = json.dumps([_restore_nul(c) for c in row])  # ensure_ascii: invalid bytes stay as \udcNN escapes
        if problem:
            yield start, problem, raw
        elif any(_bad_text(c) for c in row):
            yield start, "not valid UTF-8 text in column " + ", ".join(
                repr(h) for h, c in zip(header, row) if _bad_text(c)), raw
        elif len(row) != len(header):
            yield start, f"{len(row)} cells where the header has {len(header)}", raw
        else:
            yield start, [_restore_nul(c) for c in row], raw


def _bad_text(cell: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in cell)


def _restore_nul(cell: str) -> str:
    return cell.replace(_NUL_STANDIN, "\x00")


def csv_record(spec: DatasetSpec, cells: dict[str, str]) -> dict[str, Any]:
    """A CSV row's cells (by header, as text) read as the contract's kinds spell them (schemas/kinds.py):
    an empty cell is null where the contract allows null, an empty list for a list, '' for a required
    string, and otherwise null (then the record breaks the contract for that field); a cell of no contract
    field stays text, an empty one null."""
    fields = {f.name: f for f in spec.fields}
    obj: dict[str, Any] = {}
    for name, cell in cells.items():
        field = fields.get(name)
        if field is None:
            obj[name] = cell if cell != "" else None
        elif cell == "":
            obj[name] = field.rules.empty_cell(field.nullable)
        else:
            obj[name] = field.rules.from_cell(cell)
    return obj


def csv_payload(cells: dict[str, str]) -> str:
    """What bronze keeps of a CSV row: its cells by header, as delivered text, in a one-element JSON array.
    No JSON record is an array, so a payload says which rule reads it: a later contract reads the cells
    exactly as a new delivery of the file would be read."""
    return json.dumps([cells])


def payload_record(spec: DatasetSpec, payload: str, parsed: Any) -> dict[str, Any]:
    """The record a stored payload holds under the code's contract: a JSON object as it is; a CSV row's
    cells read by `csv_record`."""
    if isinstance(parsed, list):
        return csv_record(spec, parsed[0])
    return exact_decimals(spec, payload, parsed)


def _csv_rows(data: bytes, spec: DatasetSpec) -> Iterator[Parsed]:
    """CSV rows as records (`csv_record`), each with its cells as the stored payload (`csv_payload`)."""
    header, records = csv_table(data)
    for line_number, cells, raw in records:
        if isinstance(cells, str):
            yield line_number, raw, cells
            continue
        by_header = dict(zip(header, cells))
        yield line_number, csv_payload(by_header), csv_record(spec, by_header)


def _parquet_rows(data: bytes) -> Iterator[Parsed]:
    try:
        frame = pl.read_parquet(io.BytesIO(data))
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise ValueError(_not_parquet(exc)) from None
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime):  # typed timestamps become ISO-8601 text, as on the wire
            frame = frame.with_columns(
                pl.col(name).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
                if dtype.time_zone else pl.col(name).dt.strftime("%Y-%m-%dT%H:%M:%S%.6f")
            )
        elif dtype == pl.Date:  # a typed date becomes its wire text too
            frame = frame.with_columns(pl.col(name).dt.strftime("%Y-%m-%d"))
    for row_number, obj in enumerate(frame.iter_rows(named=True), start=1):
        yield row_number, _row_json(obj), obj


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or abs(value) == float("inf")):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _row_json(obj: dict[str, Any]) -> str:
    """A Parquet row as strict JSON a rebuild can parse: NaN and infinities become null; integers wider
    than 64 bits, which orjson refuses, go through the standard library."""
    try:
        return orjson.dumps(obj, default=str).decode()
    except TypeError:
        return json.dumps(_finite(obj), default=str)


def count_records(data: bytes, fmt: str) -> int:
    """Records in an asset as the reader will see them: non-blank lines (jsonl), rows (csv, parquet).
    ValueError when the bytes are not the declared format."""
    if fmt == "jsonl":
        return count_jsonl_records(data)
    if fmt == "csv":
        return sum(1 for _ in csv_table(data)[1])
    try:
        return pl.scan_parquet(io.BytesIO(data)).select(pl.len()).collect().item()
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise ValueError(_not_parquet(exc)) from None


def _not_parquet(exc: Exception) -> str:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"is not a readable Parquet file ({printable(reason)})"


# --- frames ------------------------------------------------------------------------------------

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


def read_asset(spec: DatasetSpec, manifest: SourceManifest, asset_index: int,
               data: bytes) -> tuple[list[pl.DataFrame], pl.DataFrame]:
    """Frames of parsed records (chunked) and a frame of malformed ones for one asset."""
    asset = manifest.assets[asset_index]
    if asset.format == "jsonl":
        return _read_jsonl(spec, manifest, asset_index, data.removeprefix(BOM))
    rows = _csv_rows(data, spec) if asset.format == "csv" else _parquet_rows(data)
    return _frames_from_rows(spec, manifest, asset_index, rows)


def _frames_from_rows(spec: DatasetSpec, manifest: SourceManifest, asset_index: int,
                      rows: Iterator[Parsed]) -> tuple[list[pl.DataFrame], pl.DataFrame]:
    """The exact per-record path: (line, raw text, object or error) rows into frames, chunk by chunk."""
    asset = manifest.assets[asset_index]
    frames: list[pl.DataFrame] = []
    malformed: list[dict[str, Any]] = []
    chunk_lines: list[int] = []
    chunk_text: list[str] = []
    chunk_objects: list[dict[str, Any]] = []

    def flush() -> None:
        if not chunk_objects:
            return
        columns, type_errors = columns_from_objects(spec, chunk_objects)
        frame = pl.DataFrame(columns, schema=raw_schema(spec)).with_columns(
            pl.Series("_raw_payload", chunk_text, dtype=pl.String))
        frames.append(_with_lineage(frame, manifest, asset_index, chunk_lines, type_errors))
        chunk_lines.clear()
        chunk_text.clear()
        chunk_objects.clear()

    for line_number, text, parsed in rows:
        if isinstance(parsed, str):
            malformed.append({
                "manifest_id": manifest.manifest_id, "source_uri": asset.uri, "line_number": line_number,
                "reason_code": QuarantineReason.MALFORMED_RECORD.value, "detail": parsed,
                "event_id": None, "raw_payload": text,
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


def sample_fields(fmt: str, data: bytes, limit: int = FIELD_SAMPLE_RECORDS) -> tuple[Counter[str], int]:
    """The field names an asset's records carry, from its first records (a header or schema counts once)."""
    if fmt == "csv":
        return Counter(csv_table(data)[0]), 1
    if fmt == "parquet":
        return Counter(pl.read_parquet_schema(io.BytesIO(data))), 1
    seen: Counter[str] = Counter()
    sampled, start = 0, len(BOM) if data.startswith(BOM) else 0
    while sampled < limit and start < len(data):  # line by line from the start: never split the whole file
        end = data.find(b"\n", start)
        end = len(data) if end == -1 else end
        line, start = data[start:end].rstrip(b"\r"), end + 1
        if line.strip(BLANK):
            _, obj = parse_record_line(line)
            if isinstance(obj, dict):  # malformed: the reader quarantines it; no fields to learn from
                seen.update(obj.keys())
                sampled += 1
    return seen, sampled


def _piece(spec: DatasetSpec, key: str, frames: list[pl.DataFrame], malformed: pl.DataFrame,
           first: bool, declared: int, sample: tuple[Counter[str], int]) -> RawBatch:
    """Part of one asset as a batch; its first part carries what belongs to the asset once (its
    declared count and field sample), so the parts of a partition add up to the partition."""
    records = pl.concat(frames, how="vertical") if frames else empty_records(spec)
    return RawBatch(records=records, malformed=malformed, read_counts={key: records.height + malformed.height},
                    field_sample=dict(sample[0]) if first else {}, sampled_records=sample[1] if first else 0,
                    declared_records=declared if first else 0)


def _asset_parts(spec: DatasetSpec, manifest: SourceManifest, index: int, path: Path,
                 block_bytes: int) -> Iterator[tuple[RawBatch, int]]:
    """(part of the asset, input bytes it took): a JSONL file block by block, never whole; CSV and
    Parquet assets are read whole, then handed on in frames of CHUNK_ROWS records."""
    asset = manifest.assets[index]
    key = f"{manifest.manifest_id}:{asset.uri}"
    try:
        if asset.format == "jsonl":
            with path.open("rb") as handle:
                first = True
                for first_line, block in jsonl_blocks(handle, block_bytes):
                    frames, malformed = _read_jsonl(spec, manifest, index, block, first_line)
                    sample = sample_fields("jsonl", block) if first else (Counter(), 0)
                    yield _piece(spec, key, frames, malformed, first, asset.record_count, sample), len(block)
                    first = False
                if first:  # an empty file is still an asset that was read
                    yield _piece(spec, key, [], pl.DataFrame(schema=QUARANTINE_SCHEMA), True, asset.record_count,
                                 (Counter(), 0)), 0
            return
        data = path.read_bytes()
        frames, malformed = read_asset(spec, manifest, index, data)
        sample = sample_fields(asset.format, data)
    except ValueError as exc:
        raise UnreadableAsset(manifest, index, str(exc)) from None
    size, parts = len(data), max(1, len(frames))
    del data
    empty = malformed.head(0)
    for number in range(parts):
        yield _piece(spec, key, frames[number: number + 1], malformed if number == 0 else empty, number == 0,
                     asset.record_count, sample), size // parts


def merge_batches(spec: DatasetSpec, parts: list[RawBatch]) -> RawBatch:
    """Consecutive parts as one batch: records and malformed lines concatenated, counts added (no
    parts: an empty batch)."""
    if len(parts) == 1:
        return parts[0]
    read_counts: Counter[str] = Counter()
    fields: Counter[str] = Counter()
    for part in parts:
        read_counts.update(part.read_counts)
        fields.update(part.field_sample)
    return RawBatch(
        records=pl.concat([empty_records(spec), *(p.records for p in parts)], how="vertical"),
        malformed=pl.concat([pl.DataFrame(schema=QUARANTINE_SCHEMA), *(p.malformed for p in parts)]),
        read_counts=dict(read_counts), field_sample=dict(fields),
        sampled_records=sum(p.sampled_records for p in parts), declared_records=sum(p.declared_records for p in parts))


def read_chunks(spec: DatasetSpec, manifests: list[SourceManifest], paths: dict[tuple[str, int], Path],
                chunk_bytes: int) -> Iterator[RawBatch]:
    """A partition's assets as batches of about `chunk_bytes` of input each, in delivery order (the
    manifests' order, then asset and line): small assets share a chunk, a large one spans several.
    Memory holds one chunk at a time. Yields at least one (possibly empty) chunk."""
    pending: list[RawBatch] = []
    size, yielded = 0, False
    for manifest in manifests:
        for index in range(len(manifest.assets)):
            for part, nbytes in _asset_parts(spec, manifest, index, paths[(manifest.manifest_id, index)],
                                             min(chunk_bytes, FILE_BLOCK_BYTES)):
                pending.append(part)
                size += nbytes
                if size >= chunk_bytes:
                    yield merge_batches(spec, pending)
                    pending, size, yielded = [], 0, True
    if pending or not yielded:
        yield merge_batches(spec, pending)


def read_partition(spec: DatasetSpec, manifests: list[SourceManifest], paths: dict[tuple[str, int], Path]) -> RawBatch:
    """All assets of a partition's manifests, in delivery order, as one batch."""
    return merge_batches(spec, list(read_chunks(spec, manifests, paths, chunk_bytes=2**62)))


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
