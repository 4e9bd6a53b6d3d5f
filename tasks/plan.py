"""Backfill planning: expected inputs vs current outputs for every partition of a window, in bulk."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
from sqlalchemy import Engine, and_, select

from schemas.datasets import DatasetSpec
from schemas.manifest import SourceManifest
from schemas.reason_codes import ActionReason, GapReason, PartitionStatus, ProposedAction
from schemas.tables import partition_state
from tasks.atomic import write_atomic
from tasks.database import reading
from tasks.manifests import batch_id_for, delivery_order, source_fingerprint
from tasks.mart_models import MartGraph
from tasks.validate import partition_window
from tasks.verify import untrusted_partitions

# gap reason -> (proposed action, why-code for the partition run)
ACTIONS: dict[GapReason, tuple[ProposedAction, ActionReason | None]] = {
    GapReason.UP_TO_DATE: (ProposedAction.SKIP, None),
    GapReason.MISSING_PARTITION: (ProposedAction.BACKFILL, ActionReason.MISSING_PARTITION),
    GapReason.NO_INPUT_DECLARED: (ProposedAction.HOLD, None),
    GapReason.FAILED_PARTITION: (ProposedAction.BACKFILL, ActionReason.FAILED_PARTITION),
    GapReason.HELD_PARTITION: (ProposedAction.HOLD, None),
    # verify found the current state damaged: a forced rerun writes bronze, quarantine, the lake snapshot
    # and evidence again (silver content changed by hand needs a restore: runbook section 7)
    GapReason.UNTRUSTED_PARTITION: (ProposedAction.RERUN, ActionReason.UNTRUSTED_STATE),
    GapReason.SOURCE_FINGERPRINT_CHANGED: (ProposedAction.BACKFILL, ActionReason.SOURCE_FINGERPRINT_CHANGED),
}
INGESTING = {ProposedAction.BACKFILL, ProposedAction.RERUN}


@cache
def plan_json_schema() -> dict[str, Any]:
    return json.loads(files("schemas").joinpath("json/backfill_plan.schema.json").read_text())


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def plan_backfill(engine: Engine, spec: DatasetSpec, manifests: list[SourceManifest], start: date, end: date,
                  first_partition: date, mode: str, only_gaps: bool, operator: str, report_path: str,
                  marts: MartGraph | None = None) -> list[dict[str, Any]]:
    """One plan entry per partition in [max(start, first_partition), end]: one query, no per-partition work in
    Prefect. With `marts`, each entry to ingest names the mart partitions it will make stale."""
    by_day: dict[date, list[SourceManifest]] = defaultdict(list)
    for manifest in manifests:
        if manifest.dataset == spec.name:
            by_day[manifest.partition_key].append(manifest)
    lo = max(start, first_partition)
    with reading(engine) as conn:
        states = {row.partition_key: row for row in conn.execute(select(partition_state).where(and_(
            partition_state.c.dataset == spec.name,
            partition_state.c.partition_key >= lo.isoformat(),
            partition_state.c.partition_key <= end.isoformat())))}
        untrusted = untrusted_partitions(conn, spec.name)
    targets = [spec.bronze_table, spec.silver_table, "quarantine"]
    entries = []
    for day in _days(lo, end) if lo <= end else []:
        delivered = delivery_order(by_day.get(day, []))
        state = states.get(day.isoformat())
        fingerprint = source_fingerprint(delivered) if delivered else None
        if not delivered:
            gap = GapReason.NO_INPUT_DECLARED
        elif state is None:
            gap = GapReason.MISSING_PARTITION
        elif state.status == PartitionStatus.FAILED:
            gap = GapReason.FAILED_PARTITION
        elif state.status == PartitionStatus.HELD:
            gap = GapReason.HELD_PARTITION
        elif day.isoformat() in untrusted:
            gap = GapReason.UNTRUSTED_PARTITION
        elif state.source_fingerprint != fingerprint:
            gap = GapReason.SOURCE_FINGERPRINT_CHANGED
        else:
            gap = GapReason.UP_TO_DATE
        action = ACTIONS[gap][0]
        if action is ProposedAction.SKIP and not only_gaps:
            action = ProposedAction.RERUN
        window_start, window_end = partition_window(day)
        entries.append({
            "partition_key": day.isoformat(),
            "window_start": window_start.isoformat(),
            "window_end": window_end.isoformat(),
            "mode": mode,
            "upstream_manifest_id": delivered[-1].manifest_id if delivered else None,
            "upstream_manifest_ids": [m.manifest_id for m in delivered],
            "expected_input_count": sum(a.record_count for m in delivered for a in m.assets),
            "current_output_count": state.output_count if state else None,
            "current_status": (PartitionStatus.UNTRUSTED.value if gap is GapReason.UNTRUSTED_PARTITION
                               else state.status) if state
            else (PartitionStatus.MISSING.value if delivered else PartitionStatus.NO_INPUT.value),
            "gap_reason": gap.value,
            "proposed_action": action.value,
            "idempotency_guard": (
                f"batch {batch_id_for(spec.name, day, fingerprint)} = (dataset, partition, source fingerprint "
                f"{fingerprint[:12]}); bronze keyed by {spec.event_key}, silver newer-wins by "
                f"({spec.ordering_column}, {spec.event_key})" if fingerprint else "nothing to write"),
            "downstream_impact": (
                f"{spec.silver_table} rows of the {spec.entity_key}s this partition touches may change; "
                "consumers of this partition wait for its checks" if action in INGESTING else "none"),
            "stale_marts": marts.affected(spec.name, day) if marts is not None and action in INGESTING else [],
            "operator": operator,
            "target_assets": targets if action in INGESTING else [],
            "report_path": report_path,
        })
    return entries


def write_plan(report_dir: Path, dataset: str, start: date, end: date, mode: str, only_gaps: bool,
               operator: str, reason_code: str | None, build) -> tuple[Path, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Write `{report_dir}/backfill/{id}.json`, validated against the plan schema; `build(path)` makes the entries."""
    created = datetime.now(timezone.utc)
    backfill_id = f"{dataset}-{start}-{end}-{created:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    path = report_dir / "backfill" / f"{backfill_id}.json"
    plan = {
        "backfill_id": backfill_id, "dataset": dataset, "start": start.isoformat(), "end": end.isoformat(),
        "mode": mode, "only_gaps": only_gaps, "operator": operator, "reason_code": reason_code,
        "created_at": created.isoformat(), "entries": build(str(path)),
    }
    jsonschema.Draft202012Validator(plan_json_schema(), format_checker=jsonschema.FormatChecker()).validate(plan)
    write_atomic(path, json.dumps(plan, indent=2) + "\n")
    return path, plan
