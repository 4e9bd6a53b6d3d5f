"""Read the mart models of a folder (the folder is the configuration) and build their dependency graph.

Every problem is one line naming the file and the header line: an unknown key, an upstream that is
neither a dataset nor a mart, a cycle, SQL DuckDB cannot bind against its upstreams' columns, a grain
column that is missing or not a DATE. Binding runs each model on empty upstream tables, in dependency
order, so a model's column types are known before any data is read.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from schemas.datasets import DatasetSpec
from schemas.mart_models import MartCheck, MartModel, MartPolicy, Upstream, Window
from schemas.tables import FACTORY_TABLES, dataset_tables
from tasks.errors import InputError
from tasks.lake import LINEAGE
from tasks.gold import gold_type
from tasks.migrations import VERSION_TABLE
from tasks.duck import duckdb_connection, literal

NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
HEADER = re.compile(r"--\s*(?P<key>[a-z_]+)\s*:\s*(?P<value>.*?)\s*$")
UPSTREAM = re.compile(r"(?P<name>[a-z][a-z0-9_]*)\s*(\[\s*(?P<start>all|-?\d+)\s*:\s*(?P<end>-?\d+)\s*\])?")
CHECK = re.compile(r"(?P<severity>warn|error)\s+(?P<kind>unique|not_null|row_count_change)\s*\((?P<args>[^)]*)\)")
ASSERTION = re.compile(r"(?P<severity>warn|error)\s+(?P<name>[a-z][a-z0-9_]*)\s*:\s*(?P<sql>.+)")
# what mart SQL sees of a dataset beside its events' fields: the delivery day and the snapshot read
DATASET_EXTRA = {"dt": pl.Date(), "_snapshot_id": pl.String()}
LINEAGE_DTYPES = {"_line_number": pl.Int64()}
MAX_WINDOW = 3660


@dataclass(frozen=True)
class MartGraph:
    """The models, in dependency order (every model after its upstream marts)."""

    models: dict[str, MartModel]
    datasets: frozenset[str]

    def get(self, name: str) -> MartModel:
        if name not in self.models:
            known = ", ".join(self.models) or "none"
            raise InputError("--mart", None, "mart", f"{name!r} is not a mart (known: {known})")
        return self.models[name]

    def downstream_of(self, names: set[str]) -> list[MartModel]:
        """Marts that read any of `names`, directly or through other marts, in dependency order."""
        reached = set(names)
        found = []
        for model in self.models.values():
            if any(u.name in reached for u in model.upstreams):
                reached.add(model.name)
                found.append(model)
        return found

    def affected(self, table: str, day: date) -> list[dict[str, str | None]]:
        """The mart partitions a new snapshot of `table`'s partition `day` makes stale, as ranges per mart
        (`to` None: every later partition, for windows that reach back to the first partition)."""
        reach: dict[str, tuple[date, date | None]] = {table: (day, day)}
        found: list[dict[str, str | None]] = []
        for model in self.models.values():
            spans = []
            for upstream in model.upstreams:
                if upstream.name in reach:
                    first, last = reach[upstream.name]
                    spans.append((first - timedelta(days=upstream.window.end),
                                  None if last is None or upstream.window.start is None
                                  else last - timedelta(days=upstream.window.start)))
            if spans:
                lo = min(s[0] for s in spans)
                hi = None if any(s[1] is None for s in spans) else max(s[1] for s in spans if s[1] is not None)
                reach[model.name] = (lo, hi)
                found.append({"mart": model.name, "from": lo.isoformat(), "to": hi.isoformat() if hi else None})
        return found

    def with_upstream_marts(self, names: set[str]) -> list[MartModel]:
        """These marts and the marts they read, in dependency order."""
        wanted = set(names)
        for model in reversed(list(self.models.values())):
            if model.name in wanted:
                wanted |= {u.name for u in model.upstreams if u.name in self.models}
        return [m for m in self.models.values() if m.name in wanted]


def _parse_window(match: re.Match[str], where: Path, line: int) -> Window:
    if match.group("end") is None:
        return Window(0, 0)
    start = None if match.group("start") == "all" else int(match.group("start"))
    end = int(match.group("end"))
    if start is not None and start > end:
        raise InputError(where, line, "upstream", f"window [{start}:{end}] ends before it starts")
    if max(abs(end), abs(start or 0)) > MAX_WINDOW:
        raise InputError(where, line, "upstream", f"a window reaches at most {MAX_WINDOW} days")
    return Window(start, end)


def _parse_check(value: str, where: Path, line: int, assertion: bool) -> MartCheck:
    if assertion:
        found = ASSERTION.fullmatch(value)
        if found is None:
            raise InputError(where, line, "assert", "write `-- assert: error|warn <name>: SELECT … FROM this …`")
        return MartCheck("assert", found["name"], found["severity"], line, sql=found["sql"])
    found = CHECK.fullmatch(value)
    if found is None:
        raise InputError(where, line, "check", "write `-- check: error|warn unique(col, …)`, `not_null(col, …)` "
                         "or `row_count_change(ratio)`")
    args = tuple(a.strip() for a in found["args"].split(",") if a.strip())
    if found["kind"] == "row_count_change":
        try:
            (threshold,) = (float(a) for a in args)
        except ValueError:
            raise InputError(where, line, "check", "row_count_change takes one ratio, e.g. row_count_change(0.5)")\
                from None
        return MartCheck("row_count_change", "row_count_change", found["severity"], line, threshold=threshold)
    if not args:
        raise InputError(where, line, "check", f"{found['kind']} needs at least one column")
    return MartCheck(found["kind"], f"{found['kind']}({', '.join(args)})", found["severity"], line, columns=args)


def parse_model(path: Path) -> MartModel:
    """One model file: its header (leading `-- key: value` comments) and its SQL."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, None, "file", "is not UTF-8 text") from None
    name = path.stem
    if NAME.fullmatch(name) is None:
        raise InputError(path, None, "file name", "a mart's name (its file name) is lower-case letters, digits and _, "
                         "starting with a letter")
    grain: str | None = None
    policy = MartPolicy.HOLD
    upstreams: list[Upstream] = []
    checks: list[MartCheck] = []
    lines = text.splitlines()
    body_start = len(lines)
    once: dict[str, int] = {}  # grain and policy: the line that declared them
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            body_start = number - 1
            break
        found = HEADER.fullmatch(stripped)
        if found is None:
            continue  # a plain comment
        key, value = found["key"], found["value"]
        if key in ("grain", "policy"):
            if key in once:
                raise InputError(path, number, key, f"declared twice (line {once[key]})")
            once[key] = number
        if key == "grain":
            if NAME.fullmatch(value) is None:
                raise InputError(path, number, "grain", f"{value!r} is not a column name")
            grain = value
        elif key == "upstream":
            match = UPSTREAM.fullmatch(value)
            if match is None:
                raise InputError(path, number, "upstream", f"{value!r}: write a name and an optional window, "
                                 "e.g. tickets[-6:0] or tickets[all:0]")
            upstreams.append(Upstream(match["name"], _parse_window(match, path, number), number))
        elif key == "policy":
            if value not in {p.value for p in MartPolicy}:
                raise InputError(path, number, "policy", f"{value!r} is not hold or refresh")
            policy = MartPolicy(value)
        elif key in ("check", "assert"):
            checks.append(_parse_check(value, path, number, key == "assert"))
        else:
            raise InputError(path, number, key, "unknown header key (grain, upstream, policy, check, assert)")
    sql = "\n".join(lines[body_start:]).strip().rstrip(";").strip()
    if grain is None:
        raise InputError(path, 1, "grain", "the header declares no grain (`-- grain: dt`)")
    if not upstreams:
        raise InputError(path, 1, "upstream", "the header declares no upstream (`-- upstream: tickets`)")
    if not sql:
        raise InputError(path, len(lines) or 1, "sql", "the file has a header but no SELECT")
    named: dict[str, int] = {}
    for check in checks:
        if check.name in named:
            raise InputError(path, check.line, check.kind, f"{check.name} is declared twice (line {named[check.name]}): "
                             "one check per name")
        named[check.name] = check.line
    seen: dict[str, int] = {}
    for upstream in upstreams:
        if upstream.name in seen:
            raise InputError(path, upstream.line, "upstream", f"{upstream.name} is declared twice (line {seen[upstream.name]})")
        seen[upstream.name] = upstream.line
    if not any(u.window.holds_today() for u in upstreams):
        raise InputError(path, upstreams[0].line, "upstream", "no upstream window holds day 0: a mart partition "
                         "needs one upstream partition of its own day to exist")
    return MartModel(name, path, grain, tuple(upstreams), tuple(checks), policy, sql,
                     hashlib.sha256(text.encode()).hexdigest())


def _order(models: dict[str, MartModel], datasets: set[str]) -> list[MartModel]:
    """Dependency order; an unknown upstream or a cycle is refused naming the file and line."""
    for model in models.values():
        for upstream in model.upstreams:
            if upstream.name not in models and upstream.name not in datasets:
                raise InputError(model.path, upstream.line, "upstream",
                                 f"{upstream.name!r} is neither a dataset ({', '.join(sorted(datasets))}) nor a mart")
    ordered: list[MartModel] = []
    state: dict[str, str] = {}

    def visit(model: MartModel, path: list[MartModel]) -> None:
        if state.get(model.name) == "done":
            return
        if state.get(model.name) == "visiting":
            cycle = path[path.index(model):] + [model]
            first = cycle[0]
            line = next(u.line for u in first.upstreams if u.name == cycle[1].name)
            raise InputError(first.path, line, "upstream", "cycle: " + " -> ".join(m.name for m in cycle))
        state[model.name] = "visiting"
        for upstream in model.upstreams:
            if upstream.name in models:
                visit(models[upstream.name], path + [model])
        state[model.name] = "done"
        ordered.append(model)

    for name in sorted(models):
        visit(models[name], [])
    return ordered


def dataset_view_schema(spec: DatasetSpec) -> dict[str, pl.DataType]:
    """The columns mart SQL sees of a dataset: the delivery day, the snapshot, the event's fields, lineage."""
    lineage = {name: LINEAGE_DTYPES.get(name, pl.String()) for name in LINEAGE}
    return {**DATASET_EXTRA, **{f.name: f.dtype for f in spec.fields}, **lineage}


def _bind(ordered: list[MartModel], datasets: dict[str, DatasetSpec]) -> list[MartModel]:
    """Run each model on empty upstreams: its columns, or one line naming the file."""
    import duckdb

    bound = []
    with tempfile.TemporaryDirectory(prefix="datafactory-bind-") as folder, duckdb_connection() as con:
        for name in sorted({u.name for m in ordered for u in m.upstreams if u.name in datasets}):
            empty = Path(folder) / f"{name}.parquet"
            pl.DataFrame(schema=dataset_view_schema(datasets[name])).write_parquet(empty)
            con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet({literal(str(empty))})')
        for model in ordered:
            try:
                con.execute(f'CREATE TABLE "{model.name}" AS SELECT * FROM ({model.sql}) LIMIT 0',
                            {"dt": date(2026, 1, 1)} if "$dt" in model.sql else None)
            except duckdb.Error as exc:
                line = str(exc).splitlines()[0]
                raise InputError(model.path, None, "sql", f"DuckDB cannot bind it: {line}") from None
            columns = dict(con.execute(f"SELECT column_name, data_type FROM information_schema.columns "
                                       f"WHERE table_name = '{model.name}' ORDER BY ordinal_position").fetchall())
            grain_line = next((n for n, text in enumerate(model.path.read_text().splitlines(), 1)
                               if re.match(r"--\s*grain\s*:", text.strip())), 1)
            if model.grain not in columns:
                raise InputError(model.path, grain_line, "grain", f"the SELECT has no column {model.grain}")
            if columns[model.grain] != "DATE":
                raise InputError(model.path, grain_line, "grain",
                                 f"{model.grain} is {columns[model.grain]}, not a DATE (a daily partition column)")
            for check in model.checks:
                missing = [c for c in check.columns if c not in columns]
                if missing:
                    raise InputError(model.path, check.line, "check", f"{check.name}: no column {missing[0]}")
            for column, kind in columns.items():
                if len(column.encode()) > 63:  # PostgreSQL would cut it: the gold table would not match
                    raise InputError(model.path, None, "sql", f"column {column[:40]!r}… has a name over 63 bytes: "
                                     "give it an alias")
                gold_type(kind, model, column)  # one with no warehouse type is refused now, not at commit
            con.execute(f'CREATE OR REPLACE TEMP VIEW this AS SELECT * FROM "{model.name}"')
            for check in model.checks:  # an assertion's SQL must bind too: on its mart's (empty) rows
                if check.sql is not None:
                    try:
                        con.execute(f"SELECT count(*) FROM ({check.sql})")
                    except duckdb.Error as exc:
                        raise InputError(model.path, check.line, "assert",
                                         f"{check.name}: DuckDB cannot bind it: {str(exc).splitlines()[0]}") from None
            bound.append(replace(model, columns=columns))
    return bound


def _reserved_names(datasets: dict[str, DatasetSpec]) -> set[str]:
    names = {t.name for t in FACTORY_TABLES} | set(datasets) | {VERSION_TABLE, "alembic_version"}
    for spec in datasets.values():
        names |= {t.name for t in dataset_tables(spec)}
    return names


def load_models(folder: Path, datasets: dict[str, DatasetSpec]) -> MartGraph:
    """Every `*.sql` model in `folder`, checked and bound, in dependency order (an empty folder: no marts)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, None, "FACTORY_MARTS_DIR", "is not a folder (of mart models, *.sql)")
    paths = sorted(folder.glob("*.sql"))
    models: dict[str, MartModel] = {}
    reserved = _reserved_names(datasets)
    for path in paths:
        model = parse_model(path)
        if model.name in reserved:
            raise InputError(path, None, "file name", f"{model.name!r} is already a dataset or a warehouse table")
        models[model.name] = model
    for spec in datasets.values():
        if "dt" in spec.field_names or "_snapshot_id" in spec.field_names:
            users = [m for m in models.values() if any(u.name == spec.name for u in m.upstreams)]
            if users:
                raise InputError(users[0].path, None, "upstream", f"dataset {spec.name} has a field named dt or "
                                 "_snapshot_id, which marts use for the delivery day and snapshot")
    ordered = _bind(_order(models, set(datasets)), datasets) if models else []
    return MartGraph({m.name: m for m in ordered}, frozenset(datasets))
