"""Field kinds: what each kind of field is on the wire, in Polars, in SQL, in COPY text and in Parquet.

A dataset's Pandera model names each field's kind by its annotation (`str`, `int`, `bool`, `float`,
`datetime.date`, `pl.Decimal(p, s)`, `pl.Datetime("us", "UTC")`, `pl.List(pl.String)`, or `str` with
`json_object()`). Everything the factory does with a field's value (the reader's wire check, parsing
to the typed value, the SQL column, the text COPY and SQLite take, the content hash, comparing values
from different stores) is in the `Kind` of that field, here; no other module branches on kinds.

On the wire (JSON):
- string, date (`YYYY-MM-DD`), timestamp (ISO-8601 UTC): a JSON string;
- integer: a JSON integer within 64 bits (`"3"` and `3.0` are violations);
- decimal: a JSON number or a JSON string holding a plain decimal (`19.99`, `"19.99"`), read exactly
  from its text, never through a float; more decimal places or digits than the declared (precision,
  scale) is a violation (a float's `19.990000000000002` where a price is expected);
- float: a JSON number; boolean: `true` or `false`;
- string list: a JSON array of strings; JSON object: a JSON object, stored as its JSON text.
A CSV cell is text; it is read as the kind's wire value when it spells one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Any

import polars as pl
from sqlalchemy import BigInteger, Boolean, Date, DateTime, Double, Numeric, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

# ISO-8601 with an explicit UTC designator; any other offset, or none, is no timestamp of ours. Digits are
# ASCII ([0-9], never \d: Polars' \d also matches Arabic-Indic and full-width digits); patterns run on
# Polars (Rust regex), where $ is the end of the text, never "before a final newline".
ISO_UTC_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]00:?00)$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
JSON_OBJECT_KIND = "json_object"  # a `str` field's metadata marks it a JSON object
CANONICAL_TS = "%Y-%m-%dT%H:%M:%S.%6fZ"
_ESCAPED_NUL = r"(?:^|[^\\])(?:\\\\)*\\u0000"  # \u0000 in JSON text, not an escaped backslash before it

_JSON_STRING = r'"(?:[^"\\]|\\.)*"'
_JSON_INTEGER = r"-?(?:0|[1-9][0-9]*)"
# exponents of at most two digits: a longer one may not fit a double (strict JSON refuses it, Polars not)
_JSON_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]{1,2})?"
_JSON_DECIMAL_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?"


class FieldKind(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    DECIMAL = "decimal"
    FLOAT = "float"
    BOOLEAN = "boolean"
    DATE = "date"
    TIMESTAMP = "timestamp"  # ISO-8601 UTC text on the wire, a UTC timestamp in the warehouse
    STRING_LIST = "string_list"  # JSON array of strings; stored as JSON text
    JSON_OBJECT = "json_object"  # JSON object; JSONB on PostgreSQL, JSON text on SQLite


def json_object(**field_options: Any) -> Any:
    """A Pandera field holding a JSON object (annotate it `str`): `attributes: str = json_object()`."""
    return _pa_field(metadata={"kind": JSON_OBJECT_KIND}, **field_options)


def _pa_field(**options: Any) -> Any:
    import pandera.polars as pa
    return pa.Field(**options)


def parse_utc(column: str | pl.Expr) -> pl.Expr:
    """Parse ISO-8601 UTC text to Datetime(us, UTC); null where it is not a real UTC instant."""
    text = (pl.col(column) if isinstance(column, str) else column)
    text = text.str.to_uppercase().str.replace(" ", "T", literal=True)
    formats = ("%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%z")
    # three exact formats beat one regex rewrite by ~2x on a million rows
    parsed = pl.coalesce([
        text.str.to_datetime(format=f, time_unit="us", time_zone="UTC", strict=False) for f in formats
    ])
    return pl.when(text.str.contains(ISO_UTC_PATTERN)).then(parsed)


class ExactDecimal(TypeDecorator[Decimal]):
    """A decimal SQLite keeps exactly: its text (SQLite's NUMERIC would turn 0.10 into a float)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value)


class _DecimalLiteral(str):
    """A JSON number's text, as json.loads hands it to parse_float: kept, never made a float."""


def _pytype(value: Any) -> str:
    return "null" if value is None else type(value).__name__


@dataclass(frozen=True)
class Kind:
    """Everything the factory does with one kind of field value."""

    kind: FieldKind
    expected: str  # what a wrong-type message says was expected
    raw_dtype: pl.DataType  # the reader's column: the delivered value, before parsing
    # a JSON value of this kind Polars decodes exactly (null included); None: lines carrying one
    # (not null) take the exact per-line path
    wire_value: str | None
    accepts: Callable[[Any], bool]  # the exact path's wire check of a (non-null) Python value
    to_raw: Callable[[Any], Any] = lambda value: value  # an accepted Python value as the reader's column holds it
    from_cell: Callable[[str], Any] = lambda cell: cell  # a CSV cell as the wire value it spells
    parse_error: str = ""  # a raw value that does not parse: "<field>: <this>"
    number_text: bool = False  # the value is a JSON number's text as written (read from the line, not a float)
    orderable: bool = False  # may order events (SQL compares it as the value orders)

    def empty_cell(self, nullable: bool) -> Any:
        """An empty CSV cell: null where the contract allows it; '' for a required string, [] for a list."""
        if nullable:
            return None
        return {FieldKind.STRING: "", FieldKind.STRING_LIST: []}.get(self.kind)

    def rule_errors(self, name: str, raw: pl.Expr) -> list[pl.Expr]:
        """What every value of the kind must be, whatever the model says: text without NUL (no database
        text holds it), lists without nulls. Each expression is the record's error, or null."""
        if self.kind is FieldKind.STRING:
            return [pl.when(raw.str.contains("\x00", literal=True)).then(pl.lit(f"{name}: no_nul_characters"))]
        if self.kind is FieldKind.STRING_LIST:
            return [
                pl.when(raw.list.eval(pl.element().str.contains("\x00", literal=True)).list.any())
                .then(pl.lit(f"{name}: no_nul_characters")),
                pl.when(raw.list.eval(pl.element().is_null()).list.any()).then(pl.lit(f"{name}: no_null_items")),
            ]
        if self.kind is FieldKind.JSON_OBJECT:
            return [pl.when(raw.str.contains(_ESCAPED_NUL)).then(pl.lit(f"{name}: no_nul_characters"))]
        return []

    def parse(self, raw: pl.Expr, typed: pl.DataType) -> pl.Expr:
        """Raw column -> typed column; null where the raw value is no valid value of the kind."""
        if self.kind is FieldKind.TIMESTAMP:
            return parse_utc(raw)
        if self.kind is FieldKind.DATE:
            return pl.when(raw.str.contains(DATE_PATTERN)).then(raw.str.to_date("%Y-%m-%d", strict=False))
        if self.kind is FieldKind.DECIMAL:
            assert isinstance(typed, pl.Decimal)
            return _parse_decimal(raw, typed)
        return raw

    def parse_message(self, typed: pl.DataType) -> str:
        """What a value that does not parse is not ("" for kinds whose wire check says it all)."""
        if self.kind is FieldKind.DECIMAL and isinstance(typed, pl.Decimal):
            scale = typed.scale or 0
            return (f"not a plain decimal with at most {(typed.precision or 38) - scale} digits before the point "
                    f"and {scale} after")
        return self.parse_error

    def canonical(self, typed: pl.Expr) -> pl.Expr:
        """The value as the content hash sees it (equal content, equal text, whatever path it took)."""
        if self.kind is FieldKind.TIMESTAMP:
            return typed.dt.strftime(CANONICAL_TS)
        if self.kind in (FieldKind.DECIMAL, FieldKind.DATE):
            return typed.cast(pl.String)
        return typed

    def sql_type(self, typed: pl.DataType) -> TypeEngine[Any]:
        if self.kind is FieldKind.DECIMAL:
            assert isinstance(typed, pl.Decimal)
            return ExactDecimal().with_variant(Numeric(typed.precision, typed.scale), "postgresql")
        return _SQL_TYPES[self.kind]

    def sql_text(self, typed: pl.Expr, postgres: bool) -> pl.Expr:
        """The value as COPY (PostgreSQL) or a bound parameter (SQLite) takes it."""
        if self.kind is FieldKind.TIMESTAMP:
            return typed.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%d %H:%M:%S.%6f" + ("+00" if postgres else ""))
        if self.kind in (FieldKind.DECIMAL, FieldKind.DATE):
            return typed.cast(pl.String)
        if self.kind is FieldKind.STRING_LIST:
            return _list_json(typed)
        return typed

    def python_value(self, value: Any) -> Any:
        """A value read from any store (SQL row, Parquet, JSON) in one comparable form."""
        if value is None:
            return None
        if self.kind is FieldKind.TIMESTAMP and isinstance(value, datetime):
            return (value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value).isoformat()
        if self.kind is FieldKind.DATE:
            return value.isoformat() if isinstance(value, date) else str(value)
        if self.kind is FieldKind.DECIMAL:
            return Decimal(str(value)).normalize()
        if self.kind is FieldKind.BOOLEAN:
            return bool(value)
        if self.kind is FieldKind.FLOAT:
            return float(value)
        if self.kind in (FieldKind.STRING_LIST, FieldKind.JSON_OBJECT) and isinstance(value, str):
            return json.loads(value)
        if self.kind is FieldKind.STRING_LIST:
            return list(value)
        return value


def _list_json(column: pl.Expr) -> pl.Expr:
    name = "v"
    return (pl.struct(column.alias(name)).struct.json_encode()
            .str.strip_prefix(f'{{"{name}":').str.strip_suffix("}"))


def _parse_decimal(raw: pl.Expr, typed: pl.Decimal) -> pl.Expr:
    """Plain decimal text that fits (precision, scale) exactly -> Decimal; anything else -> null."""
    scale, precision = typed.scale or 0, typed.precision or 38
    whole = raw.str.extract(r"^-?([0-9]+)", 1).str.strip_chars_start("0")
    fraction = raw.str.extract(r"\.([0-9]+)$", 1).fill_null("").str.strip_chars_end("0")
    fits = (raw.str.contains(DECIMAL_PATTERN) & (fraction.str.len_chars() <= scale)
            & (whole.str.len_chars() <= precision - scale))
    return pl.when(fits).then(raw.cast(pl.Decimal(precision, scale), strict=False))


def _is_int64(value: Any) -> bool:
    return type(value) is int and -2**63 <= value < 2**63


def _is_string_list(value: Any) -> bool:
    return type(value) is list and all(type(x) is str or x is None for x in value)


def _cell_json(cell: str) -> Any:
    from tasks.strict_json import loads_strict  # the one JSON rule; imported late (tasks imports schemas)
    try:
        return loads_strict(cell)
    except ValueError:
        return cell  # reported as a wrong type of that field


def _cell_number(pattern: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    compiled = re.compile(pattern)
    return lambda cell: convert(cell) if compiled.fullmatch(cell) else cell


def _object_text(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)


_SQL_TYPES: dict[FieldKind, TypeEngine[Any]] = {
    FieldKind.STRING: Text(),
    FieldKind.INTEGER: BigInteger(),
    FieldKind.FLOAT: Double(),
    FieldKind.BOOLEAN: Boolean(),
    FieldKind.DATE: Date(),
    FieldKind.TIMESTAMP: DateTime(timezone=True),
    FieldKind.STRING_LIST: Text(),
    FieldKind.JSON_OBJECT: Text().with_variant(JSONB(), "postgresql"),
}

_STRING_OR_NULL = rf"(?:{_JSON_STRING}|null)"

KINDS: dict[FieldKind, Kind] = {k.kind: k for k in (
    Kind(FieldKind.STRING, "string", pl.String(), _STRING_OR_NULL, lambda v: type(v) is str, orderable=True),
    Kind(FieldKind.INTEGER, "integer", pl.Int64(), rf"(?:{_JSON_INTEGER}|null)", _is_int64,
         from_cell=_cell_number(_JSON_INTEGER, int), parse_error="not a 64-bit integer", orderable=True),
    Kind(FieldKind.DECIMAL, "decimal", pl.String(), rf"(?:{_JSON_DECIMAL_NUMBER}|{_JSON_STRING}|null)",
         lambda v: type(v) in (int, str, _DecimalLiteral, Decimal),
         to_raw=lambda v: str(v), parse_error="not a plain decimal that fits the declared precision and scale",
         number_text=True),
    Kind(FieldKind.FLOAT, "number", pl.Float64(), rf"(?:{_JSON_NUMBER}|null)",
         lambda v: type(v) in (int, float, _DecimalLiteral, Decimal), to_raw=float,
         from_cell=_cell_number(_JSON_NUMBER, float)),
    Kind(FieldKind.BOOLEAN, "boolean", pl.Boolean(), r"(?:true|false|null)", lambda v: type(v) is bool,
         from_cell=lambda cell: {"true": True, "false": False}.get(cell, cell)),
    Kind(FieldKind.DATE, "date", pl.String(), _STRING_OR_NULL, lambda v: type(v) is str,
         parse_error="not a date (YYYY-MM-DD)", orderable=True),
    Kind(FieldKind.TIMESTAMP, "timestamp", pl.String(), _STRING_OR_NULL, lambda v: type(v) is str,
         parse_error="not an ISO-8601 UTC timestamp", orderable=True),
    Kind(FieldKind.STRING_LIST, "list of strings", pl.List(pl.String()),
         rf"(?:null|\[\s*(?:{_STRING_OR_NULL}\s*(?:,\s*{_STRING_OR_NULL}\s*)*)?\])", _is_string_list,
         from_cell=lambda cell: _cell_json(cell) if cell else []),
    Kind(FieldKind.JSON_OBJECT, "object", pl.String(), None, lambda v: type(v) is dict,
         to_raw=_object_text, from_cell=lambda cell: _cell_json(cell) if cell else None),
)}


def kind_of(dtype: pl.DataType, metadata: dict[str, Any] | None = None) -> FieldKind:
    """The kind a model annotation declares; TypeError for one the factory does not handle."""
    if (metadata or {}).get("kind") == JSON_OBJECT_KIND:
        if dtype != pl.String:
            raise TypeError("a JSON object field is annotated `str`")
        return FieldKind.JSON_OBJECT
    if dtype == pl.String:
        return FieldKind.STRING
    if dtype == pl.Int64:
        return FieldKind.INTEGER
    if isinstance(dtype, pl.Decimal):
        return FieldKind.DECIMAL
    if dtype == pl.Float64:
        return FieldKind.FLOAT
    if dtype == pl.Boolean:
        return FieldKind.BOOLEAN
    if dtype == pl.Date:
        return FieldKind.DATE
    if isinstance(dtype, pl.Datetime) and dtype.time_zone == "UTC" and dtype.time_unit == "us":
        return FieldKind.TIMESTAMP
    if dtype == pl.List(pl.String):
        return FieldKind.STRING_LIST
    raise TypeError(f"{dtype} is no field kind of the factory (string, int, pl.Decimal(p, s), float, bool, "
                    "date, pl.Datetime('us', 'UTC'), pl.List(pl.String), str with json_object())")


def decimal_literal_parser(text: str) -> Any:
    """parse_float for json.loads: a JSON number with a fraction or exponent, kept as its text."""
    return _DecimalLiteral(text)
