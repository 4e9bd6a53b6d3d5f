"""Which mart partitions exist, what each would read now, and whether what it last read is still that.

A mart partition D exists when every anchor upstream (a window holding day 0) has partition D. Its
inputs are, per upstream, the partitions of its window that have a committed snapshot: the current
one, or under policy `refresh` the last good one of a held partition. It is fresh when it was computed
from exactly those (upstream, partition, snapshot) and the same model file; otherwise it is missing,
stale (naming what changed) or failed, and recomputed; held while an input is held (policy `hold`).
Everything is read from the ledger (lake_current, partition_state, mart_partition), never the lake.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, and_, select

from schemas.mart_models import Freshness, MartModel, MartPolicy, MartState
from schemas.reason_codes import RunStatus
from schemas.tables import ingest_run, lake_current, lake_snapshot, mart_input, mart_partition, mart_run, partition_state
from tasks.mart_models import MartGraph
from tasks.verify import untrusted_partitions

Key = tuple[str, str]  # (table, partition)


@dataclass(frozen=True)
class InputSnapshot:
    upstream: str
    partition: str
    snapshot_id: str
    fallback: bool = False  # the partition is held: its last good snapshot is read (policy refresh)

    def as_list(self) -> list[str]:
        return [self.upstream, self.partition, self.snapshot_id]


@dataclass
class PartitionPlan:
    mart: str
    day: date
    freshness: Freshness
    why: str  # what changed, or why it waits
    inputs: list[InputSnapshot] = field(default_factory=list)
    held_by: list[str] = field(default_factory=list)  # "upstream/partition" of held inputs

    @property
    def partition(self) -> str:
        return self.day.isoformat()

    @property
    def to_compute(self) -> bool:
        return self.freshness in (Freshness.MISSING, Freshness.STALE, Freshness.FAILED)

    def as_dict(self) -> dict[str, Any]:
        return {"mart": self.mart, "partition_key": self.partition, "freshness": self.freshness.value,
                "why": self.why, "held_by": self.held_by,
                "inputs": [{"upstream": i.upstream, "partition_key": i.partition, "snapshot_id": i.snapshot_id,
                            "last_good": i.fallback} for i in self.inputs]}


def inputs_fingerprint(inputs: list[InputSnapshot]) -> str:
    return hashlib.sha256(json.dumps(sorted(i.as_list() for i in inputs)).encode()).hexdigest()


@dataclass
class LedgerView:
    """What the ledger says of a mart's upstreams, read once per mart."""

    current: dict[Key, str]  # committed, current snapshot of each partition
    blocked: dict[Key, str]  # partitions a downstream must not read as they are: why
    good: dict[Key, str]  # the last good snapshot of each blocked partition (policy refresh)
    recorded: dict[str, Any]  # this mart's mart_partition rows by partition
    consumed: dict[str, set[tuple[str, str, str]]]  # this mart's recorded inputs by partition

    def partitions(self, name: str) -> list[str]:
        known = {p for (n, p) in self.current if n == name} | {p for (n, p) in self.blocked if n == name}
        return sorted(known)


def _good_dataset_snapshots(conn: Connection, dataset: str, partitions: list[str]) -> dict[Key, str]:
    """Per partition, the newest retained snapshot an ingest run committed without being held."""
    rows = conn.execute(
        select(lake_snapshot.c.partition_key, lake_snapshot.c.snapshot_id)
        .join(ingest_run, ingest_run.c.run_id == lake_snapshot.c.run_id)
        .where(lake_snapshot.c.dataset == dataset, lake_snapshot.c.partition_key.in_(partitions),
               lake_snapshot.c.retired_at.is_(None), ingest_run.c.status == RunStatus.SUCCEEDED.value)
        .order_by(lake_snapshot.c.committed_at)).all()
    return {(dataset, str(p)): str(s) for p, s in rows}


def _good_mart_snapshots(conn: Connection, mart: str, partitions: list[str]) -> dict[Key, str]:
    rows = conn.execute(
        select(mart_run.c.partition_key, mart_run.c.snapshot_id)
        .join(lake_snapshot, lake_snapshot.c.snapshot_id == mart_run.c.snapshot_id)
        .where(mart_run.c.mart == mart, mart_run.c.partition_key.in_(partitions),
               mart_run.c.status == MartState.SUCCEEDED.value, lake_snapshot.c.retired_at.is_(None))
        .order_by(mart_run.c.finished_at)).all()
    return {(mart, str(p)): str(s) for p, s in rows}


def _unusable_dataset_partitions(conn: Connection, dataset: str) -> list[str]:
    """Partitions downstream must not read as they are: held, or failed after a held run committed their
    current snapshot (a failed rerun leaves the held snapshot current)."""
    held: list[str] = list(conn.execute(select(partition_state.c.partition_key).where(and_(
        partition_state.c.dataset == dataset, partition_state.c.status == RunStatus.HELD.value))).scalars())
    failed_on_held: list[str] = list(conn.execute(
        select(partition_state.c.partition_key)
        .join(lake_current, and_(lake_current.c.dataset == partition_state.c.dataset,
                                 lake_current.c.partition_key == partition_state.c.partition_key))
        .join(lake_snapshot, lake_snapshot.c.snapshot_id == lake_current.c.snapshot_id)
        .join(ingest_run, ingest_run.c.run_id == lake_snapshot.c.run_id)
        .where(partition_state.c.dataset == dataset, partition_state.c.status == RunStatus.FAILED.value,
               ingest_run.c.status != RunStatus.SUCCEEDED.value)).scalars())
    return sorted(set(held) | set(failed_on_held))


def read_ledger(conn: Connection, graph: MartGraph, model: MartModel) -> LedgerView:
    current: dict[Key, str] = {}
    blocked: dict[Key, str] = {}
    good: dict[Key, str] = {}
    for upstream in model.upstreams:
        name = upstream.name
        current.update({(name, str(p)): str(s) for p, s in conn.execute(
            select(lake_current.c.partition_key, lake_current.c.snapshot_id).where(lake_current.c.dataset == name))})
        if name in graph.models:
            for p, status, detail in conn.execute(select(mart_partition.c.partition_key, mart_partition.c.status,
                                                         mart_partition.c.detail).where(mart_partition.c.mart == name)):
                if status != MartState.SUCCEEDED.value:
                    blocked[(name, str(p))] = f"{name}/{p} is {status}" + (f" ({detail})" if detail else "")
            mine = [p for (n, p) in blocked if n == name]
            good.update(_good_mart_snapshots(conn, name, mine) if mine else {})
        else:
            held = _unusable_dataset_partitions(conn, name)
            untrusted = untrusted_partitions(conn, name)  # verify found its current state wrong
            blocked.update({(name, p): f"{name}/{p} is held" for p in held})
            blocked.update({(name, p): f"{name}/{p} is untrusted ({', '.join(why)})" for p, why in untrusted.items()})
            unusable = sorted(set(held) | set(untrusted))
            good.update(_good_dataset_snapshots(conn, name, unusable) if unusable else {})
    recorded = {r.partition_key: r for r in conn.execute(select(mart_partition).where(mart_partition.c.mart == model.name))}
    consumed: dict[str, set[tuple[str, str, str]]] = {}
    for r in conn.execute(select(mart_input).where(mart_input.c.mart == model.name)):
        consumed.setdefault(r.partition_key, set()).add((r.upstream, r.upstream_partition, r.snapshot_id))
    return LedgerView(current, blocked, good, recorded, consumed)


def mart_days(view: LedgerView, model: MartModel) -> list[date]:
    """The days every anchor upstream has a partition of (committed, or held before its first snapshot)."""
    days: set[str] | None = None
    for anchor in model.anchors:
        mine = set(view.partitions(anchor.name))
        days = mine if days is None else days & mine
    return [date.fromisoformat(d) for d in sorted(days or set())]


def _what_changed(recorded: set[tuple[str, str, str]], now: list[InputSnapshot]) -> str:
    wanted = {(i.upstream, i.partition, i.snapshot_id) for i in now}
    added, gone = sorted(wanted - recorded), sorted(recorded - wanted)
    if added and gone and {a[:2] for a in added} == {g[:2] for g in gone}:
        return "new snapshot of " + ", ".join(f"{a[0]}/{a[1]}" for a in added[:3]) + (" …" if len(added) > 3 else "")
    parts = []
    if added:
        parts.append("reads " + ", ".join(f"{a[0]}/{a[1]}" for a in added[:3]) + (" …" if len(added) > 3 else ""))
    if gone:
        parts.append("no longer reads " + ", ".join(f"{g[0]}/{g[1]}@{g[2][:8]}" for g in gone[:3]))
    return "; ".join(parts) or "inputs changed"


def plan_partition(view: LedgerView, model: MartModel, day: date) -> PartitionPlan:
    inputs: list[InputSnapshot] = []
    held_by: list[str] = []
    for upstream in model.upstreams:
        first = None if upstream.window.start is None else day + timedelta(days=upstream.window.start)
        last = day + timedelta(days=upstream.window.end)
        for partition in view.partitions(upstream.name):
            if (first is not None and partition < first.isoformat()) or partition > last.isoformat():
                continue
            key = (upstream.name, partition)
            if key in view.blocked:
                if model.policy is MartPolicy.REFRESH and key in view.good:
                    inputs.append(InputSnapshot(upstream.name, partition, view.good[key], fallback=True))
                else:
                    held_by.append(f"{upstream.name}/{partition}" + (" (untrusted)" if "untrusted" in view.blocked[key]
                                                                      else ""))
            elif key in view.current:
                inputs.append(InputSnapshot(upstream.name, partition, view.current[key]))
    recorded = view.recorded.get(day.isoformat())
    if held_by:
        return PartitionPlan(model.name, day, Freshness.HELD, "input held: " + ", ".join(held_by[:3]), inputs, held_by)
    if recorded is None:
        return PartitionPlan(model.name, day, Freshness.MISSING, "never computed", inputs)
    if recorded.status == MartState.FAILED.value:
        return PartitionPlan(model.name, day, Freshness.FAILED, "its last computation failed", inputs)
    if recorded.held_by:
        return PartitionPlan(model.name, day, Freshness.STALE, "released: its held inputs are not held now", inputs)
    if recorded.model_fingerprint != model.fingerprint:
        return PartitionPlan(model.name, day, Freshness.STALE, f"model {model.path.name} changed", inputs)
    if recorded.inputs_fingerprint != inputs_fingerprint(inputs):
        return PartitionPlan(model.name, day, Freshness.STALE,
                             _what_changed(view.consumed.get(day.isoformat(), set()), inputs), inputs)
    return PartitionPlan(model.name, day, Freshness.FRESH, "computed from these inputs", inputs)


def plan_mart(conn: Connection, graph: MartGraph, model: MartModel, start: date | None = None,
              end: date | None = None) -> list[PartitionPlan]:
    """Every partition of the mart in [start, end], with its freshness and the inputs it would read now."""
    view = read_ledger(conn, graph, model)
    days = [d for d in mart_days(view, model) if (start is None or d >= start) and (end is None or d <= end)]
    return [plan_partition(view, model, day) for day in days]
