"""Reason codes and actions (DESIGN section 10): one enum each, documented once, reused everywhere."""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """What an operator (or the factory) did to a partition."""

    RUN = "run"
    RERUN = "rerun"
    REPLAY = "replay"
    BACKFILL = "backfill"
    RESTORE = "restore"
    RETRY = "retry"


class Mode(StrEnum):
    EXECUTE = "execute"
    DRY_RUN = "dry-run"


class ActionReason(StrEnum):
    """Why an action was taken."""

    MISSING_PARTITION = "missing_partition"
    MISSING_PARTITION_REPORT = "missing_partition_report"
    FAILED_PARTITION = "failed_partition"
    HELD_PARTITION = "held_partition"
    SOURCE_FINGERPRINT_CHANGED = "source_fingerprint_changed"
    SCHEMA_VIOLATION = "schema_violation"
    DUPLICATE_DELIVERY = "duplicate_delivery"
    LATE_ARRIVING_DATA = "late_arriving_data"
    CHECKS_FAILED = "checks_failed"
    TRANSIENT_ERROR = "transient_error"
    OPTIONAL_DEPENDENCY_UNAVAILABLE = "optional_dependency_unavailable"
    UNTRUSTED_STATE = "untrusted_state"
    OPERATOR_REQUEST = "operator_request"
    SCHEDULED = "scheduled"


class QuarantineReason(StrEnum):
    """Why a record is in quarantine instead of bronze."""

    MALFORMED_RECORD = "malformed_record"  # not parseable as one record
    SCHEMA_VIOLATION = "schema_violation"  # detail names the column and the check
    FUTURE_EVENT = "future_event"  # dated after its partition window's end
    CONFLICTING_DUPLICATE = "conflicting_duplicate"  # same event_id, different content


ACTION_REASON_DOCS: dict[ActionReason, str] = {
    ActionReason.MISSING_PARTITION: "inputs are declared but the partition was never materialized",
    ActionReason.MISSING_PARTITION_REPORT: "the partition has data but no run evidence",
    ActionReason.FAILED_PARTITION: "the last run of the partition failed",
    ActionReason.HELD_PARTITION: "an error check held the partition",
    ActionReason.SOURCE_FINGERPRINT_CHANGED: "the declared inputs changed since the last success",
    ActionReason.SCHEMA_VIOLATION: "records broke the data contract",
    ActionReason.DUPLICATE_DELIVERY: "the same inputs were delivered again",
    ActionReason.LATE_ARRIVING_DATA: "a delivery carried events older than its window",
    ActionReason.CHECKS_FAILED: "checks failed after materialization",
    ActionReason.TRANSIENT_ERROR: "a transient infrastructure error (connection, throttling)",
    ActionReason.OPTIONAL_DEPENDENCY_UNAVAILABLE: "an optional service was unavailable",
    ActionReason.UNTRUSTED_STATE: "current state cannot be trusted and must be rebuilt",
    ActionReason.OPERATOR_REQUEST: "an operator asked for it",
    ActionReason.SCHEDULED: "the daily schedule started it",
}

QUARANTINE_REASON_DOCS: dict[QuarantineReason, str] = {
    QuarantineReason.MALFORMED_RECORD: "the line is not one parseable JSON object (or CSV row)",
    QuarantineReason.SCHEMA_VIOLATION: "a field broke the contract; the detail names column and check",
    QuarantineReason.FUTURE_EVENT: "the event is dated at or after the end of its delivery day",
    QuarantineReason.CONFLICTING_DUPLICATE: "an event_id already delivered with different content",
}
