"""Compute one mart partition with DuckDB from exactly the upstream snapshots its plan names, and check it.

Inputs are read through the lake (each file's sha256 checked against its snapshot record, local or
S3), conformed to the dataset's contract like a restore reads them, and handed to DuckDB as one
Parquet file per (upstream, partition, snapshot) in a scratch folder: the mart SQL sees a view per
upstream holding those rows and nothing else (never a listing of a `dt=` folder).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import Engine, select

from schemas.checks import CheckStatus, Severity
from schemas.datasets import DATASETS
from schemas.mart_models import MartCheck, MartModel
from schemas.summary import CheckOutcome
from schemas.tables import lake_snapshot
from tasks.database import reading
from tasks.duck import duckdb_connection, literal, quoted
from tasks.errors import InputError
from tasks.lake import Lake, conform_to_contract, read_files, read_record
from tasks.mart_models import MartGraph, dataset_view_schema
from tasks.mart_plan import InputSnapshot

InputKey = tuple[str, str, str]


@dataclass
class InputFiles:
    """Upstream snapshots copied (checked and conformed) into a scratch folder, once per marts run."""

    lake: Lake
    graph: MartGraph
    engine: Engine  # where each snapshot record's committed sha256 is looked up
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="datafactory-marts-")))
    files: dict[InputKey, Path] = field(default_factory=dict)

    def path(self, item: InputSnapshot) -> Path:
        key = (item.upstream, item.partition, item.snapshot_id)
        if key not in self.files:
            day = date.fromisoformat(item.partition)
            with reading(self.engine) as conn:
                sha = conn.execute(select(lake_snapshot.c.record_sha256)
                                   .where(lake_snapshot.c.snapshot_id == item.snapshot_id)).scalar()
            record = read_record(self.lake, item.upstream, day, item.snapshot_id, sha)
            rows = read_files(self.lake, item.upstream, day, record)
            spec = DATASETS.get(item.upstream)
            if spec is not None and item.upstream not in self.graph.models:
                schema = dataset_view_schema(spec)
                rows = conform_to_contract(spec, rows).with_columns(
                    pl.lit(day).alias("dt"), pl.lit(item.snapshot_id).alias("_snapshot_id"))
                rows = rows.select([pl.col(c).cast(t) if c in rows.columns else pl.lit(None, dtype=t).alias(c)
                                    for c, t in schema.items()])
            target = self.folder / item.upstream / f"{item.partition}-{item.snapshot_id}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            rows.write_parquet(target)
            self.files[key] = target
        return self.files[key]

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def _empty_view(con: Any, model: MartModel | None, name: str, folder: Path) -> None:
    if model is not None:  # an upstream mart: its bound columns
        columns = ", ".join(f"{quoted(c)} {t}" for c, t in model.columns.items())
        con.execute(f"CREATE TEMP TABLE {quoted(name)} ({columns})")
        return
    empty = folder / f"{name}-empty.parquet"
    pl.DataFrame(schema=dataset_view_schema(DATASETS[name])).write_parquet(empty)
    con.execute(f"CREATE TEMP VIEW {quoted(name)} AS SELECT * FROM read_parquet({literal(str(empty))})")


@dataclass
class MartResult:
    rows: pl.DataFrame
    checks: list[CheckOutcome]

    @property
    def held_by_checks(self) -> list[str]:
        return [c.name for c in self.checks if c.status == CheckStatus.FAIL and c.severity == Severity.ERROR]


def compute(model: MartModel, graph: MartGraph, day: date, inputs: list[InputSnapshot], files: InputFiles,
            previous_rows: int | None) -> MartResult:
    """The mart's rows for `day` from exactly `inputs`, and its checks' verdicts."""
    con = duckdb_connection()
    out = files.folder / f"{model.name}-{day.isoformat()}.parquet"
    try:
        for upstream in model.upstreams:
            paths = [str(files.path(i)) for i in inputs if i.upstream == upstream.name]
            if paths:
                listed = ", ".join(literal(p) for p in paths)
                con.execute(f"CREATE TEMP VIEW {quoted(upstream.name)} AS SELECT * FROM "
                            f"read_parquet([{listed}], union_by_name = true, hive_partitioning = false)")
            else:
                _empty_view(con, graph.models.get(upstream.name), upstream.name, files.folder)
        try:
            con.execute(f"COPY (SELECT * FROM ({model.sql})) TO {literal(str(out))} (FORMAT parquet)",
                        {"dt": day} if "$dt" in model.sql else None)
        except Exception as exc:  # duckdb.Error: the model's own SQL failed on this data
            raise InputError(model.path, None, "sql", f"DuckDB failed on {day}: {str(exc).splitlines()[0]}") from None
        rows = pl.read_parquet(out)
        wrong = rows.filter(pl.col(model.grain) != pl.lit(day)).height + rows[model.grain].null_count()
        if wrong:
            raise InputError(model.path, None, "grain", f"{wrong} rows of partition {day} have another "
                             f"{model.grain} (filter on $dt)")
        con.execute(f"CREATE TEMP VIEW this AS SELECT * FROM read_parquet({literal(str(out))})")  # checks read it
        return MartResult(rows, [_check(con, model, c, rows.height, previous_rows) for c in model.checks])
    finally:
        con.close()
        out.unlink(missing_ok=True)


def _check(con: Any, model: MartModel, check: MartCheck, rows: int, previous_rows: int | None) -> CheckOutcome:
    def outcome(observed: float | None, failed: bool, detail: str, limit: float | None = 0.0) -> CheckOutcome:
        status = CheckStatus.SKIPPED if observed is None else (
            (CheckStatus.FAIL if check.severity == Severity.ERROR else CheckStatus.WARN) if failed else CheckStatus.PASS)
        return CheckOutcome(name=check_name(check), severity=check.severity, status=status.value, observed=observed,
                            warn_above=limit if check.severity == Severity.WARN else None,
                            error_above=limit if check.severity == Severity.ERROR else None, detail=detail)

    columns = ", ".join(quoted(c) for c in check.columns)
    if check.kind == "unique":
        found = con.execute(f"SELECT count(*) FROM (SELECT {columns} FROM this GROUP BY ALL HAVING count(*) > 1)"
                            ).fetchone()[0]
        return outcome(float(found), found > 0, f"{found} values of ({', '.join(check.columns)}) repeat")
    if check.kind == "not_null":
        nulls = con.execute("SELECT " + " + ".join(f"count(*) FILTER (WHERE {quoted(c)} IS NULL)"
                                                  for c in check.columns) + " FROM this").fetchone()[0]
        return outcome(float(nulls), nulls > 0, f"{nulls} nulls in {', '.join(check.columns)}")
    if check.kind == "row_count_change":
        if previous_rows is None:
            return outcome(None, False, "no earlier partition to compare with", check.threshold)
        change = abs(rows - previous_rows) / max(previous_rows, 1)
        return outcome(round(change, 6), change > (check.threshold or 0.0),
                       f"{rows} rows vs {previous_rows} in the partition before", check.threshold)
    try:
        failing = con.execute(f"SELECT count(*) FROM ({check.sql})").fetchone()[0]
    except Exception as exc:  # duckdb.Error in the assertion's SQL
        raise InputError(model.path, check.line, "assert", f"{check.name}: {str(exc).splitlines()[0]}") from None
    return outcome(float(failing), failing > 0, f"{failing} rows fail {check.name}")


def check_name(check: MartCheck) -> str:
    """The name stored with the verdict (check_result keeps 48 characters)."""
    return check.name if len(check.name) <= 48 else f"{check.kind}@line{check.line}"
