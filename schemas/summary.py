"""The typed result of one partition run: every count of DESIGN section 7 and the ids behind it."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field


class PartitionSummary(BaseModel):
    dataset: str
    partition_key: date
    mode: str
    action: str
    reason_code: str
    status: str  # succeeded, skipped, failed, dry_run
    batch_id: str
    run_id: str | None = None
    flow_run_id: str | None = None
    attempt: int | None = None
    source_fingerprint: str
    manifest_ids: list[str]
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
    waited_for: str | None = None
    message: str = ""

    def reconcile(self) -> dict[str, bool]:
        """The equations evidence must prove; all True, or a reason code explains the gap."""
        if self.status in ("skipped", "no_input"):
            return {}
        return {
            "declared_equals_read": self.declared_records == self.total,
            "total_equals_valid_plus_invalid": self.total == self.valid + self.invalid,
            "invalid_equals_sum_of_reasons": self.invalid == sum(self.invalid_by_reason.values()),
            "valid_equals_duplicates_plus_bronze": self.valid
            == self.duplicate_in_batch + self.bronze_inserted + self.bronze_existing,
            "entities_equal_silver_outcomes": self.distinct_entities
            == self.silver_inserted + self.silver_updated + self.silver_unchanged + self.silver_stale_skipped,
        }

    @property
    def reconciled(self) -> bool:
        return all(self.reconcile().values())
