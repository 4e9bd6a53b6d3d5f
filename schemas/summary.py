"""The typed result of one partition run: every count of DESIGN section 7, the checks, the ids behind it."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, Field


class Equation(BaseModel):
    """One reconcile equation with both sides, so evidence shows the numbers and not just a verdict."""

    name: str
    left: str
    left_value: int
    right: str
    right_value: int
    holds: bool
    explained_by: str | None = None  # a reason code that accounts for a gap, when one does


class RunCounts(BaseModel):
    """What a run read, rejected and wrote; the reconcile equations tie them together."""

    declared_records: int = 0
    total: int = 0
    valid: int = 0
    invalid: int = 0
    invalid_by_reason: dict[str, int] = Field(default_factory=dict)
    duplicate_in_batch: int = 0
    late_arriving: int = 0
    distinct_entities: int = 0
    bronze_inserted: int = 0
    bronze_existing: int = 0
    bronze_displaced: int = 0
    silver_inserted: int = 0
    silver_updated: int = 0
    silver_unchanged: int = 0
    silver_stale_skipped: int = 0
    quarantine_inserted: int = 0
    changed_sources_accepted: bool = False  # the run took edited source files as they are now

    def equations(self) -> list[Equation]:
        """The equations evidence must prove. A gap is fine only when a reason code explains it."""
        silver = self.silver_inserted + self.silver_updated + self.silver_unchanged + self.silver_stale_skipped
        rows = [
            ("declared_equals_read", "declared_records", self.declared_records, "total", self.total,
             "source_fingerprint_changed" if self.changed_sources_accepted else None),
            ("total_equals_valid_plus_invalid", "total", self.total, "valid + invalid", self.valid + self.invalid, None),
            ("invalid_equals_sum_of_reasons", "invalid", self.invalid, "sum(invalid_by_reason)",
             sum(self.invalid_by_reason.values()), None),
            ("valid_equals_duplicates_plus_bronze", "valid", self.valid,
             "duplicate_in_batch + bronze_inserted + bronze_existing",
             self.duplicate_in_batch + self.bronze_inserted + self.bronze_existing, None),
            ("entities_equal_silver_outcomes", "distinct_entities", self.distinct_entities,
             "silver_inserted + silver_updated + silver_unchanged + silver_stale_skipped", silver, None),
        ]
        return [Equation(name=name, left=left, left_value=lv, right=right, right_value=rv, holds=lv == rv,
                         explained_by=None if lv == rv else why)
                for name, left, lv, right, rv, why in rows]

    def unexplained(self) -> list[Equation]:
        return [e for e in self.equations() if not e.holds and e.explained_by is None]

    @property
    def output_count(self) -> int:
        """Distinct valid events of the partition, all in bronze now."""
        return self.bronze_inserted + self.bronze_existing


class CheckOutcome(BaseModel):
    """One check's verdict on one run."""

    name: str
    severity: str  # warn, error
    status: str  # pass, warn, fail, skipped
    observed: float | None
    warn_above: float | None
    error_above: float | None
    detail: str


class Downstream(BaseModel):
    """May downstream consume this partition? `hold` names the checks (or the reason) that stop it."""

    decision: str  # unblock, hold
    reason: str
    blocking_checks: list[str] = Field(default_factory=list)


class PartitionSummary(RunCounts):
    dataset: str
    partition_key: date
    mode: str
    action: str
    reason_code: str
    operator: str = ""
    status: str  # succeeded, held, skipped, failed, dry_run, no_input
    batch_id: str
    run_id: str | None = None
    flow_run_id: str | None = None
    attempt: int | None = None
    source_fingerprint: str
    manifest_ids: list[str]
    waited_for: str | None = None
    message: str = ""
    checks: list[CheckOutcome] = Field(default_factory=list)
    downstream: Downstream | None = None
    evidence_path: str | None = None
    lake_snapshot: dict[str, Any] | None = None  # snapshot id, rows, files, manifest key
    schema_changes: list[dict[str, Any]] = Field(default_factory=list)  # applied to the tables by this run

    def reconcile(self) -> dict[str, bool]:
        """Equation name -> holds (or is explained); empty when the run counted nothing (skip, no input)."""
        if self.status in ("skipped", "no_input", "failed"):
            return {}
        return {e.name: e.holds or e.explained_by is not None for e in self.equations()}

    @property
    def reconciled(self) -> bool:
        return all(self.reconcile().values())

    @property
    def blocking_checks(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.status == "fail"]

    def counts(self) -> dict[str, Any]:
        return RunCounts.model_validate(self.model_dump(include=set(RunCounts.model_fields))).model_dump()
