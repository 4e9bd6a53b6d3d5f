"""The lake as the ledger sees it: which snapshots are committed, which one is current per partition,
and a marker that follows the ledger (moved after the warehouse commits, repaired when a crash left
it behind). Readers that must be right (restore, verify) go through here, not through the marker."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from sqlalchemy import Connection, Engine

from tasks import ledger
from tasks.database import reading
from tasks.errors import StorageError, TransientError
from tasks.lake import Lake, LakeError, clean_leftovers, drop_snapshots, marker_is, publish_marker, read_marker, read_record

log = logging.getLogger(__name__)


def committed_ids(conn: Connection, dataset: str, day: date) -> set[str]:
    """Snapshots of the partition the ledger committed and retention has not let go."""
    return {r.snapshot_id for r in ledger.snapshot_records(conn, dataset, day.isoformat())}


def current_record(conn: Connection, lake: Lake, dataset: str, day: date) -> dict[str, Any] | None:
    """The record of the partition's current snapshot, checked against what the ledger committed."""
    current = ledger.current_snapshot(conn, dataset, day.isoformat())
    if current is None:
        return None
    return read_record(lake, dataset, day, current, _record_sha(conn, dataset, day, current))


def current_records(conn: Connection, lake: Lake, dataset: str) -> dict[date, dict[str, Any]]:
    """Every partition's current snapshot record, as the ledger says (each checked)."""
    shas = {r.snapshot_id: r.record_sha256 for r in ledger.snapshot_records(conn, dataset)}
    return {date.fromisoformat(p): read_record(lake, dataset, date.fromisoformat(p), i, shas.get(i))
            for p, i in sorted(ledger.current_snapshots(conn, dataset).items())}


def _record_sha(conn: Connection, dataset: str, day: date, snapshot_id: str) -> str | None:
    found = [r for r in ledger.snapshot_records(conn, dataset, day.isoformat(), retained_only=False)
             if r.snapshot_id == snapshot_id]
    return found[0].record_sha256 if found else None


def follow_ledger(engine: Engine, lake: Lake, dataset: str, day: date) -> str | None:
    """Move the marker to the ledger's current snapshot when it is elsewhere; say what was done."""
    with reading(engine) as conn:
        record = current_record(conn, lake, dataset, day)
    if record is None or marker_is(lake, dataset, day, record["snapshot_id"]):
        return None
    publish_marker(lake, dataset, day, record)
    log.info("%s/%s: lake marker moved to %s (the ledger's current snapshot)", dataset, day, record["snapshot_id"])
    return f"lake marker moved to {record['snapshot_id']}"


def apply_retention(engine: Engine, lake: Lake, dataset: str, day: date) -> list[str]:
    """Keep the newest `retention` committed snapshots (and always the current one); let the rest go."""
    with reading(engine) as conn:
        records = ledger.snapshot_records(conn, dataset, day.isoformat())
        current = ledger.current_snapshot(conn, dataset, day.isoformat())
    keep = {r.snapshot_id for r in records[-max(1, lake.retention):]} | {current}
    dropped = [r.snapshot_id for r in records if r.snapshot_id not in keep]
    if dropped:
        drop_snapshots(lake, dataset, day, dropped)
        with engine.begin() as conn:
            ledger.retire_snapshots(conn, dropped)
    return dropped


def settle_lake(engine: Engine, lake: Lake, dataset: str, day: date) -> str | None:
    """After the warehouse committed (or found nothing to do): marker to the ledger's current snapshot,
    retention, and whatever a killed attempt left (temp files, staged snapshots no ledger row names).
    Call under the partition lock.

    The data is committed whatever happens here; a failure only leaves the marker behind, which the
    next run of the partition repairs. Returns a note for the evidence when something was left."""
    try:
        follow_ledger(engine, lake, dataset, day)
        apply_retention(engine, lake, dataset, day)
        with reading(engine) as conn:
            keep = committed_ids(conn, dataset, day)
        clean_leftovers(lake, dataset, day, keep)
    except (StorageError, TransientError, LakeError) as exc:
        log.warning("%s/%s: lake marker not moved yet: %s", dataset, day, exc)
        return f"the lake marker is behind the warehouse ({exc}); the next run of the partition moves it"
    return None


def snapshot_listing(engine: Engine, lake: Lake, dataset: str, day: date) -> list[dict[str, Any]]:
    """The partition's committed, retained snapshots, oldest first: which is current (by the ledger),
    where the marker points, and any damage found reading each record."""
    with reading(engine) as conn:
        records = ledger.snapshot_records(conn, dataset, day.isoformat())
        current = ledger.current_snapshot(conn, dataset, day.isoformat())
    try:
        marker = read_marker(lake, dataset, day)
    except LakeError:
        marker = None
    listing = []
    for row in records:
        entry: dict[str, Any] = {"snapshot_id": row.snapshot_id, "current": row.snapshot_id == current,
                                 "marker": marker is not None and marker.get("snapshot_id") == row.snapshot_id,
                                 "rows": row.rows, "files": row.files, "committed_at": row.committed_at.isoformat(),
                                 "run_id": row.run_id, "problem": None}
        try:
            read_record(lake, dataset, day, row.snapshot_id, row.record_sha256)
        except LakeError as exc:
            entry["problem"] = exc.reason
        listing.append(entry)
    return listing
