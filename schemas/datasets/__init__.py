"""The dataset registry: every module of this package that defines `DATASET` is a dataset.

A dataset is declared once, in one module (`schemas/datasets/tickets.py` is the example): a Pandera
model, the single source of field names, kinds (schemas/kinds.py), nullability and rules, and beside
it a `DatasetSpec` naming its keys, ordering, tables and checks. Everything else (the reader's raw
types, parsing, SQL tables, COPY text, the lake's Parquet schema, the contract fingerprint, the CLI's
dataset choices) is derived from it. Adding a dataset is adding a module; no list is edited.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

import pandera.polars as pa
import polars as pl

from schemas.checks import DEFAULT_CHECKS, CheckSpec
from schemas.kinds import KINDS, FieldKind, Kind, kind_of
from schemas.sources import PulledSource

__all__ = ["DATASETS", "DatasetSpec", "FieldKind", "FieldSpec", "SyntheticData", "UnknownDatasetError", "get_dataset"]


@dataclass(frozen=True)
class FieldSpec:
    """One field, as the model declares it."""

    name: str
    kind: FieldKind
    nullable: bool
    dtype: pl.DataType  # the typed Polars dtype (Decimal carries its precision and scale)

    @property
    def rules(self) -> Kind:
        return KINDS[self.kind]

    @property
    def raw_dtype(self) -> pl.DataType:
        return self.rules.raw_dtype

    def describe(self) -> str:
        """The field's kind as the contract fingerprint and schema-change log name it."""
        kind = f"decimal({self.dtype.precision},{self.dtype.scale})" if isinstance(self.dtype, pl.Decimal) else self.kind.value
        return f"{kind}{' null' if self.nullable else ''}"


@dataclass(frozen=True)
class SyntheticData:
    """How `datafactory generate` makes deliveries of a dataset (benchmarks, demos): valid events, and the
    two defects only the dataset knows how to make (a contract violation, other content for an event)."""

    events: Callable[[date, int, int, int], Iterable[dict[str, Any]]]  # (day, count, entities, seed)
    violate: Callable[[dict[str, Any]], dict[str, Any]]
    edit: Callable[[dict[str, Any]], dict[str, Any]]


class DatasetDefinitionError(TypeError):
    """A dataset module that cannot work (unknown kind, a key the model lacks): fails at import, named."""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its contract (the model) and what the factory needs beside it."""

    name: str
    model: type[pa.DataFrameModel]
    event_key: str  # bronze idempotency key
    entity_key: str  # silver upsert key
    ordering_column: str  # newer wins by (ordering_column, event_key)
    partition_column: str  # the event time judged against the partition window
    bronze_table: str
    silver_table: str
    # bronze column -> silver column, for columns whose meaning changes in silver
    silver_renames: dict[str, str] = field(default_factory=dict)
    # checks run after every materialization, with their warn and error limits (schemas/checks.py)
    checks: tuple[CheckSpec, ...] = DEFAULT_CHECKS
    # the manifests' schema_version values this contract reads; another is refused
    schema_versions: tuple[str, ...] = ("1",)
    synthetic: SyntheticData | None = None  # what `datafactory generate --dataset NAME` writes
    # None: delivered files with manifests; else pulled behind a cursor (schemas/sources.py, flows/pull.py)
    source: PulledSource | None = None

    def __post_init__(self) -> None:
        names = set(self.field_names)
        for role in ("event_key", "entity_key", "ordering_column", "partition_column"):
            if getattr(self, role) not in names:
                raise DatasetDefinitionError(f"dataset {self.name}: {role} {getattr(self, role)!r} is no field of "
                                             f"{self.model.__name__}")
        for key in (self.event_key, self.entity_key):
            if self.field(key).kind is not FieldKind.STRING or self.field(key).nullable:
                raise DatasetDefinitionError(f"dataset {self.name}: key {key!r} must be a required `str` field")
        if not self.field(self.ordering_column).rules.orderable or self.field(self.ordering_column).nullable:
            raise DatasetDefinitionError(f"dataset {self.name}: ordering column {self.ordering_column!r} must be a "
                                         "required string, integer, date or timestamp")
        if self.field(self.partition_column).kind is not FieldKind.TIMESTAMP:
            raise DatasetDefinitionError(f"dataset {self.name}: partition column {self.partition_column!r} must "
                                         "be a timestamp")
        if self.source is not None:
            self._check_source(self.source, names)

    def _check_source(self, source: PulledSource, names: set[str]) -> None:
        for role in ("cursor_field", "key_field"):
            name = getattr(source, role)
            if name not in names or self.field(name).nullable:
                raise DatasetDefinitionError(f"dataset {self.name}: source {role} {name!r} must be a required field")
        if self.field(source.cursor_field).kind is not FieldKind.TIMESTAMP:
            raise DatasetDefinitionError(f"dataset {self.name}: source cursor_field {source.cursor_field!r} must be "
                                         "a timestamp")
        if unknown := [n for n in source.event_key_from if n not in names]:
            raise DatasetDefinitionError(f"dataset {self.name}: source event_key_from names no field {unknown[0]!r}")
        if source.page_size < 1 or source.lookback.total_seconds() < 0 or source.settle.total_seconds() < 0:
            raise DatasetDefinitionError(f"dataset {self.name}: source page_size must be >= 1, lookback and settle >= 0")

    @property
    def pulled(self) -> bool:
        return self.source is not None

    @cached_property
    def fields(self) -> tuple[FieldSpec, ...]:
        """The model's columns, in its order: name, kind, nullability."""
        try:
            columns = self.model.to_schema().columns
        except Exception as exc:  # a model Pandera cannot build is a broken declaration
            raise DatasetDefinitionError(f"dataset {self.name}: {self.model.__name__}: {exc}") from None
        specs = []
        for name, column in columns.items():
            dtype = column.dtype.type  # type: ignore[union-attr]
            try:
                kind = kind_of(dtype, column.metadata)
            except TypeError as exc:
                raise DatasetDefinitionError(f"dataset {self.name}: field {name!r}: {exc}") from None
            specs.append(FieldSpec(name, kind, bool(column.nullable), dtype))
        return tuple(specs)

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.fields if f.name == name)

    @property
    def bronze_fields(self) -> list[FieldSpec]:
        """Typed columns bronze keeps beside the raw payload: just what keys and ordering need."""
        wanted = {self.event_key, self.entity_key, self.ordering_column}
        return [f for f in self.fields if f.name in wanted]

    def silver_name(self, bronze_column: str) -> str:
        return self.silver_renames.get(bronze_column, bronze_column)

    @property
    def required_silver_columns(self) -> list[str]:
        return [self.silver_name(f.name) for f in self.fields if not f.nullable]

    @property
    def raw_schema(self) -> dict[str, pl.DataType]:
        """The reader's columns: each field as delivered, before parsing."""
        return {f.name: f.raw_dtype for f in self.fields}

    @property
    def typed_schema(self) -> dict[str, pl.DataType]:
        return {f.name: f.dtype for f in self.fields}

    @cached_property
    def contract_fingerprint(self) -> str:
        """The fields as the warehouse holds them (name, kind, nullability): changes when a table must."""
        return contract_fingerprint(describe_fields(self))


def contract_fingerprint(fields: dict[str, str]) -> str:
    """The fingerprint of a contract as FieldSpec.describe() names its fields (the code's, or the one the
    warehouse's tables hold): equal exactly when the tables would be."""
    return hashlib.sha256(json.dumps([[name, kind] for name, kind in fields.items()]).encode()).hexdigest()[:16]


def _discover() -> dict[str, DatasetSpec]:
    found: dict[str, DatasetSpec] = {}
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        spec = getattr(importlib.import_module(f"{__name__}.{module.name}"), "DATASET", None)
        if spec is None:
            continue
        if not isinstance(spec, DatasetSpec):
            raise DatasetDefinitionError(f"schemas/datasets/{module.name}.py: DATASET is no DatasetSpec")
        if spec.name in found:
            raise DatasetDefinitionError(f"schemas/datasets/{module.name}.py: dataset {spec.name!r} is declared twice")
        spec.fields  # noqa: B018  derive (and check) the fields at import, not mid-run
        found[spec.name] = spec
    return found


DATASETS: dict[str, DatasetSpec] = _discover()


class UnknownDatasetError(KeyError):
    pass


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise UnknownDatasetError(f"unknown dataset {name!r} (known: {known})") from None


def dataset_names() -> list[str]:
    return sorted(DATASETS)


def describe_fields(spec: DatasetSpec) -> dict[str, Any]:
    """{field: kind} as evidence and the schema-change log show it."""
    return {f.name: f.describe() for f in spec.fields}
