"""Silver: per entity, the greatest accepted event by (ordering column, event key), newer wins only."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Table,
    and_,
    case,
    delete,
    exists,
    func,
    literal,
    select,
    true,
    tuple_,
)
from sqlalchemy.exc import IntegrityError

from schemas.datasets import DatasetSpec
from schemas.tables import bronze_table, silver_table
from tasks.dedup import take
from tasks.errors import TransientError
from tasks.ledger import RunIdentity
from tasks.merging import Merging
from tasks.processes import private_folder
from tasks.sql import drop_temp, insert_for
from tasks.staging import bulk_load, stage, stage_keys
from tasks.validate import typed_from_payloads


def silver_candidates(spec: DatasetSpec, events: pl.DataFrame, who: RunIdentity, now: datetime) -> pl.DataFrame:
    """Per entity, the batch's greatest event by (ordering column, event key), shaped as silver."""
    order = events.select(spec.entity_key, spec.ordering_column, spec.event_key).with_row_index("_i")
    picks = (order.sort([spec.ordering_column, spec.event_key], descending=True)
             .unique(subset=[spec.entity_key], keep="first", maintain_order=True)["_i"].sort())
    best = events[picks]  # gather only the winning rows, not a sorted copy of the whole batch
    return best.select(
        *[pl.col(f.name).alias(spec.silver_name(f.name)) for f in spec.fields],
        pl.lit(who.partition).alias("_partition_key"),
        pl.lit(who.batch_id).alias("_batch_id"),
        pl.col("_manifest_id"),
        pl.lit(now).dt.convert_time_zone("UTC").alias("_ingested_at"),
    )


SPILL_PREFIX = "datafactory-spill-"  # {temp}/datafactory-spill-{pid}-*: removed at the end, or by the next run


class SilverCandidates:
    """Per entity, the partition's greatest accepted event, gathered chunk by chunk.

    The first chunk's candidates stay in memory (a partition of one chunk never touches the disk);
    from the second chunk on, each chunk's candidates go to a spill file and memory keeps only the
    narrow (entity, ordering, event key, piece) of each entity's best so far. `pieces` then yields
    the winning rows one spilled piece at a time."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.entity, self.order, self.last = spec.entity_key, spec.ordering_column, spec.silver_name(spec.event_key)
        self._held: pl.DataFrame | None = None
        self._files: list[Path] = []
        self._folder: Path | None = None
        # entity, ordering, event key, _piece: each entity's greatest event so far, the silver guard's rule
        self._best: Merging[pl.DataFrame] = Merging(lambda frames: pl.concat(frames).sort(
            [self.order, self.last], descending=True, nulls_last=True).unique(self.entity, keep="first"))

    def add(self, candidates: pl.DataFrame) -> None:
        piece = len(self._files) + (self._held is not None)
        self._best.add(candidates.select(self.entity, self.order, self.last, pl.lit(piece, pl.Int32).alias("_piece")))
        if piece == 0:
            self._held = candidates
            return
        if self._held is not None:
            self._spill(self._held)
            self._held = None
        self._spill(candidates)

    @property
    def best(self) -> pl.DataFrame | None:
        """The narrow winner of every entity so far (entity, ordering, event key, piece)."""
        return self._best.value

    def _spill(self, frame: pl.DataFrame) -> None:
        if self._folder is None:
            self._folder = private_folder(SPILL_PREFIX)
        path = self._folder / f"piece-{len(self._files):05d}.arrow"
        frame.write_ipc(path, compression="lz4")
        self._files.append(path)

    @property
    def count(self) -> int:
        return 0 if self.best is None else self.best.height

    def pieces(self) -> Iterator[pl.DataFrame]:
        """The winning candidate rows, one piece at a time."""
        if self._held is not None:
            yield self._held
            return
        assert self.best is not None or not self._files
        for number, path in enumerate(self._files):
            winners = self.best.filter(pl.col("_piece") == number).select(self.entity)  # type: ignore[union-attr]
            yield pl.read_ipc(path).join(winners, on=self.entity, how="semi")

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> "SilverCandidates":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def newer(spec: DatasetSpec, new: FromClause | Any, old: FromClause) -> ColumnElement[bool]:
    """`new`'s event outranks `old`'s: (ordering column, event key) compared as a row, bytewise. `new` may
    be an upsert's `excluded` columns."""
    order, last = spec.ordering_column, spec.silver_name(spec.event_key)
    columns = new.c if isinstance(new, FromClause) else new
    return tuple_(columns[order], columns[last]) > tuple_(old.c[order], old.c[last])


SILVER_OUTCOMES = ("silver_inserted", "silver_updated", "silver_unchanged", "silver_stale_skipped")


def write_silver(conn: Connection, spec: DatasetSpec, candidates: SilverCandidates | pl.DataFrame) -> dict[str, int]:
    """Classify the partition's per-entity winners against silver, insert new entities, upsert the rest."""
    if isinstance(candidates, pl.DataFrame):
        held = SilverCandidates(spec)
        held.add(candidates)
        candidates = held
    entity, order, last = spec.entity_key, spec.ordering_column, spec.silver_name(spec.event_key)
    if candidates.best is None:
        return dict.fromkeys(SILVER_OUTCOMES, 0)
    table = silver_table(spec)
    staged = stage(conn, "_stg_silver", table, candidates.best.select(entity, order, last))
    counts = classify_silver(conn, spec, staged)
    known = pl.Series(conn.execute(
        select(staged.c[entity]).join(table, table.c[entity] == staged.c[entity])).scalars().all(), dtype=pl.String)
    for piece in candidates.pieces():
        is_new = ~piece[entity].is_in(known.implode())
        try:  # new entities go straight in; the key check above ran under the partition lock
            bulk_load(conn, table, take(piece, is_new))
        except IntegrityError as exc:
            raise TransientError(
                f"{spec.silver_table}: another partition's run created some of these entities first; retry resolves it"
            ) from exc
        if known.len() and not is_new.all():
            upsert_silver(conn, spec, stage(conn, "_stg_silver_rows", table, piece.filter(~is_new)))
    return counts


def classify_silver(conn: Connection, spec: DatasetSpec, staged: Table) -> dict[str, int]:
    """How each staged entity relates to current silver: new, newer, the same event, or older."""
    entity, order, last = spec.entity_key, spec.ordering_column, spec.silver_name(spec.event_key)
    current = silver_table(spec)
    present = current.c[entity].is_not(None)

    def count(condition: ColumnElement[bool]) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    row = conn.execute(select(
        count(current.c[entity].is_(None)),
        count(and_(present, newer(spec, staged, current))),
        count(and_(present, staged.c[order] == current.c[order], staged.c[last] == current.c[last])),
        count(and_(present, newer(spec, current, staged))),
    ).select_from(staged.outerjoin(current, current.c[entity] == staged.c[entity]))).one()
    return dict(zip(SILVER_OUTCOMES, [int(value) for value in row]))


def upsert_silver(conn: Connection, spec: DatasetSpec, staged: Table) -> None:
    """Newer wins by (ordering column, event key); an older or equal event never rewrites a row."""
    table = silver_table(spec)
    columns = [c.name for c in table.columns]
    # `WHERE true`: SQLite would read the ON of ON CONFLICT as a join of the SELECT without it
    insert = insert_for(conn, table).from_select(columns, select(*[staged.c[c] for c in columns]).where(true()))
    conn.execute(insert.on_conflict_do_update(
        index_elements=[table.c[spec.entity_key]],
        set_={c: insert.excluded[c] for c in columns if c != spec.entity_key},
        where=newer(spec, insert.excluded, table)))


REBUILD_CHUNK = 5_000  # entities rebuilt from bronze at a time


def rebuild_silver(conn: Connection, spec: DatasetSpec, entities: list[str], now: datetime) -> None:
    """Recompute silver rows of some entities from bronze: the greatest event of each, or no row."""
    if not entities:
        return
    table = silver_table(spec)
    for offset in range(0, len(entities), REBUILD_CHUNK):
        chunk = entities[offset: offset + REBUILD_CHUNK]
        conn.execute(delete(table).where(table.c[spec.entity_key].in_(chunk)))
        rows = winners_from_bronze(conn, spec, chunk)
        if rows.height:
            bulk_load(conn, table, rows.drop("_type_errors").with_columns(
                pl.lit(now).dt.convert_time_zone("UTC").alias("_ingested_at")))


def winners_from_bronze(conn: Connection, spec: DatasetSpec, keys: list[str]) -> pl.DataFrame:
    """Each of these entities' greatest bronze event, as silver rows under the code's contract (with the
    parse errors of each, `_type_errors`)."""
    touched = stage_keys(conn, "_stg_touched", keys)
    entity, order, key = spec.entity_key, spec.ordering_column, spec.event_key
    b = bronze_table(spec)
    n = b.alias("newer")
    outranked = exists(select(literal(1)).select_from(n).where(
        n.c[entity] == b.c[entity], tuple_(n.c[order], n.c[key]) > tuple_(b.c[order], b.c[key])))
    rows = conn.execute(select(b.c._raw_payload, b.c._partition_key, b.c._batch_id, b.c._manifest_id,
                               b.c._ingested_at).select_from(b.join(touched, b.c[entity] == touched.c.event_id))
                        .where(~outranked)).all()
    drop_temp(conn, touched.name)
    typed = typed_from_payloads(spec, [r._raw_payload for r in rows], keep_errors=True)
    return typed.select(
        *[pl.col(f.name).alias(spec.silver_name(f.name)) for f in spec.fields],
        pl.Series("_partition_key", [r._partition_key for r in rows], dtype=pl.String),
        pl.Series("_batch_id", [r._batch_id for r in rows], dtype=pl.String),
        pl.Series("_manifest_id", [r._manifest_id for r in rows], dtype=pl.String),
        pl.Series("_ingested_at", [r._ingested_at for r in rows], dtype=pl.Datetime("us", "UTC")),
        pl.col("_type_errors"),
    )
