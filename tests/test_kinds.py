"""Property test of the field kinds (schemas/kinds.py): orders records whose every field may hold any JSON
value (numbers spelled any way, huge integers, NUL, odd Unicode, lists, objects), delivered as JSONL; the
reader and validator (bulk path and exact path alike) must judge each record as the independent oracle
does, and keep the values it accepts exactly (decimals from their text, never through a float)."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas.datasets import get_dataset
from tasks.generate import write_manifest
from tasks.manifests import partition_manifests, read_manifests
from tasks.validate import validate_batch
from tests.oracle import amount_of, order_violations, parse_line, parse_ts

SPEC = get_dataset("orders")
DAY = date(2026, 4, 17)

VALID = {
    "event_id": '"E-1"', "order_id": '"ORD-000001"', "customer_id": '"c"', "amount": "12.50", "currency": '"EUR"',
    "status": '"paid"', "item_count": "2", "is_gift": "false", "order_date": '"2026-04-16"',
    "updated_at": '"2026-04-17T09:00:00Z"', "weight_kg": "null", "tags": "[]", "attributes": "null",
}

number_text = st.from_regex(r"\A-?(0|[1-9][0-9]{0,21})(\.[0-9]{1,4})?([eE][+-]?[0-9]{1,3})?\Z")
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                   st.floats(allow_nan=False, allow_infinity=False), text,
                   st.sampled_from(["3", "19.99", "2026-04-16", "2026-02-30", "2026-04-17T08:00:00Z", "EUR",
                                    "ORD-000002", "paid", "a\x00b", "1.5e2", "-0.00", "١٢"]))
json_value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(text, inner, max_size=3)), max_leaves=6)
value_text = st.one_of(json_value.map(lambda v: json.dumps(v, ensure_ascii=False)), number_text)


@st.composite
def record_line(draw: st.DrawFn) -> str:
    """A record whose fields are mostly valid, a few anything at all."""
    fields = dict(VALID)
    for name in draw(st.lists(st.sampled_from(sorted(VALID)), max_size=3, unique=True)):
        fields[name] = draw(value_text)
    fields["event_id"] = json.dumps(f"E-{draw(st.integers(0, 10**6))}")
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}"


def _verdicts(lines: list[str]) -> tuple[dict[int, str], dict[int, dict]]:
    root = Path(tempfile.mkdtemp())
    source = root / "sources" / "orders.jsonl"
    source.parent.mkdir(parents=True)
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_manifest(root, "m-1", "orders", DAY, datetime(2026, 4, 17, 23, tzinfo=timezone.utc), [source])
    batch = validate_batch(SPEC, read_manifests(SPEC, partition_manifests(root, "orders", DAY), root), DAY)
    verdicts = {r["line_number"]: r["reason_code"] for r in batch.quarantine.iter_rows(named=True)}
    accepted = {r["_line_number"]: r for r in batch.events.iter_rows(named=True)}
    return verdicts, accepted


def _oracle(line: str) -> tuple[str | None, dict | None]:
    obj = parse_line(line.encode("utf-8"))
    if obj is None:
        return "malformed_record", None
    if order_violations(obj):
        return "schema_violation", None
    if parse_ts(obj["updated_at"]) >= datetime(2026, 4, 18, tzinfo=timezone.utc):
        return "future_event", None
    return None, obj


@settings(max_examples=int(os.environ.get("KIND_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(record_line(), min_size=1, max_size=8))
@example(lines=['{"event_id": "E-1", "amount": 19.990000000000002}'])
@example(lines=["{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in {**VALID, "amount": "123456789012.5"}.items()) + "}"])
@example(lines=["{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in {**VALID, "item_count": "9223372036854775808"}.items()) + "}"])
def test_every_kind_is_judged_as_the_oracle_judges_it_and_kept_exactly(lines: list[str]) -> None:
    verdicts, accepted = _verdicts(lines)
    for number, line in enumerate(lines, start=1):
        reason, obj = _oracle(line)
        assert verdicts.get(number) == reason, (line, verdicts.get(number))
        if obj is None:
            continue
        row = accepted[number]
        weight = obj["weight_kg"]
        assert (row["amount"], row["item_count"], row["is_gift"], row["order_date"].isoformat(), row["weight_kg"],
                row["tags"], None if row["attributes"] is None else json.loads(row["attributes"])) == (
            amount_of(obj["amount"]), obj["item_count"], obj["is_gift"], obj["order_date"],
            None if weight is None else float(weight), obj["tags"], obj["attributes"]), line
        assert isinstance(row["amount"], Decimal)
