"""An independent oracle for DESIGN sections 6-7, in plain Python: no Polars, no Pandera, no SQL, no orjson,
nothing of the factory's. It knows two contracts, written out here by hand from the README: tickets and
orders (every field kind: decimals exact from their text, integers, floats, booleans, dates, JSON objects).

Given every manifest of a dataset, it computes what bronze, silver and quarantine must hold after
all partitions are ingested, in any order: the earliest delivery of an event wins; silver holds each
entity's greatest accepted event by (updated_at, event_id), compared as Python strings do (bytewise).

A line is a record when it is UTF-8 holding one strict JSON object (README, "What a record is"): no key
twice in one object, no NaN or Infinity, numbers a double can hold, no lone surrogate, nesting at most
512 deep. A leading byte order mark on the file is not part of its first line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
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


class Num(float):
    """A JSON number written with a fraction or exponent: its double, and its text as written."""

    text: str

    def __new__(cls, text: str) -> "Num":
        value = super().__new__(cls, text)
        if value in (float("inf"), float("-inf")):
            raise NotARecord("overflow")
        value.text = text
        return value


def _float(text: str) -> float:
    return Num(text)


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
    """What makes two deliveries of a ticket event the same event."""
    return tuple(
        parse_ts(obj[n]) if n in ("created_at", "updated_at") else obj.get(n) for n in STRING_FIELDS
    ) + (tuple(obj["tags"]),)


# --- orders ------------------------------------------------------------------------------------

ORDER_STATUSES = {"placed", "paid", "shipped", "delivered", "cancelled", "refunded"}
CURRENCIES = set("""
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD
CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ
GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR
LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN
PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB
TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWG
""".split())
ORDER = re.compile(r"ORD-[0-9]{6,30}")
PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
ORDER_FIELDS = ["event_id", "order_id", "customer_id", "amount", "currency", "status", "item_count", "is_gift",
                "order_date", "updated_at", "weight_kg", "tags", "attributes"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def amount_of(value: object) -> Decimal | None:
    """A decimal(12, 2) from a JSON integer, a number's text or a string; None when it is none."""
    if _is_int(value):
        text = str(value)
    elif isinstance(value, Num):
        text = value.text
    elif isinstance(value, str) and not isinstance(value, Num):
        text = value
    else:
        return None
    if not PLAIN_DECIMAL.fullmatch(text):
        return None
    whole, _, fraction = text.lstrip("-").partition(".")
    if len(whole.lstrip("0")) > 10 or len(fraction.rstrip("0")) > 2:
        return None
    return Decimal(text)


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    return False


def order_date_of(value: object) -> date | None:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def order_violations(obj: dict) -> list[str]:
    """Names of the fields that break the orders contract."""
    bad = []
    for name in ("event_id", "order_id", "customer_id", "currency", "status", "order_date", "updated_at"):
        value = obj.get(name)
        if not isinstance(value, str) or "\x00" in value:
            bad.append(name)
    for name in ("event_id", "customer_id"):
        if isinstance(obj.get(name), str) and not 1 <= len(obj[name]) <= MAX_KEY:
            bad.append(name)
    if isinstance(obj.get("order_id"), str) and not ORDER.fullmatch(obj["order_id"]):
        bad.append("order_id")
    if not isinstance(obj.get("currency"), str) or obj["currency"] not in CURRENCIES:
        bad.append("currency")
    if not isinstance(obj.get("status"), str) or obj["status"] not in ORDER_STATUSES:
        bad.append("status")
    amount = amount_of(obj.get("amount"))
    if amount is None or amount < 0:
        bad.append("amount")
    count = obj.get("item_count")
    if not (_is_int(count) and 1 <= count <= 10_000):
        bad.append("item_count")
    if not isinstance(obj.get("is_gift"), bool):
        bad.append("is_gift")
    day = order_date_of(obj.get("order_date"))
    stamp = parse_ts(obj["updated_at"]) if isinstance(obj.get("updated_at"), str) else None
    if day is None:
        bad.append("order_date")
    if stamp is None:
        bad.append("updated_at")
    if day and stamp and day > stamp.date():
        bad.append("order_date")
    weight = obj.get("weight_kg")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0):
        bad.append("weight_kg")
    tags = obj.get("tags")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags) or _holds_nul(tags):
        bad.append("tags")
    attributes = obj.get("attributes")
    if attributes is not None and (not isinstance(attributes, dict) or _holds_nul(attributes)):
        bad.append("attributes")
    return sorted(set(bad))


def order_content(obj: dict) -> tuple:
    """What makes two deliveries of an order event the same event: values, not spellings (120.5 is
    120.50; a JSON object's keys in any order)."""
    weight = obj.get("weight_kg")
    return (obj["event_id"], obj["order_id"], obj["customer_id"], amount_of(obj["amount"]), obj["currency"],
            obj["status"], obj["item_count"], obj["is_gift"], obj["order_date"], parse_ts(obj["updated_at"]),
            None if weight is None else float(weight), tuple(obj["tags"]),
            json.dumps(obj.get("attributes"), sort_keys=True))


def order_silver(obj: dict) -> tuple:
    weight = obj.get("weight_kg")
    return (obj["status"], amount_of(obj["amount"]), obj["item_count"], obj["is_gift"], obj["order_date"],
            None if weight is None else float(weight), list(obj["tags"]), obj.get("attributes"))


def _order_cell(name: str, cell: str) -> object:
    """A CSV cell as the orders contract reads it (README, "CSV assets")."""
    if cell == "":
        return [] if name == "tags" else None if name in ("weight_kg", "attributes", "item_count", "amount",
                                                            "is_gift", "order_date", "updated_at") else ""
    if name == "item_count":
        return int(cell) if re.fullmatch(r"-?(0|[1-9][0-9]*)", cell) else cell
    if name == "weight_kg":
        return float(cell) if re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]{1,2})?", cell) else cell
    if name == "is_gift":
        return {"true": True, "false": False}.get(cell, cell)
    if name in ("tags", "attributes"):
        try:
            return json.loads(cell, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float,
                              parse_int=_int)
        except (ValueError, OverflowError, RecursionError):
            return cell
    return cell


def csv_records(data: bytes, cell: Callable[[str, str], object]) -> list[tuple[int, dict | None]]:
    """(first line of the row, the record or None when malformed) for a plain CSV asset."""
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    header = next(reader)
    rows, previous = [], reader.line_num
    for row in reader:
        start, previous = previous + 1, reader.line_num
        if not row:
            continue
        if len(row) != len(header):
            rows.append((start, None))
            continue
        rows.append((start, {h: cell(h, c) for h, c in zip(header, row)}))
    return rows


# --- the expected state -----------------------------------------------------------------------

@dataclass(frozen=True)
class Contract:
    entity: str
    violations: Callable[[dict], list[str]]
    content: Callable[[dict], tuple]
    silver: Callable[[dict], tuple]  # what silver must hold for the entity, beyond (event, updated_at)
    cell: Callable[[str, str], object] | None = None


CONTRACTS = {
    "tickets": Contract("ticket_id", violations, content, lambda obj: (obj["status"], obj["priority"])),
    "orders": Contract("order_id", order_violations, order_content, order_silver, _order_cell),
}


@dataclass
class Expected:
    bronze: dict[str, tuple] = field(default_factory=dict)  # event_id -> (content, first partition)
    # entity -> (last_event_id, updated_at, *the contract's silver values)
    silver: dict[str, tuple] = field(default_factory=dict)
    quarantine: set[tuple] = field(default_factory=set)  # (partition, source_uri, line, reason)


def _jsonl_records(data: bytes) -> list[tuple[int, dict | None]]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    records = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip(b" \t\r\n\x0b\x0c"):
            records.append((number, parse_line(line)))
    return records


def expected_state(manifest_dir: Path, dataset: str = "tickets") -> Expected:
    contract = CONTRACTS[dataset]
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
            if asset["format"] == "csv":
                assert contract.cell is not None, f"the oracle reads no CSV of {dataset}"
                records = csv_records(data, contract.cell)
            else:
                records = _jsonl_records(data)
            for number, obj in records:
                where = (m["partition_key"], asset["uri"], number)
                if obj is None:
                    out.quarantine.add((*where, "malformed_record"))
                    continue
                if contract.violations(obj):
                    out.quarantine.add((*where, "schema_violation"))
                    continue
                if parse_ts(obj["updated_at"]) >= window_end:
                    out.quarantine.add((*where, "future_event"))
                    continue
                order += 1
                versions.setdefault(obj["event_id"], []).append((order, contract.content(obj), obj, where))
    for event_id, found in versions.items():
        found.sort(key=lambda v: v[0])
        winner = found[0]
        out.bronze[event_id] = (winner[1], winner[3][0])
        for _, version, _, where in found[1:]:
            if version != winner[1]:
                out.quarantine.add((*where, "conflicting_duplicate"))
    for event_id in out.bronze:
        obj = versions[event_id][0][2]
        key = (parse_ts(obj["updated_at"]), event_id)
        current = out.silver.get(obj[contract.entity])
        if current is None or key > (current[1], current[0]):
            out.silver[obj[contract.entity]] = (event_id, key[0], *contract.silver(obj))
    return out
