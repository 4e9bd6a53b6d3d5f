"""Per-partition state for `datafactory status`: ledger state joined with the last decision."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine, select

from schemas.tables import decision_log, partition_state
from tasks.database import reading
from tasks.verify import untrusted_partitions


def partition_status(engine: Engine, dataset: str, declared: set[date],
                     start: date | None = None, end: date | None = None) -> list[dict[str, Any]]:
    """One row per partition in [start, end] (default: every known partition), missing ones included."""
    with reading(engine) as conn:
        states = {r.partition_key: r for r in conn.execute(
            select(partition_state).where(partition_state.c.dataset == dataset))}
        decisions: dict[str, Any] = {}
        for r in conn.execute(select(decision_log).where(decision_log.c.dataset == dataset)
                              .order_by(decision_log.c.id)):
            decisions[r.partition_key] = r  # the last one wins
        untrusted = untrusted_partitions(conn, dataset)
    known = {date.fromisoformat(k) for k in states} | declared
    if not known and (start is None or end is None):
        return []
    first = start or min(known)
    last = end or max(known)
    rows = []
    for n in range((last - first).days + 1):
        day = first + timedelta(days=n)
        key = day.isoformat()
        state, decision = states.get(key), decisions.get(key)
        status = state.status if state else ("missing" if day in declared else "no_input")
        if state is not None and key in untrusted:  # verify found its current state does not hold up
            status = "untrusted"
        rows.append({
            "partition": key,
            "status": status,
            "outputs": state.output_count if state else None,
            "last_action": decision.action if decision else None,
            "reason": decision.reason_code if decision else None,
            "outcome": decision.outcome if decision else None,
            "updated_at": state.updated_at.isoformat(timespec="seconds") if state else None,
            "run_id": state.run_id if state else None,
            "findings": sorted(set(untrusted.get(key, []))),
        })
    return rows
