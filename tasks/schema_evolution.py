"""Dataset tables evolve with their contract, like dlt's schema evolution.

Before every write the contract the code declares (schemas/datasets/) is compared with the one the
warehouse's tables hold (`dataset_contract`; for tables release 0.1 made, what the silver table's columns
say). Additive changes are applied by the run itself, in its transaction: a new nullable field is one
`ALTER TABLE ... ADD COLUMN` (existing silver rows keep null until `datafactory backfill ... --all
--reason schema_change` rebuilds them from bronze's payloads); a field that may now be null drops its
NOT NULL. Every other change (a field removed, a kind changed, a new required field, a field that may no
longer be null) is refused in one line naming the field, until an operator runs `datafactory schema
apply --dataset D --allow-destructive`, which rebuilds silver from bronze under the new contract (and
refuses, naming an entity, when a current event cannot fill a required column). Changes to the event
key, the entity key or the ordering column are refused outright: that is another dataset.

Every applied change is one `schema_change` row and one `decision_log` row; bronze's content hashes
(and the redelivery copies') are recomputed under the new contract, since the contract defines what makes
two deliveries of an event the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    Table,
    delete,
    insert,
    inspect,
    select,
    text,
    true,
    update,
)
from sqlalchemy.schema import CreateTable, DropTable
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext

from schemas.datasets import DatasetSpec, contract_fingerprint, describe_fields
from schemas.tables import (
    LINEAGE_COLUMNS,
    bronze_table,
    dataset_contract,
    dataset_tables,
    decision_log,
    redelivery,
    schema_change,
    silver_table,
)
from tasks.errors import SchemaMismatchError
from tasks.sql import drop_temp
from tasks.silver import REBUILD_CHUNK, winners_from_bronze
from tasks.staging import bulk_load, stage, stage_keys
from tasks.validate import typed_events, typed_from_payloads

ADDED, REMOVED, KIND_CHANGED = "added", "removed", "kind_changed"
NOW_REQUIRED, NOW_NULLABLE = "now_required", "now_nullable"
UNRECORDED = "unrecorded"  # a column release 0.1 made that the code no longer declares
SCHEMA_CHANGE_ACTION = "schema_change"


@dataclass(frozen=True)
class FieldChange:
    """One field's difference between the warehouse's contract and the code's."""

    field: str
    change: str
    before: str | None  # FieldSpec.describe(): "decimal(12,2) null", "string"
    after: str | None

    @property
    def additive(self) -> bool:
        """Applied by the next run: nothing existing is lost or narrowed."""
        return self.change == NOW_NULLABLE or (self.change == ADDED and _nullable(self.after))

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "change": self.change, "before": self.before, "after": self.after,
                "additive": self.additive}

    def __str__(self) -> str:
        if self.change == ADDED:
            return f"{self.field!r} added ({self.after})"
        if self.change == REMOVED:
            return f"{self.field!r} removed (was {self.before})"
        return f"{self.field!r} {self.before} -> {self.after}"


def _nullable(described: str | None) -> bool:
    return described is not None and described.endswith(" null")


def _kind(described: str | None) -> str:
    return (described or "").removesuffix(" null")


# --- what the warehouse holds -------------------------------------------------------------------

def applied_contract(conn: Connection, spec: DatasetSpec) -> dict[str, str] | None:
    """field -> kind the dataset's tables hold; None when they do not exist yet."""
    row = conn.execute(select(dataset_contract.c.fields).where(dataset_contract.c.dataset == spec.name)).first()
    if row is not None:
        return dict(json.loads(row.fields))
    if not conn.dialect.has_table(conn, spec.silver_table):
        return None
    # tables release 0.1 made: its silver columns are the contract it applied (kinds are the code's then)
    columns = {c["name"]: bool(c["nullable"]) for c in inspect(conn).get_columns(spec.silver_table)}
    code = describe_fields(spec)
    held: dict[str, str] = {}
    for f in spec.fields:
        column = spec.silver_name(f.name)
        if column in columns:
            held[f.name] = _kind(code[f.name]) + (" null" if columns[column] else "")
    for column, nullable in columns.items():
        if column not in LINEAGE_COLUMNS and column not in {spec.silver_name(f.name) for f in spec.fields}:
            held[column] = UNRECORDED + (" null" if nullable else "")
    return held


def planned_changes(held: dict[str, str], spec: DatasetSpec) -> list[FieldChange]:
    """What it takes to bring the tables from `held` to the code's contract, in the model's field order."""
    code = describe_fields(spec)
    changes = []
    for name, after in code.items():
        before = held.get(name)
        if before is None:
            changes.append(FieldChange(name, ADDED, None, after))
        elif _kind(before) != _kind(after):
            changes.append(FieldChange(name, KIND_CHANGED, before, after))
        elif _nullable(before) != _nullable(after):
            changes.append(FieldChange(name, NOW_NULLABLE if _nullable(after) else NOW_REQUIRED, before, after))
    changes += [FieldChange(name, REMOVED, before, None) for name, before in held.items() if name not in code]
    return changes


def pending_changes(conn: Connection, spec: DatasetSpec) -> list[FieldChange]:
    held = applied_contract(conn, spec)
    return [] if held is None else planned_changes(held, spec)


# --- applying ------------------------------------------------------------------------------------

def evolve(conn: Connection, spec: DatasetSpec, now: datetime, operator: str, run_id: str | None = None,
           allow_destructive: bool = False) -> list[FieldChange]:
    """Bring the dataset's tables to the code's contract in the caller's transaction; the changes applied.

    SchemaMismatchError (nothing changed) for a change that needs `allow_destructive`, or one never allowed."""
    held = applied_contract(conn, spec)
    if held is None:  # a dataset new to this warehouse: its tables are created from this contract
        for table in dataset_tables(spec):
            table.create(conn, checkfirst=True)
        _record_contract(conn, spec, now)
        return []
    changes = planned_changes(held, spec)
    if not changes:
        if conn.execute(select(dataset_contract.c.dataset).where(dataset_contract.c.dataset == spec.name)).first() is None:
            _record_contract(conn, spec, now)  # release 0.1's tables, recorded as they are
        return []
    keys = {spec.event_key, spec.entity_key, spec.ordering_column}
    for change in changes:
        if change.field in keys:
            raise SchemaMismatchError(
                f"{spec.name}: field {change} is the event key, entity key or ordering column: existing tables "
                "cannot follow that change; declare a new dataset (another name and tables) instead")
    refused = [c for c in changes if not c.additive]
    if refused and not allow_destructive:
        first = refused[0]
        raise SchemaMismatchError(
            f"{spec.name}: field {first} is not an additive change ({len(refused)} such change(s)); nothing was "
            f"written: run `datafactory schema apply --dataset {spec.name} --allow-destructive` (silver is rebuilt "
            "from bronze) or make the change additive (a new field nullable)")
    table = silver_table(spec)
    rebuild = bool(refused) or (
        any(c.change == NOW_NULLABLE for c in changes) and conn.dialect.name == "sqlite")
    if rebuild:
        how = rebuild_silver_table(conn, spec, now)
    else:
        how = _alter_in_place(conn, spec, table, changes)
    rehash(conn, spec, now)
    _record_contract(conn, spec, now)
    old, new = contract_fingerprint(held), spec.contract_fingerprint
    for change in changes:
        conn.execute(insert(schema_change).values(
            dataset=spec.name, field=change.field, change=change.change, before=change.before, after=change.after,
            from_fingerprint=old, to_fingerprint=new, how=how, run_id=run_id, operator=operator, applied_at=now))
        conn.execute(insert(decision_log).values(
            decided_at=now, action=SCHEMA_CHANGE_ACTION, reason_code="schema_change", operator=operator,
            dataset=spec.name, partition_key="*", run_id=run_id, outcome="applied",
            detail=f"{change} ({how})"))
    return changes


EVOLUTION_LOCK_BASE = 0x0DF5C4E40  # + a dataset's hash: one change of a dataset's tables at a time


def evolve_tables(engine: Engine, spec: DatasetSpec, now: datetime, operator: str,
                  run_id: str | None = None) -> list[FieldChange]:
    """`evolve` in a transaction of its own, one process at a time per dataset: runs of several partitions
    starting at once apply an additive change once (the others then find the tables up to date); the
    change stays applied whatever becomes of the run."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            key = EVOLUTION_LOCK_BASE + int(hashlib.sha256(spec.name.encode()).hexdigest()[:8], 16)
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        return evolve(conn, spec, now, operator, run_id)


def _alter_in_place(conn: Connection, spec: DatasetSpec, table: Table, changes: list[FieldChange]) -> str:
    """Additive changes as DDL the dialect writes (Alembic's operations: quoting, types, SQLite's limits)."""
    operations = Operations(MigrationContext.configure(conn))
    done = []
    for change in changes:
        column = table.c[spec.silver_name(change.field)]
        if change.change == ADDED:
            operations.add_column(spec.silver_table, column._copy())
            done.append(f"ADD COLUMN {column.name}")
        else:  # NOW_NULLABLE on PostgreSQL
            operations.alter_column(spec.silver_table, column.name, nullable=True)
            done.append(f"ALTER COLUMN {column.name} DROP NOT NULL")
    return f"ALTER TABLE {spec.silver_table} " + ", ".join(done)


def rebuild_silver_table(conn: Connection, spec: DatasetSpec, now: datetime) -> str:
    """Drop silver and create it from the code's contract, then fill it from bronze: each entity's greatest
    event, typed anew. Refuses (rolling back) when a current event cannot fill a required column."""
    table = silver_table(spec)
    conn.execute(DropTable(Table(spec.silver_table, MetaData())))  # as it is, whatever its columns
    conn.execute(CreateTable(table))
    entities = 0
    for keys in _entity_chunks(conn, spec):
        rows = winners_from_bronze(conn, spec, keys)
        _refuse_unfit(spec, rows)
        bulk_load(conn, table, rows.drop("_type_errors"))
        entities += rows.height
    return f"silver rebuilt from bronze ({entities} entities)"


def rebuild_silver(conn: Connection, spec: DatasetSpec, now: datetime, operator: str) -> str:
    """`schema apply --rebuild`: every silver row recomputed from bronze under the code's contract, and
    the decision logged."""
    how = rebuild_silver_table(conn, spec, now)
    conn.execute(insert(decision_log).values(
        decided_at=now, action=SCHEMA_CHANGE_ACTION, reason_code="schema_change", operator=operator,
        dataset=spec.name, partition_key="*", outcome="applied", detail=how))
    return how


def rebuild_entities(conn: Connection, spec: DatasetSpec, keys: list[str]) -> None:
    """Silver rows of these entities recomputed from bronze (the rows of `backfill --reason schema_change`)."""
    table = silver_table(spec)
    for offset in range(0, len(keys), REBUILD_CHUNK):
        chunk = keys[offset: offset + REBUILD_CHUNK]
        rows = winners_from_bronze(conn, spec, chunk)
        _refuse_unfit(spec, rows)
        conn.execute(delete(table).where(table.c[spec.entity_key].in_(chunk)))
        if rows.height:
            bulk_load(conn, table, rows.drop("_type_errors"))


def _refuse_unfit(spec: DatasetSpec, rows: pl.DataFrame) -> None:
    required = [spec.silver_name(f.name) for f in spec.fields if not f.nullable]
    unfit = rows.filter(pl.col("_type_errors").is_not_null() | pl.any_horizontal(pl.col(required).is_null()))
    if unfit.height:
        first = unfit.row(0, named=True)
        why = first["_type_errors"] or "required: " + ", ".join(c for c in required if first[c] is None)
        raise SchemaMismatchError(
            f"{spec.name}: {unfit.height} entities' current events do not fit the new contract (first: "
            f"{first[spec.entity_key]}: {why}); nothing was changed: re-deliver them, or make the change additive")


def rehash(conn: Connection, spec: DatasetSpec, now: datetime) -> None:
    """Bronze's and the redelivery copies' content hashes under the code's contract (what makes two
    deliveries of an event the same is the contract's fields), then conflicts derived again."""
    from tasks.warehouse import derive_conflicts

    bronze = bronze_table(spec)
    for table, key, payload, hashed, where in (
            (bronze, spec.event_key, "_raw_payload", "_content_hash", true()),
            (redelivery, "id", "raw_payload", "content_hash", redelivery.c.dataset == spec.name)):
        last: Any = None
        while True:
            query = select(table.c[key], table.c[payload]).where(where).order_by(table.c[key]).limit(REBUILD_CHUNK)
            batch = conn.execute(query if last is None else query.where(table.c[key] > last)).all()
            if not batch:
                break
            hashes = typed_events(spec, typed_from_payloads(spec, [r[1] for r in batch]))["_content_hash"]
            keys = pl.Series(key, [r[0] for r in batch], dtype=pl.Int64 if key == "id" else pl.String)
            staged = stage(conn, "_stg_rehash", table, pl.DataFrame([keys, hashes.alias(hashed)]))
            conn.execute(update(table).where(table.c[key] == staged.c[key]).values({hashed: staged.c[hashed]}))
            last = batch[-1][0]
    drop_temp(conn, "_stg_rehash")
    copies: list[str] = list(conn.execute(select(redelivery.c.event_id).distinct()
                                          .where(redelivery.c.dataset == spec.name)).scalars().all())
    keys_table = stage_keys(conn, "_stg_conflicts", copies)
    derive_conflicts(conn, spec, keys_table, now)
    drop_temp(conn, keys_table.name)


def _record_contract(conn: Connection, spec: DatasetSpec, now: datetime) -> None:
    fields = json.dumps(describe_fields(spec))
    found = conn.execute(update(dataset_contract).where(dataset_contract.c.dataset == spec.name).values(
        fingerprint=spec.contract_fingerprint, fields=fields, applied_at=now)).rowcount
    if not found:
        conn.execute(insert(dataset_contract).values(dataset=spec.name, fingerprint=spec.contract_fingerprint,
                                                     fields=fields, applied_at=now))


def _entity_chunks(conn: Connection, spec: DatasetSpec) -> Iterator[list[str]]:
    bronze = bronze_table(spec)
    entity = bronze.c[spec.entity_key]
    last = None
    while True:
        query = select(entity).distinct().order_by(entity).limit(REBUILD_CHUNK)
        keys: list[str] = list(conn.execute(query if last is None else query.where(entity > last)).scalars().all())
        if not keys:
            return
        yield keys
        last = keys[-1]
