"""Checks a dataset declares: what each measures and the limits above which it warns or holds."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CheckName(StrEnum):
    RECONCILE = "reconcile"
    ENTITY_KEY_UNIQUE = "entity_key_unique"
    NULL_RATIO = "null_ratio"
    QUARANTINE_RATIO = "quarantine_ratio"
    ROW_COUNT_CHANGE = "row_count_change"
    FRESHNESS = "freshness"
    SCHEMA_DRIFT = "schema_drift"
    SILVER_CONSISTENCY = "silver_consistency"


class Severity(StrEnum):
    WARN = "warn"  # reported; downstream still gets the partition
    ERROR = "error"  # holds the partition: downstream must not consume it


class CheckStatus(StrEnum):
    PASS = "pass"
    WARN = "warn"  # above the warn limit
    FAIL = "fail"  # above the error limit: the partition is held
    SKIPPED = "skipped"  # nothing to measure (no previous partition, no events)


# What each check's observed value is; the runbook and `datafactory checks` show these.
CHECK_DOCS: dict[CheckName, str] = {
    CheckName.RECONCILE: "count equations of the run that do not hold (declared = read, total = valid + invalid, ...)",
    CheckName.ENTITY_KEY_UNIQUE: "entity keys appearing more than once in silver, among the entities the partition touched",
    CheckName.NULL_RATIO: "greatest share of nulls in a required silver column, over the entities the partition touched",
    CheckName.QUARANTINE_RATIO: "share of the partition's records that went to quarantine",
    CheckName.ROW_COUNT_CHANGE: "relative change of valid events against the previous partition with output",
    CheckName.FRESHNESS: "hours between the newest accepted event and the end of the partition window",
    CheckName.SCHEMA_DRIFT: "source fields outside the registered contract, plus required fields no record carried",
    CheckName.SILVER_CONSISTENCY: "touched entities whose silver row is not their greatest event in bronze",
}


@dataclass(frozen=True)
class CheckSpec:
    """One declared check: above `warn_above` it warns, above `error_above` it holds the partition."""

    name: CheckName
    warn_above: float | None = None
    error_above: float | None = None

    @property
    def severity(self) -> Severity:
        return Severity.ERROR if self.error_above is not None else Severity.WARN


DEFAULT_CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec(CheckName.RECONCILE, error_above=0),
    CheckSpec(CheckName.ENTITY_KEY_UNIQUE, error_above=0),
    CheckSpec(CheckName.NULL_RATIO, error_above=0.0),
    CheckSpec(CheckName.QUARANTINE_RATIO, warn_above=0.05, error_above=0.25),
    CheckSpec(CheckName.ROW_COUNT_CHANGE, warn_above=0.5),
    CheckSpec(CheckName.FRESHNESS, warn_above=24.0),
    CheckSpec(CheckName.SCHEMA_DRIFT, warn_above=0),
    CheckSpec(CheckName.SILVER_CONSISTENCY, error_above=0),
)
