"""An independent oracle for DESIGN sections 6-7, in plain Python: no Polars, no Pandera, no SQL, no orjson.

Given every manifest of a dataset, it computes what bronze, silver and quarantine must hold after
all partitions are ingested, in any order: the earliest delivery of an event wins; silver holds each
ticket's greatest accepted event by (updated_at, event_id), compared as Python strings do (bytewise).

A line is a record when it is UTF-8 holding one strict JSON object (README, "What a record is"): no key
twice in one object, no NaN or Infinity, numbers a double can hold, no lone surrogate, nesting at most
512 deep. A leading byte order mark on the file is not part of its first line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

STRING_FIELDS = ["event_id", "ticket_id", "event_type", "created_at", "updated_at", "status", "priority",
                 "channel", "customer_id", "subject", "body", "product_line"]
ENUMS = {
    "event_type": {"created", "updated", "commented", "status_changed", "closed"},
    "status": {"new", "open", "pending", "on_hold", "solved", "closed"},
    "priority": {"low", "normal", "high", "urgent"},
    "channel": {"email", "chat", "phone", "web", "api"},
}
TIMESTAMP = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]{1,9})?([Zz]|[+-]00:?00)")
TICKET = re.compile(r"TCK-[0-9]{6,30}")
MAX_KEY = 200
MAX_DEPTH = 512


class NotARecord(ValueError):
    pass


def _pairs(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise NotARecord("a key twice")
    return dict(pairs)


def _constant(name: str) -> float:
    raise NotARecord(name)


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise NotARecord("overflow")
    return value


def _int(text: str) -> int:
    value = int(text)
    float(value)  # OverflowError: no double holds it
    return value


def _depth(text: str) -> int:
    """Nesting depth, skipping string contents (a plain scan, no regex)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _encodable(value: object) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, list):
        return all(_encodable(v) for v in value)
    if isinstance(value, dict):
        return all(_encodable(k) and _encodable(v) for k, v in value.items())
    return True


def parse_line(raw: bytes) -> dict | None:
    """The record a line holds, or None when it holds none (malformed)."""
    try:
        text = raw.decode("utf-8")
        if _depth(text) > MAX_DEPTH:
            return None
        obj = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float,
                         parse_int=_int)
    except (ValueError, OverflowError, RecursionError):
        return None
    return obj if isinstance(obj, dict) and _encodable(obj) else None


def parse_ts(text: str) -> datetime | None:
    match = TIMESTAMP.fullmatch(text)
    if not match:
        return None
    fraction = (match.group(3) or ".0")[1:7].ljust(6, "0")
    try:
        return datetime.fromisoformat(f"{match.group(1)}T{match.group(2)}.{fraction}+00:00")
    except ValueError:
        return None


def violations(obj: dict) -> list[str]:
    """Names of the fields that break the ticket contract."""
    bad = []
    for name in STRING_FIELDS:
        value = obj.get(name)
        if value is None:
            if name != "product_line":
                bad.append(name)
        elif not isinstance(value, str):
            bad.append(name)
    tags = obj.get("tags")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        bad.append("tags")
    for name in ("event_id", "customer_id", "subject"):
        if isinstance(obj.get(name), str) and obj[name] == "":
            bad.append(name)
    if isinstance(obj.get("event_id"), str) and len(obj["event_id"]) > MAX_KEY:
        bad.append("event_id")
    if isinstance(obj.get("ticket_id"), str) and not TICKET.fullmatch(obj["ticket_id"]):
        bad.append("ticket_id")
    for name in STRING_FIELDS:
        if isinstance(obj.get(name), str) and "\x00" in obj[name]:
            bad.append(name)
    if isinstance(tags, list) and any(isinstance(t, str) and "\x00" in t for t in tags):
        bad.append("tags")
    for name, allowed in ENUMS.items():
        if isinstance(obj.get(name), str) and obj[name] not in allowed:
            bad.append(name)
    stamps = {}
    for name in ("created_at", "updated_at"):
        if isinstance(obj.get(name), str):
            stamps[name] = parse_ts(obj[name])
            if stamps[name] is None:
                bad.append(name)
    if stamps.get("created_at") and stamps.get("updated_at") and stamps["updated_at"] < stamps["created_at"]:
        bad.append("updated_at")
    return sorted(set(bad))


def content(obj: dict) -> tuple:
    """What makes two deliveries of an event the same event."""
    return tuple(
        parse_ts(obj[n]) if n in ("created_at", "updated_at") else obj.get(n) for n in STRING_FIELDS
    ) + (tuple(obj["tags"]),)


@dataclass
class Expected:
    bronze: dict[str, tuple] = field(default_factory=dict)  # event_id -> (content, first partition)
    silver: dict[str, tuple] = field(default_factory=dict)  # ticket_id -> (last_event_id, updated_at, status, priority)
    quarantine: set[tuple] = field(default_factory=set)  # (partition, source_uri, line, reason)


def expected_state(manifest_dir: Path, dataset: str = "tickets") -> Expected:
    manifests = [json.loads(p.read_text()) for p in sorted(manifest_dir.glob("*.json"))]
    manifests = [m for m in manifests if m["dataset"] == dataset]
    manifests.sort(key=lambda m: (m["partition_key"], datetime.fromisoformat(m["produced_at"].replace("Z", "+00:00")),
                                  m["manifest_id"]))
    out = Expected()
    versions: dict[str, list] = {}  # event_id -> [(delivery order, content, partition, uri, line)]
    order = 0
    for m in manifests:
        window_end = datetime.combine(date.fromisoformat(m["partition_key"]) + timedelta(days=1),
                                      datetime.min.time(), tzinfo=timezone.utc)
        for asset in m["assets"]:
            data = (manifest_dir / asset["uri"]).read_bytes()
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            for number, line in enumerate(data.split(b"\n"), start=1):
                if line.endswith(b"\r"):
                    line = line[:-1]
                if not line.strip(b" \t\r\n\x0b\x0c"):
                    continue
                where = (m["partition_key"], asset["uri"], number)
                obj = parse_line(line)
                if obj is None:
                    out.quarantine.add((*where, "malformed_record"))
                    continue
                if violations(obj):
                    out.quarantine.add((*where, "schema_violation"))
                    continue
                if parse_ts(obj["updated_at"]) >= window_end:
                    out.quarantine.add((*where, "future_event"))
                    continue
                order += 1
                versions.setdefault(obj["event_id"], []).append((order, content(obj), obj, where))
    for event_id, found in versions.items():
        found.sort(key=lambda v: v[0])
        winner = found[0]
        out.bronze[event_id] = (winner[1], winner[3][0])
        for _, version, _, where in found[1:]:
            if version != winner[1]:
                out.quarantine.add((*where, "conflicting_duplicate"))
    for event_id, (_, _) in out.bronze.items():
        obj = versions[event_id][0][2]
        key = (parse_ts(obj["updated_at"]), event_id)
        current = out.silver.get(obj["ticket_id"])
        if current is None or key > (current[1], current[0]):
            out.silver[obj["ticket_id"]] = (event_id, key[0], obj["status"], obj["priority"])
    return out
