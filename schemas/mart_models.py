"""What a mart model is: a DuckDB SQL file with a header (tasks/mart_models.py reads them).

    -- grain: dt                                   the mart's daily partition column (a DATE)
    -- upstream: tickets[all:0]                    a dataset or mart, and the days it reads
    -- upstream: ticket_sla_breaches               [0:0] when no window is given
    -- policy: hold                                or refresh (last good input)
    -- check: error unique(dt, priority, channel)  built-in checks, with severity
    -- check: warn row_count_change(0.5)
    -- check: error not_null(opened, solved)
    -- assert: error no_negative_backlog: SELECT * FROM this WHERE backlog < 0

A window `[a:b]` is relative to the mart's partition day D: upstream partitions D+a … D+b; `all`
for `a` means every partition up to D+b. An upstream whose window holds 0 is an *anchor*: a mart
partition D exists when every anchor has a committed partition D.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class MartPolicy(StrEnum):
    """What a mart partition does when one of its inputs is held."""

    HOLD = "hold"  # it is held too, until the input is released
    REFRESH = "refresh"  # it is computed from the input's last good snapshot


class MartState(StrEnum):
    """A mart partition as the ledger has it (`mart_partition.status`)."""

    SUCCEEDED = "succeeded"
    HELD = "held"  # an input is held (policy hold), or an error check on the mart failed
    FAILED = "failed"  # its last computation raised


class Freshness(StrEnum):
    """A mart partition as a plan sees it."""

    FRESH = "fresh"  # computed from exactly the inputs it would read now
    MISSING = "missing"  # never computed
    STALE = "stale"  # an input's snapshot, the input set or the model changed since it was computed
    HELD = "held"  # an input is held: it waits (policy hold)
    FAILED = "failed"  # its last computation failed: computed again


@dataclass(frozen=True)
class Window:
    start: int | None  # None: from the first partition
    end: int

    def holds_today(self) -> bool:
        return (self.start is None or self.start <= 0) and self.end >= 0

    def __str__(self) -> str:
        return f"[{'all' if self.start is None else self.start}:{self.end}]"


@dataclass(frozen=True)
class Upstream:
    name: str  # a dataset (its lake events) or another mart
    window: Window
    line: int


@dataclass(frozen=True)
class MartCheck:
    """A built-in check (unique, not_null, row_count_change) or an SQL assertion returning failing rows."""

    kind: str
    name: str
    severity: str  # warn, error
    line: int
    columns: tuple[str, ...] = ()
    threshold: float | None = None
    sql: str | None = None


@dataclass(frozen=True)
class MartModel:
    name: str
    path: Path
    grain: str
    upstreams: tuple[Upstream, ...]
    checks: tuple[MartCheck, ...]
    policy: MartPolicy
    sql: str
    fingerprint: str  # of the whole file: a changed model makes every partition stale
    columns: dict[str, str] = field(default_factory=dict)  # name -> DuckDB type, from binding the SQL

    @property
    def anchors(self) -> tuple[Upstream, ...]:
        return tuple(u for u in self.upstreams if u.window.holds_today())
