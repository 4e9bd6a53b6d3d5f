"""`{lake}/catalog.duckdb`: a DuckDB file analysts open read-only to query the lake by name.

Regenerated from the ledger after every commit (each record read and checked against the sha256 the
ledger committed), written whole to a temp file and put in place in one step (a rename locally, one PUT
on S3), so a reader sees the old catalog or the new one. Every view reads exactly the files of
committed snapshots, never a glob: a crash mid-commit leaves the catalog on the snapshots before it.

    tickets                        every current partition's events (+ dt, _snapshot_id)
    tickets_dt('2026-04-17')       one partition
    tickets_snapshot(day, id)      one retained snapshot of a partition (as of that commit)
    ticket_fact / ticket_fact_dt(day)   silver from the lake: each entity's greatest event (as of a day)
    <mart> / <mart>_dt(day) / <mart>_snapshot(day, id)
    _catalog                       what the views read: table, partition, snapshot, files, rows
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import tempfile
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, select

from schemas.datasets import DATASETS, DatasetSpec
from schemas.tables import mart_partition, mart_table, partition_state
from tasks import ledger
from tasks.database import reading
from tasks.lake import Lake, LakeError, read_record
from tasks.locks import partition_lock
from tasks.duck import literal, quoted
from tasks.storage import LocalStorage

log = logging.getLogger(__name__)
CATALOG = "catalog.duckdb"


def catalog_location(lake: Lake) -> str:
    """Where the catalog is: an absolute path, or an s3:// URL."""
    return _object_url(lake, CATALOG)


def _object_url(lake: Lake, key: str) -> str:
    """Where an object of the lake really is: a local path, or s3://bucket/key (a block's folder included)."""
    if isinstance(lake.storage, LocalStorage):
        return str((Path(lake.storage.url) / key).resolve())
    return lake.storage.object_url(key)  # type: ignore[attr-defined]


def _file_url(lake: Lake, name: str, day: date, path: str) -> str:
    return _object_url(lake, f"{lake.prefix(name, day)}/{path}")


def _select(lake: Lake, name: str, day: date, record: dict[str, Any], extra: bool) -> str:
    files = ", ".join(literal(_file_url(lake, name, day, f["path"])) for f in record["files"])
    head = f"DATE '{day.isoformat()}' AS dt, {literal(record['snapshot_id'])} AS _snapshot_id, " if extra else ""
    return f"SELECT {head}* FROM read_parquet([{files}], hive_partitioning = false)"


def _records(engine: Engine, lake: Lake, name: str) -> tuple[dict[date, dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The current record per partition, every retained record, and the problems found reading them."""
    current: dict[date, dict[str, Any]] = {}
    retained: list[dict[str, Any]] = []
    problems: list[str] = []
    with reading(engine) as conn:
        now = ledger.current_snapshots(conn, name)
        rows = ledger.snapshot_records(conn, name)
    for row in rows:
        day = date.fromisoformat(row.partition_key)
        try:
            record = read_record(lake, name, day, row.snapshot_id, row.record_sha256)
        except LakeError as exc:
            problems.append(f"{name}/{day} {row.snapshot_id}: {exc.reason}")
            continue
        retained.append(record)
        if now.get(row.partition_key) == row.snapshot_id:
            current[day] = record
    return current, retained, problems


def _table_views(con: Any, lake: Lake, name: str, grain: str | None, current: dict[date, dict[str, Any]],
                 retained: list[dict[str, Any]]) -> None:
    """A view over the current snapshots, a one-day macro, an as-of-snapshot macro. Datasets get `dt`
    and `_snapshot_id` columns; a mart's rows carry its grain column already."""
    extra = grain is None
    day_column = grain or "dt"
    union = " UNION ALL BY NAME ".join(_select(lake, name, d, r, extra) for d, r in sorted(current.items()))
    con.execute(f"CREATE VIEW {quoted(name)} AS {union}")
    con.execute(f"CREATE MACRO {quoted(name + '_dt')}(day) AS TABLE "
                f"SELECT * FROM {quoted(name)} WHERE {quoted(day_column)} = CAST(day AS DATE)")
    every = " UNION ALL BY NAME ".join(
        f"SELECT DATE '{r['partition_key']}' AS _dt, {literal(r['snapshot_id'])} AS _sid, * FROM ("
        f"{_select(lake, name, date.fromisoformat(r['partition_key']), r, extra)})" for r in retained)
    con.execute(f"CREATE VIEW {quoted('_' + name + '_snapshots')} AS {every}")
    con.execute(f"CREATE MACRO {quoted(name + '_snapshot')}(day, snapshot_id) AS TABLE "
                f"SELECT * EXCLUDE (_dt, _sid) FROM {quoted('_' + name + '_snapshots')} "
                "WHERE _dt = CAST(day AS DATE) AND _sid = snapshot_id")


def _silver_views(con: Any, spec: DatasetSpec) -> None:
    """Silver computed from the lake's events by the warehouse's rule (each event at its first delivery's
    version, each entity at its greatest event by (ordering, event key)); `_dt(day)` as of a delivery day."""
    fields = ", ".join(f"{quoted(f.name)} AS {quoted(spec.silver_name(f.name))}" for f in spec.fields)
    order = f"{quoted(spec.ordering_column)} DESC, {quoted(spec.event_key)} DESC"
    # each event at its earliest delivery's version (bronze's: a later conflicting one lost), then each
    # entity at its greatest event
    accepted = (f"(SELECT * FROM {{source}} QUALIFY row_number() OVER (PARTITION BY {quoted(spec.event_key)} "
                "ORDER BY _delivery_key) = 1)")
    body = (f"SELECT {fields} FROM {accepted} QUALIFY row_number() OVER (PARTITION BY {quoted(spec.entity_key)} "
            f"ORDER BY {order}) = 1")
    con.execute(f"CREATE VIEW {quoted(spec.silver_table)} AS " + body.format(source=quoted(spec.name)))
    con.execute(f"CREATE MACRO {quoted(spec.silver_table + '_dt')}(day) AS TABLE " + body.format(
        source=f"(SELECT * FROM {quoted(spec.name)} WHERE dt <= CAST(day AS DATE))"))


def _states(engine: Engine, name: str, dataset: bool) -> dict[str, str]:
    """Each partition's state (succeeded, held, failed): held rows are in the views, flagged in `_catalog`."""
    table = partition_state if dataset else mart_partition
    key = table.c.dataset if dataset else table.c.mart
    with reading(engine) as conn:
        return {str(p): str(s) for p, s in conn.execute(select(table.c.partition_key, table.c.status).where(key == name))}


def catalog_marts(engine: Engine) -> dict[str, str]:
    """Every mart with a gold table, and its grain (from the ledger: a model folder that fails to load
    does not take the marts out of the catalog)."""
    with reading(engine) as conn:
        return {str(m): str(g) for m, g in conn.execute(select(mart_table.c.mart, mart_table.c.grain))}


def build_catalog(engine: Engine, lake: Lake, marts: dict[str, str], path: Path) -> list[str]:
    """Write the catalog to `path` (`marts`: name -> grain column); returns the problems met."""
    import duckdb

    built = datetime.now(timezone.utc)
    rows: list[tuple[Any, ...]] = []
    problems: list[str] = []
    con = duckdb.connect(str(path))
    try:
        if not isinstance(lake.storage, LocalStorage):  # views are bound when created: the files are read
            _connect_s3(con, lake)
        tables: list[tuple[str, str | None]] = [(n, None) for n in sorted(DATASETS)] + sorted(marts.items())
        for name, grain in tables:
            current, retained, found = _records(engine, lake, name)
            problems += found
            if not current:
                continue
            _table_views(con, lake, name, grain, current, retained)
            if grain is None:
                _silver_views(con, DATASETS[name])
            states = _states(engine, name, grain is None)
            rows += [(name, "dataset" if grain is None else "mart", d, r["snapshot_id"], states.get(d.isoformat()),
                      len(r["files"]), r["rows"], r["committed_at"]) for d, r in sorted(current.items())]
        con.execute("CREATE TABLE _catalog (table_name VARCHAR, kind VARCHAR, partition_key DATE, snapshot_id VARCHAR,"
                    " status VARCHAR, files INTEGER, rows BIGINT, committed_at VARCHAR, built_at TIMESTAMPTZ)")
        if rows:
            con.executemany("INSERT INTO _catalog VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [(*r, built) for r in rows])
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return problems


def _connect_s3(con: Any, lake: Lake) -> None:
    """httpfs in this (building) session, with the lake's own credentials; the secret is temporary: the
    catalog file never holds it."""
    install_httpfs()
    con.execute("LOAD httpfs")
    found = lake.storage.connection_settings()  # type: ignore[attr-defined]
    options = ["TYPE s3", f"REGION {literal(found['region'] or 'us-east-1')}"]
    if found["key_id"]:
        options += [f"KEY_ID {literal(found['key_id'])}", f"SECRET {literal(found['secret'] or '')}"]
    if found["session_token"]:
        options.append(f"SESSION_TOKEN {literal(found['session_token'])}")
    endpoint = urlsplit(found["endpoint_url"] or "")
    if endpoint.netloc and not endpoint.netloc.endswith("amazonaws.com"):
        options += [f"ENDPOINT {literal(endpoint.netloc)}", "URL_STYLE 'path'",
                    f"USE_SSL {'true' if endpoint.scheme == 'https' else 'false'}"]
    con.execute(f"CREATE TEMPORARY SECRET lake_s3 ({', '.join(options)})")


def refresh_catalog(engine: Engine, lake: Lake) -> str | None:
    """Regenerate `{lake}/catalog.duckdb` in one step (every dataset, every mart with a gold table); None,
    or why it was not (the data stays committed)."""
    holder = lambda: None  # noqa: E731 - a catalog refresh is short; whoever holds it is one
    try:
        with partition_lock(engine, "_catalog", "0000-00-00", holder), \
                tempfile.TemporaryDirectory(prefix="datafactory-catalog-") as folder:
            staged = Path(folder) / CATALOG
            problems = build_catalog(engine, lake, catalog_marts(engine), staged)
            if isinstance(lake.storage, LocalStorage):  # a rename in the lake folder: atomic
                target = Path(catalog_location(lake))
                for left in target.parent.glob(f".{CATALOG}.*.partial"):  # a killed writer's (we hold the lock)
                    left.unlink(missing_ok=True)
                partial = target.with_name(f".{CATALOG}.{os.getpid()}.partial")
                try:
                    partial.write_bytes(staged.read_bytes())
                    os.replace(partial, target)
                finally:
                    partial.unlink(missing_ok=True)
            else:
                lake.storage.write(CATALOG, staged.read_bytes())  # one PUT: atomic per object
    except Exception as exc:  # the commit it follows stands; the next one regenerates the catalog
        log.warning("the lake catalog was not regenerated: %s", exc)
        return f"the lake catalog was not regenerated ({type(exc).__name__}: {exc})"
    for problem in problems:
        log.warning("catalog: left out %s", problem)
    return None


def duckdb_cli() -> str:
    """The DuckDB shell installed beside this Python (duckdb-cli), or `duckdb` from the PATH."""
    beside = Path(sys.executable).parent / "duckdb"
    return str(beside) if beside.exists() else "duckdb"


def install_httpfs() -> None:
    """Put the pinned httpfs extension (duckdb-extension-httpfs) where DuckDB looks for it, so an S3 lake's
    catalog opens without downloading anything."""
    import duckdb
    import duckdb_extension_httpfs  # type: ignore[import-untyped]

    folder = Path(duckdb_extension_httpfs.__path__[0]) / "extensions" / f"v{duckdb.__version__}"
    with duckdb.connect() as con:
        installed = con.execute("SELECT installed FROM duckdb_extensions() WHERE extension_name = 'httpfs'").fetchone()
        if not (installed and installed[0]):
            con.execute(f"INSTALL {literal(str(folder / 'httpfs.duckdb_extension'))}")


def s3_secret_sql(endpoint_url: str | None, region: str | None) -> str:
    """The DuckDB secret for the lake's S3, credentials from the reader's environment (never written down)."""
    options = ["TYPE s3", "KEY_ID getenv('AWS_ACCESS_KEY_ID')", "SECRET getenv('AWS_SECRET_ACCESS_KEY')",
               f"REGION {literal(region or 'us-east-1')}"]
    endpoint = urlsplit(endpoint_url or "")
    if endpoint.netloc and not endpoint.netloc.endswith("amazonaws.com"):
        options += [f"ENDPOINT {literal(endpoint.netloc)}", "URL_STYLE 'path'",
                    f"USE_SSL {'true' if endpoint.scheme == 'https' else 'false'}"]
    return f"CREATE SECRET lake_s3 ({', '.join(options)})"


def open_command(lake: Lake) -> str:
    """The shell command that opens the catalog read-only (on S3: httpfs, the reader's AWS variables)."""
    location = catalog_location(lake)
    if isinstance(lake.storage, LocalStorage):
        return f"{duckdb_cli()} -readonly {shlex.quote(location)}"
    found = lake.storage.connection_settings()  # type: ignore[attr-defined]
    setup = (f"LOAD httpfs; {s3_secret_sql(found['endpoint_url'], found['region'])}; "
             f"ATTACH {literal(location)} AS lake (READ_ONLY); USE lake;")
    return f"{duckdb_cli()} -cmd {shlex.quote(setup)}"
