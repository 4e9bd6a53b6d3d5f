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


# The decision-log action of a verify: not a run (no attempt, no evidence), a judgement of the partition
VERIFY_ACTION = "verify"


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
    SCHEMA_CHANGE = "schema_change"


class RunStatus(StrEnum):
    """How a partition run ended (its evidence's `status`; `ingest_run.status` holds the committed ones)."""

    RUNNING = "running"  # the ledger only: an attempt in progress (or one that died: health closes it)
    SUCCEEDED = "succeeded"
    HELD = "held"  # committed, but an error check holds it back from downstream
    SKIPPED = "skipped"  # already up to date from the same inputs
    FAILED = "failed"
    ABANDONED = "abandoned"  # the ledger only: an attempt whose worker died, closed by health
    DRY_RUN = "dry_run"  # the evidence only: nothing was committed
    NO_INPUT = "no_input"  # the evidence only: no manifest declares the partition


class PartitionStatus(StrEnum):
    """What a partition holds now (`status`, the calendar strip, the backfill plan's `current_status`)."""

    SUCCEEDED = "succeeded"
    HELD = "held"
    FAILED = "failed"
    UNTRUSTED = "untrusted"  # verify found its stored state damaged
    MISSING = "missing"  # inputs declared, never materialized
    NO_INPUT = "no_input"  # no manifest declares it


class GapReason(StrEnum):
    """Why a backfill plan proposes what it proposes for a partition."""

    UP_TO_DATE = "up_to_date"
    MISSING_PARTITION = "missing_partition"
    NO_INPUT_DECLARED = "no_input_declared"
    FAILED_PARTITION = "failed_partition"
    HELD_PARTITION = "held_partition"
    UNTRUSTED_PARTITION = "untrusted_partition"
    SOURCE_FINGERPRINT_CHANGED = "source_fingerprint_changed"


class ProposedAction(StrEnum):
    """What a backfill plan does with a partition."""

    SKIP = "skip"
    BACKFILL = "backfill"
    RERUN = "rerun"
    HOLD = "hold"


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
    ActionReason.SCHEMA_CHANGE: "the dataset's contract changed; rows are rebuilt from bronze under it",
}

QUARANTINE_REASON_DOCS: dict[QuarantineReason, str] = {
    QuarantineReason.MALFORMED_RECORD: "the line is not one parseable JSON object (or CSV row)",
    QuarantineReason.SCHEMA_VIOLATION: "a field broke the contract; the detail names column and check",
    QuarantineReason.FUTURE_EVENT: "the event is dated at or after the end of its delivery day",
    QuarantineReason.CONFLICTING_DUPLICATE: "an event_id already delivered with different content",
}


class VerifyReason(StrEnum):
    """What `datafactory verify` (and health) found wrong with a partition's current state."""

    LEDGER_RUN_MISSING = "ledger_run_missing"
    LEDGER_SNAPSHOT_MISSING = "ledger_snapshot_missing"
    CHECKS_MISSING = "checks_missing"
    WAREHOUSE_ROWS_MISSING = "warehouse_rows_missing"
    WAREHOUSE_ROWS_CHANGED = "warehouse_rows_changed"
    SILVER_INCONSISTENT = "silver_inconsistent"
    SILVER_ROWS_CHANGED = "silver_rows_changed"
    QUARANTINE_ROWS_MISSING = "quarantine_rows_missing"
    QUARANTINE_ROWS_UNEXPECTED = "quarantine_rows_unexpected"
    LAKE_MARKER_MISSING = "lake_marker_missing"
    LAKE_MARKER_INVALID = "lake_marker_invalid"
    LAKE_MARKER_STALE = "lake_marker_stale"
    SNAPSHOT_RECORD_MISSING = "snapshot_record_missing"
    SNAPSHOT_RECORD_CHANGED = "snapshot_record_changed"
    SNAPSHOT_RECORD_INVALID = "snapshot_record_invalid"
    LAKE_FILE_MISSING = "lake_file_missing"
    LAKE_FILE_CORRUPT = "lake_file_corrupt"
    EVIDENCE_MISSING = "evidence_missing"
    EVIDENCE_INVALID = "evidence_invalid"


VERIFY_REASON_DOCS: dict[VerifyReason, tuple[str, str]] = {  # reason -> (what it means, what to do)
    VerifyReason.LEDGER_RUN_MISSING: ("partition state names a run the ledger lacks or that never committed",
                                      "rerun the partition"),
    VerifyReason.LEDGER_SNAPSHOT_MISSING: ("the ledger records no current lake snapshot for a committed partition",
                                           "rerun the partition"),
    VerifyReason.CHECKS_MISSING: ("the run behind the partition has no stored check results", "rerun the partition"),
    VerifyReason.WAREHOUSE_ROWS_MISSING: ("events of the current snapshot are missing from bronze",
                                          "rerun the partition (bronze rows are written again)"),
    VerifyReason.WAREHOUSE_ROWS_CHANGED: ("bronze rows differ in content from the current snapshot's events",
                                          "investigate: someone edited bronze; restore or rerun"),
    VerifyReason.SILVER_INCONSISTENT: ("silver rows are not their entity's greatest bronze event",
                                       "restore the partition's current snapshot (silver is rebuilt)"),
    VerifyReason.SILVER_ROWS_CHANGED: ("silver rows differ in content from the event they name (deep)",
                                       "restore the partition's current snapshot (silver is rebuilt)"),
    VerifyReason.QUARANTINE_ROWS_MISSING: ("fewer quarantine rows than the committed run quarantined",
                                           "rerun the partition (quarantine rows are written again)"),
    VerifyReason.QUARANTINE_ROWS_UNEXPECTED: ("more quarantine rows than the committed run quarantined",
                                              "investigate: rows were added by hand"),
    VerifyReason.LAKE_MARKER_MISSING: ("the lake has no manifest.json for a committed partition",
                                       "rerun the partition (a skip moves the marker back)"),
    VerifyReason.LAKE_MARKER_INVALID: ("manifest.json is not the current snapshot's record", "rerun the partition"),
    VerifyReason.LAKE_MARKER_STALE: ("manifest.json or _SUCCESS names another snapshot than the ledger",
                                     "rerun the partition (a skip moves the marker)"),
    VerifyReason.SNAPSHOT_RECORD_MISSING: ("a committed snapshot's record is gone", "current: rerun; older: none"),
    VerifyReason.SNAPSHOT_RECORD_CHANGED: ("a snapshot record differs from what the ledger committed",
                                           "current: rerun, or restore an older snapshot"),
    VerifyReason.SNAPSHOT_RECORD_INVALID: ("a snapshot record names another dataset, partition or files",
                                           "current: rerun, or restore an older snapshot"),
    VerifyReason.LAKE_FILE_MISSING: ("a data file a snapshot lists is gone", "current: rerun, or restore an older one"),
    VerifyReason.LAKE_FILE_CORRUPT: ("a data file's size (or with --deep its sha256) differs from its record",
                                     "current: rerun, or restore an older one"),
    VerifyReason.EVIDENCE_MISSING: ("the run behind the partition left no evidence file", "rerun the partition"),
    VerifyReason.EVIDENCE_INVALID: ("the evidence file does not parse, breaks its schema or names another run",
                                    "rerun the partition"),
}