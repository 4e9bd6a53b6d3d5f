"""The run evidence contract itself: a valid 2020-12 schema, in step with the code's enums, and strict.

Every evidence file the suite writes is validated by the autouse `evidence_contract` fixture (conftest).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from schemas.checks import CheckName
from schemas.reason_codes import Action, ActionReason, QuarantineReason
from tasks.evidence import evidence_json_schema, validate_evidence

EXAMPLE = Path(__file__).parent / "data" / "evidence-example.json"


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(evidence_json_schema())


def test_the_schema_enums_match_the_code() -> None:
    props = evidence_json_schema()["properties"]
    assert set(props["reason_code"]["enum"]) == {r.value for r in ActionReason}
    assert set(props["action"]["enum"]) == {a.value for a in Action}
    assert set(props["checks"]["items"]["properties"]["name"]["enum"]) == {c.value for c in CheckName}
    assert set(props["counts"]["properties"]["invalid_by_reason"]["propertyNames"]["enum"]) == {
        q.value for q in QuarantineReason}


def test_the_example_evidence_validates() -> None:
    validate_evidence(json.loads(EXAMPLE.read_text()))


@pytest.mark.parametrize("breakage", ["no decision", "unknown decision", "extra field", "bad sha256"])
def test_evidence_without_a_clear_decision_or_inputs_is_rejected(breakage: str) -> None:
    evidence = copy.deepcopy(json.loads(EXAMPLE.read_text()))
    if breakage == "no decision":
        del evidence["downstream"]["decision"]
    elif breakage == "unknown decision":
        evidence["downstream"]["decision"] = "maybe"
    elif breakage == "extra field":
        evidence["counts"]["rows_we_lost"] = 3
    else:
        evidence["inputs"][0]["sha256"] = "abc"
    with pytest.raises(jsonschema.ValidationError):
        validate_evidence(evidence)
