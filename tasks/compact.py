"""Lake compaction: rewrite a partition's current snapshot into as few files as `rows_per_file` allows,
through the same commit protocol as a run (staged, recorded by the ledger, then the marker follows)."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Engine

from schemas.datasets import DatasetSpec
from tasks import ledger
from tasks.database import reading
from tasks.lake import Lake, LakeError, read_files, stage_snapshot
from tasks.lake_state import committed_ids, current_record, settle_lake
from tasks.locks import partition_lock


def compact_partition(engine: Engine, lake: Lake, spec: DatasetSpec, day: date) -> dict[str, Any] | None:
    """Compact one partition; None when its current snapshot is already one file (or it has none).
    The rows are proved identical before the new snapshot is committed."""
    partition = day.isoformat()
    holder = lambda: ledger.describe_holder(engine, spec.name, partition)  # noqa: E731
    with partition_lock(engine, spec.name, partition, holder):
        with reading(engine) as conn:
            old = current_record(conn, lake, spec.name, day)
            keep = committed_ids(conn, spec.name, day)
        if old is None or len(old["files"]) <= 1:
            return None
        rows = read_files(lake, spec.name, day, old).sort(spec.event_key)
        run_id = ledger.new_run_id()
        details = {k: old[k] for k in ("batch_id", "manifest_ids") if k in old}
        new, digest = stage_snapshot(lake, spec, day, rows, run_id, keep, {**details, "compacted_from": old["snapshot_id"]})
        if not read_files(lake, spec.name, day, new).sort(spec.event_key).equals(rows):
            raise LakeError("lake_file_corrupt", lake.where(spec.name, day),
                            f"compacted rows differ; snapshot {old['snapshot_id']} kept")
        with engine.begin() as conn:
            ledger.record_snapshot(conn, spec.name, partition, new["snapshot_id"], run_id, new["rows"],
                                   len(new["files"]), digest)
        settle_lake(engine, lake, spec.name, day)
    return {"partition_key": partition, "rows": new["rows"], "files_before": len(old["files"]),
            "files_after": len(new["files"]), "snapshot_before": old["snapshot_id"], "snapshot_after": new["snapshot_id"]}


def compact_month(engine: Engine, lake: Lake, spec: DatasetSpec, month: str) -> list[dict[str, Any]]:
    """Compact every partition of `YYYY-MM` that has a current snapshot."""
    with reading(engine) as conn:
        days = sorted(date.fromisoformat(p) for p in ledger.current_snapshots(conn, spec.name) if p.startswith(month))
    return [report for day in days if (report := compact_partition(engine, lake, spec, day))]
