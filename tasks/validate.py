"""Validate raw records against the dataset's contract and split them into events and quarantine."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

import orjson
import pandera.errors
import polars as pl
from pandera.config import ValidationDepth, config_context

from schemas.datasets import DatasetSpec
from schemas.kinds import CANONICAL_TS
from schemas.reason_codes import QuarantineReason
from tasks.dedup import take
from tasks.errors import ContractDefinitionError, printable
from tasks.read import QUARANTINE_SCHEMA, RawBatch, columns_from_objects, payload_record, raw_schema
HASH_CHUNK_ROWS = 100_000


@dataclass
class ValidatedBatch:
    """A partition's contract-valid records (typed, in delivery order) and the records it rejected.

    Duplicates are still in `events`: which version of an event wins depends on bronze too (tasks/dedup.py).
    """

    events: pl.DataFrame  # typed spec fields + _content_hash + lineage columns
    quarantine: pl.DataFrame  # QUARANTINE_SCHEMA
    total: int
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
    # carried over from the read, for the checks and the evidence
    declared_records: int = 0
    read_counts: dict[str, int] = field(default_factory=dict)
    field_sample: dict[str, int] = field(default_factory=dict)
    sampled_records: int = 0


def partition_window(partition_key: date) -> tuple[datetime, datetime]:
    """A delivery day's window: [00:00 UTC, next day 00:00 UTC)."""
    start = datetime.combine(partition_key, time(0), tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def _validate(spec: DatasetSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """Pandera's failure cases for `frame`. Validation is pinned on and to schema *and* data checks:
    PANDERA_VALIDATION_ENABLED / PANDERA_VALIDATION_DEPTH in the environment must not turn a contract off."""
    with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA,
                        cache_dataframe=False):
        try:
            spec.model.validate(frame, lazy=True)
        except pandera.errors.SchemaErrors as exc:
            return exc.failure_cases
    return pl.DataFrame(schema={"index": pl.Int64, "column": pl.String, "check": pl.String,
                                "failure_case": pl.String})


def parse_fields(spec: DatasetSpec, records: pl.DataFrame) -> pl.DataFrame:
    """Raw columns (as delivered) -> the model's typed columns (schemas/kinds.py). A value that is no
    valid value of its kind, or breaks a factory rule, becomes null and a type error of its record."""
    errors: list[pl.Expr] = []
    typed: list[pl.Expr] = []
    for f in spec.fields:
        raw = pl.col(f.name)
        parsed = f.rules.parse(raw, f.dtype)
        broken = f.rules.rule_errors(f.name, raw)
        if broken:  # a value breaking a rule of its kind is no value
            parsed = pl.when(pl.any_horizontal([b.is_not_null() for b in broken]).not_()).then(parsed)
        if message := f.rules.parse_message(f.dtype):
            broken.append(pl.when(raw.is_not_null() & parsed.is_null()).then(pl.lit(f"{f.name}: {message}")))
        errors += broken
        typed.append(parsed.cast(f.dtype).alias(f.name))
    type_errors = pl.concat_str([pl.col("_type_errors"), *errors], separator="; ", ignore_nulls=True)
    return records.with_columns(*typed, pl.when(type_errors != "").then(type_errors).alias("_type_errors"))


def contract_failures(spec: DatasetSpec, records: pl.DataFrame) -> pl.DataFrame:
    """(row, detail) for every row that breaks the contract; all failures at once (lazy).

    A failure with no row (a check that could not run, a column of the wrong type) is a broken
    contract, not bad data: it fails the run instead of being dropped."""
    frame = records.select(spec.field_names)
    failures = _validate(spec, frame)
    frame_level = failures.filter(pl.col("index").is_null())
    if frame_level.height:
        first = frame_level.row(0, named=True)
        raise ContractDefinitionError(
            f"{spec.name}: contract {spec.model.__name__} failed as a whole at {first['column']}: "
            f"{first['check']}: {printable(first.get('failure_case'))}; fix the model in schemas/")
    cases = failures.select(
        pl.col("index").cast(pl.Int64),
        # a frame-wide check is reported against the dataset's model; name the column it judges
        pl.when(pl.col("column") == spec.model.__name__).then(pl.lit(spec.ordering_column))
        .otherwise(pl.col("column")).alias("column"),
        pl.col("check").cast(pl.String),
    )
    typed = (
        records.with_row_index("index").select(pl.col("index").cast(pl.Int64), "_type_errors")
        .filter(pl.col("_type_errors").is_not_null())
    )
    # a wrong JSON type was nulled by the reader; its not_nullable echo says nothing new
    typed_columns = typed.with_columns(pl.col("_type_errors").str.split("; ")).explode("_type_errors").select(
        "index", pl.col("_type_errors").str.extract(r"^([^:]+):").alias("column"),
        pl.col("_type_errors").str.extract(r"^[^:]+: (.*)$").alias("check"),
    )
    cases = cases.join(typed_columns.select("index", "column"), on=["index", "column"], how="anti")
    order = {name: i for i, name in enumerate(spec.field_names)}
    return (
        pl.concat([typed_columns, cases])
        .with_columns(pl.col("column").replace_strict(order, default=len(order)).alias("_order"))
        .sort("index", "_order", "check")
        .group_by("index", maintain_order=True)
        .agg((pl.col("column") + ": " + pl.col("check")).unique(maintain_order=True).str.join("; ").alias("detail"))
    )


def typed_events(spec: DatasetSpec, typed: pl.DataFrame) -> pl.DataFrame:
    """Contract-valid typed records with a hash of their content."""
    canonical = pl.struct([f.rules.canonical(pl.col(f.name)).alias(f.name) for f in spec.fields]).struct.json_encode()
    hashes: list[str] = []
    for offset in range(0, typed.height, HASH_CHUNK_ROWS):  # in chunks: never all the JSON text at once
        texts = typed.slice(offset, HASH_CHUNK_ROWS).select(canonical).to_series().to_list()
        hashes += [hashlib.blake2b(text.encode(), digest_size=16).hexdigest() for text in texts]
    return typed.with_columns(pl.Series("_content_hash", hashes, dtype=pl.String))


def typed_from_payloads(spec: DatasetSpec, payloads: list[str], keep_errors: bool = False) -> pl.DataFrame:
    """Typed fields of already-accepted raw payloads (bronze keeps the payload, silver needs the fields);
    with `keep_errors`, what did not parse under the code's contract in `_type_errors`."""
    objects = [payload_record(spec, p, orjson.loads(p)) for p in payloads]
    columns, type_errors = columns_from_objects(spec, objects)
    frame = pl.DataFrame(columns, schema=raw_schema(spec)).with_columns(
        pl.Series("_type_errors", type_errors, dtype=pl.String))
    typed = parse_fields(spec, frame)
    return typed if keep_errors else typed.drop("_type_errors")


def _quarantine_rows(frame: pl.DataFrame, spec: DatasetSpec, reason: QuarantineReason, detail: pl.Expr) -> pl.DataFrame:
    return frame.select(
        pl.col("_manifest_id").alias("manifest_id"),
        pl.col("_source_uri").alias("source_uri"),
        pl.col("_line_number").alias("line_number"),
        pl.lit(reason.value).alias("reason_code"),
        detail.alias("detail"),
        pl.col(spec.event_key).alias("event_id"),
        pl.col("_raw_payload").alias("raw_payload"),
    )


def validate_batch(spec: DatasetSpec, raw: RawBatch, partition_key: date) -> ValidatedBatch:
    """Split a partition's records: malformed, contract violations and future events go to quarantine."""
    window_start, window_end = partition_window(partition_key)
    records = raw.records.with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64))
    records = parse_fields(spec, records)
    failures = contract_failures(spec, records.drop("_row")).rename({"index": "_row"})
    broken = records.join(failures, on="_row", how="inner")
    passed = take(records, ~records["_row"].is_in(failures["_row"].implode()))

    events = typed_events(spec, passed)
    is_future = pl.col(spec.partition_column) >= window_end
    future = events.filter(is_future)
    events = take(events, ~events.select(is_future.fill_null(False)).to_series())

    if not events["_delivery_key"].is_sorted():  # the exact path's rows come first; restore delivery order
        events = events.sort("_delivery_key")
    events = events.drop("_row", "_type_errors")
    quarantine = pl.concat([
        raw.malformed,
        _quarantine_rows(broken, spec, QuarantineReason.SCHEMA_VIOLATION, pl.col("detail")),
        _quarantine_rows(future, spec, QuarantineReason.FUTURE_EVENT,
                         # concat_str, not pl.format: format panics on multi-chunk string views (polars 2.1)
                         pl.concat_str([pl.lit(f"{spec.partition_column}: "),
                                        pl.col(spec.partition_column).dt.strftime(CANONICAL_TS),
                                        pl.lit(" is at or after the window end " + window_end.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))])),
    ]).cast(pl.Schema(QUARANTINE_SCHEMA)).sort("source_uri", "line_number")
    return ValidatedBatch(
        events=events,
        quarantine=quarantine,
        total=raw.total,
        invalid_by_reason=dict(Counter(quarantine["reason_code"].to_list())),
        declared_records=raw.declared_records,
        read_counts=raw.read_counts,
        field_sample=raw.field_sample,
        sampled_records=raw.sampled_records,
    )
