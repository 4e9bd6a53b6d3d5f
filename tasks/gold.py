"""A mart's gold table in the warehouse: its columns' types from the DuckDB types of the model's SELECT."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Date, DateTime, Float, Index, MetaData, Numeric, Table, Text
from sqlalchemy.types import TypeEngine

from schemas.mart_models import MartModel
from tasks.errors import InputError


def gold_type(duckdb_type: str, model: MartModel, column: str) -> TypeEngine:
    """A mart column's warehouse type (decimals exact: text on SQLite, as the datasets keep them)."""
    kind = duckdb_type.upper()
    if kind.startswith("DECIMAL"):
        precision, scale = (int(x) for x in kind[8:-1].split(","))
        return Numeric(precision, scale, asdecimal=True).with_variant(Text(), "sqlite")
    simple: dict[str, TypeEngine] = {
        "BIGINT": BigInteger(), "INTEGER": BigInteger(), "SMALLINT": BigInteger(), "TINYINT": BigInteger(),
        "UBIGINT": Numeric(20, 0), "UINTEGER": BigInteger(), "HUGEINT": Numeric(38, 0),
        "DOUBLE": Float(), "FLOAT": Float(), "VARCHAR": Text(), "BOOLEAN": Boolean(), "DATE": Date(),
        "TIMESTAMP WITH TIME ZONE": DateTime(timezone=True), "TIMESTAMP": DateTime(),
    }
    if kind not in simple:
        raise InputError(model.path, None, column, f"a mart column of type {duckdb_type} has no warehouse type "
                         "(cast it to VARCHAR, DOUBLE, DECIMAL, BIGINT, BOOLEAN, DATE or TIMESTAMPTZ)")
    return simple[kind]


def gold_table(model: MartModel) -> Table:
    metadata = MetaData()
    return Table(model.name, metadata,
                 *(Column(name, gold_type(kind, model, name)) for name, kind in model.columns.items()),
                 Index(f"ix_{model.name}_{model.grain}"[:63], model.grain))
