"""replay_flow: re-consume exactly the inputs one manifest declares, fingerprints verified."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.states import Failed, State

from flows.partition import partition_flow, summary_of
from schemas.reason_codes import Action, ActionReason
from schemas.settings import load_settings
from schemas.summary import PartitionSummary
from tasks.manifests import find_manifest, verify_manifests


@flow(name="replay-flow")
def replay_flow(
    manifest_id: str,
    reason_code: ActionReason = ActionReason.OPERATOR_REQUEST,
    accept_changed: bool = False,
    operator: str = "datafactory",
) -> PartitionSummary | State:
    """Replay one delivery. A changed source file stops the replay (source_fingerprint_changed)
    unless `accept_changed`; replaying unchanged, already ingested inputs changes no table.
    Ends in the partition run's state: Failed, naming the check, when a check held the partition.

    Args:
        manifest_id: the delivery to re-consume (a manifest_id from FACTORY_MANIFEST_DIR)
        reason_code: why, e.g. operator_request, duplicate_delivery
        accept_changed: take changed source files as they are now instead of refusing them
        operator: who asked for it, for the decision log
    """
    settings = load_settings()
    manifest = find_manifest(Path(settings.manifest_dir), manifest_id, Path(settings.landing_dir))
    verify_manifests([manifest], settings.manifest_root(manifest.dataset), accept_changed)
    state = partition_flow(dataset=manifest.dataset, partition_key=manifest.partition_key, action=Action.REPLAY,
                           reason_code=reason_code, manifest_id=manifest_id, force=True, operator=operator,
                           accept_changed=accept_changed, return_state=True)
    summary = summary_of(state)
    return Failed(message=state.message, data=summary) if summary.status == "held" else summary
