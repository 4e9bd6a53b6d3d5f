"""Hypothesis strategies for hostile deliveries: JSONL lines built as text, so keys can be escaped or
repeated, values of the wrong type, NULs, odd Unicode, invalid UTF-8, deep nesting, huge numbers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from hypothesis import strategies as st

FIELDS = ["event_id", "ticket_id", "event_type", "created_at", "updated_at", "status", "priority", "channel",
          "customer_id", "subject", "body", "product_line", "tags"]
ENUMS = {
    "event_type": ["created", "updated", "commented", "status_changed", "closed"],
    "status": ["new", "open", "pending", "on_hold", "solved", "closed"],
    "priority": ["low", "normal", "high", "urgent"],
    "channel": ["email", "chat", "phone", "web", "api"],
}
# text a hostile producer sends: NUL and other controls, RTL marks, combining marks, emoji, full-width
# and Arabic-Indic digits, line separators, quotes and backslashes
ODD_TEXT = st.text(alphabet=st.sampled_from(
    ["a", "Z", "0", " ", "\x00", "\x01", "\t", "\n", "\u200f", "\u0301", "é", "😀", "\u2028", "\ufeff", '"', "\\",
     "١", "９", "\uffff", "𝔸", "/"]), max_size=12)


def _stamp(moment: datetime, form: int) -> str:
    return moment.strftime(["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%d %H:%M:%S+00:00"][form])


@st.composite
def valid_event(draw: st.DrawFn, day: datetime) -> dict:
    """A contract-valid event dated inside (or before) `day`; few ids and tickets, so duplicates,
    conflicts and ties on updated_at are common."""
    updated = day + timedelta(hours=draw(st.sampled_from([1, 9, 23]))) - timedelta(days=draw(st.sampled_from([0, 0, 2])))
    form = draw(st.integers(0, 2))
    return {
        "event_id": draw(st.sampled_from(["E-1", "E-2", "e-2", "E-3", "E\u0301-4", "E-😀"])),
        "ticket_id": draw(st.sampled_from(["TCK-000001", "TCK-000002", "TCK-0000003"])),
        "event_type": draw(st.sampled_from(ENUMS["event_type"])),
        "created_at": _stamp(updated - timedelta(hours=draw(st.sampled_from([0, 1]))), form),
        "updated_at": _stamp(updated, form),
        "status": draw(st.sampled_from(ENUMS["status"])),
        "priority": draw(st.sampled_from(ENUMS["priority"])),
        "channel": draw(st.sampled_from(ENUMS["channel"])),
        "customer_id": draw(st.sampled_from(["C-1", "C-\u200f2"])),
        "subject": draw(st.sampled_from(["s", "Überweisung", "a\\b", 'say "hi"'])),
        "body": draw(st.sampled_from(["", "line\nbreak", "tab\there"])),
        "product_line": draw(st.sampled_from([None, "billing"])),
        "tags": draw(st.lists(st.sampled_from(["a", "b", "ü"]), max_size=2)),
    }


HOSTILE_VALUES = st.one_of(
    st.integers(-10, 10**20), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(),
    st.just({"nested": "object"}), st.lists(st.integers(0, 3), max_size=2), ODD_TEXT,
    st.just("x" * 300), st.just("TCK-١٢٣٤٥٦"), st.just("TCK-" + "1" * 40), st.just("2026-04-17T09:00:00Z\n"),
)


def _key_text(key: str, escape: bool) -> str:
    if not escape:
        return json.dumps(key)
    return '"' + "".join(f"\\u{ord(c):04x}" if c.isalpha() else c for c in key) + '"'


@st.composite
def hostile_line(draw: st.DrawFn, day: datetime) -> bytes:
    """One line of a delivery: mostly events (some bent), sometimes no record at all."""
    kind = draw(st.sampled_from(["valid", "valid", "bent", "escaped_key", "repeated_key", "extra", "broken",
                                 "bytes"]))
    event = draw(valid_event(day))
    pairs = [(json.dumps(k), json.dumps(v)) for k, v in event.items()]
    if kind == "bent":
        field = draw(st.sampled_from(FIELDS))
        pairs = [(k, json.dumps(draw(HOSTILE_VALUES)) if k == json.dumps(field) else v) for k, v in pairs]
    elif kind == "escaped_key":
        field = draw(st.sampled_from(FIELDS))
        value = json.dumps(draw(st.one_of(st.just(event[field]), HOSTILE_VALUES)))
        pairs = [(_key_text(field, True), value) if k == json.dumps(field) else (k, v) for k, v in pairs]
    elif kind == "repeated_key":
        field = draw(st.sampled_from([*FIELDS, "extra"]))
        spaced = draw(st.sampled_from(["", " ", "\t", "  "]))  # `"k" :` is the same key as `"k":`
        pairs.append((_key_text(field, draw(st.booleans())) + spaced,
                      json.dumps(draw(st.one_of(st.just(event.get(field)), HOSTILE_VALUES)))))
    elif kind == "extra":
        pairs.append(('"meta"', draw(st.sampled_from(
            ['{"deep": ' + "[" * 600 + "]" * 600 + "}", "1e999", "NaN", "123456789012345678901234567890",
             '"\\ud800"', '"\\u0000"', '{"subject": 5}', '{"k": 1, "k": 2}', "[" * 40 + "]" * 40]))))
    text = "{" + ", ".join(f"{k}: {v}" for k, v in draw(st.permutations(pairs))) + "}"
    if kind == "broken":
        text = draw(st.sampled_from([text[: len(text) // 2], "[1, 2]", '"just a string"', "null", text + " {}",
                                     text.replace('"', "'", 2), "{" + text, '{"event_id": "\\ud83d"}']))
    data = text.encode()
    if kind == "bytes":
        data = draw(st.sampled_from([data.replace(b'"s"', b'"\xff"'), data.replace(b'"s"', b'"a\x00b"'),
                                     data.replace(b", ", b",\t", 1), data + b"\r", b"\xef\xbb\xbf" + data]))
    return data


@st.composite
def hostile_delivery(draw: st.DrawFn, day: datetime) -> bytes:
    lines = draw(st.lists(hostile_line(day), min_size=1, max_size=12))
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), b"   ")
    head = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    return head + b"\n".join(lines) + (b"\n" if draw(st.booleans()) else b"")


DAY = datetime(2026, 4, 17, tzinfo=timezone.utc)
