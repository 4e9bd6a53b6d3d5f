"""Landing pulled pages as files with manifests, so a pulled partition is ingested exactly as a delivered one.

A page's records are split by the UTC day of their cursor field and written, one JSONL file per day, to
`{landing}/sources/{dataset}/{pull}/page-NNNNN/{day}.jsonl` (atomically; the page's folder is emptied
first, so a page fetched again after a kill leaves nothing of its first try). When every page has
landed, one manifest per day lists the pull's files of that day. Records are written as the source sent
them: numbers keep their text (a decimal is never a float on the way), the event key is derived when the
source declares `event_key_from`.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from schemas.datasets import DatasetSpec
from schemas.kinds import ISO_UTC_PATTERN
from schemas.sources import PulledSource
from schemas.tables import bronze_table, quarantine
from tasks.atomic import write_atomic
from tasks.cursor import CursorValue
from tasks.database import reading
from tasks.generate import write_manifest

_ISO_UTC = re.compile(ISO_UTC_PATTERN)


def cursor_instant(value: Any) -> datetime | None:
    """A record's cursor value as a UTC instant, or None when it is no ISO-8601 UTC timestamp."""
    if type(value) is not str or not _ISO_UTC.fullmatch(value):
        return None
    text = value.upper().replace(" ", "T").replace("Z", "+00:00")
    fraction = re.search(r"\.([0-9]+)", text)
    if fraction and len(fraction.group(1)) > 6:  # nanoseconds: Python keeps microseconds
        text = text.replace(fraction.group(0), "." + fraction.group(1)[:6])
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except ValueError:
        return None


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode  # compact, ASCII (a lone surrogate stays escaped)
_NEEDS_CARE = (dict, list, Decimal)


def json_text(value: Any) -> str:
    """JSON text of a parsed value whose numbers are Decimal (parse_float=Decimal): exact, never a float.
    A flat record (the common case) is one call of the C encoder; Decimals and nesting go by hand."""
    if type(value) is dict and not any(type(v) in _NEEDS_CARE for v in value.values()):
        return _ENCODE(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else json.dumps(float(value))
    return _ENCODE(value)


@dataclass(frozen=True)
class LandedPage:
    record_count: int  # records landed (inside the window)
    already_ingested: int  # inside the window, but bronze (or quarantine) holds the same text: nothing new
    newest: CursorValue | None  # the newest (cursor, key) read inside the window
    newest_seen: datetime | None  # the newest cursor value the page showed, landed or not
    days: tuple[date, ...]


def _key_part(value: Any) -> str:
    return value if type(value) is str else "" if value is None else json_text(value).strip('"')


def shape(source: PulledSource, spec: DatasetSpec, record: Any) -> Any:
    """The record as the contract reads it: with its event key derived, when the source declares how."""
    if source.event_key_from and isinstance(record, dict):
        parts = [record.get(name) for name in source.event_key_from]
        record = {**record, spec.event_key: "@".join(_key_part(p) for p in parts)}
    return record


def already_held(engine: Engine, spec: DatasetSpec, lines: dict[str, str]) -> set[str]:
    """The event keys whose bronze row, or a quarantine row, holds exactly this text: the lookback re-reads
    them every pull, and landing them again would change nothing but the counts (both lookups by index)."""
    bronze = bronze_table(spec)
    key = bronze.c[spec.event_key]
    found: set[str] = set()
    keys = list(lines)
    with reading(engine) as conn:
        for start in range(0, len(keys), 500):
            some = keys[start:start + 500]
            held = [*conn.execute(select(key, bronze.c._raw_payload).where(key.in_(some))),
                    *conn.execute(select(quarantine.c.event_id, quarantine.c.raw_payload).where(
                        quarantine.c.dataset == spec.name, quarantine.c.event_id.in_(some)))]
            found.update(str(event) for event, payload in held if lines.get(str(event)) == payload)
    return found


def quarantined_keyless(engine: Engine, spec: DatasetSpec, lines: set[str]) -> set[str]:
    """Of records with no event key (not an object, no key field), those quarantine already holds with
    this text. Rare, so a scan of the dataset's keyless quarantine rows, and only when a page has one."""
    if not lines:
        return set()
    query = select(quarantine.c.raw_payload).where(quarantine.c.dataset == spec.name, quarantine.c.event_id.is_(None),
                                                  quarantine.c.raw_payload.in_(sorted(lines)))
    with reading(engine) as conn:
        found: list[Any] = list(conn.execute(query).scalars())
    return {str(payload) for payload in found}


def _neighbour_day(placed: list[tuple[date | None, str | None, str]], window: tuple[datetime, datetime]) -> date:
    """Where a record with no cursor value lands (its partition quarantines it): beside the page's records
    inside the window, else on the window's last day (the newest the pull reads)."""
    days = [day for day, _, _ in placed if day is not None]
    return min(days) if days else (window[1] - timedelta(microseconds=1)).date()


def land_page(root: Path, spec: DatasetSpec, source: PulledSource, run_id: str, page: int, records: Iterable[Any],
              window: tuple[datetime, datetime], engine: Engine | None = None) -> tuple[str, LandedPage]:
    """Write the page's in-window records, one file per cursor day; returns its folder (relative) and tally.

    Records whose cursor is past the window's end are left for a later pull (counted in newest_seen);
    records before its start were landed by an earlier pull. A record whose cursor is no timestamp still
    lands (the contract quarantines it, with its reason), beside the page's records (else on the window's last
    day). With `engine`, a record bronze or quarantine already holds with the same text is not landed again (it
    would change nothing), a record with no event key (no object) included."""
    folder = Path("sources") / spec.name / run_id / f"page-{page:05d}"
    target = root / folder
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    by_day: dict[date, list[tuple[str | None, str]]] = defaultdict(list)
    newest: CursorValue | None = None
    seen: datetime | None = None
    placed: list[tuple[date | None, str | None, str]] = []
    for record in records:
        instant = cursor_instant(record.get(source.cursor_field)) if isinstance(record, dict) else None
        if instant is not None:
            seen = instant if seen is None or instant > seen else seen
            if not window[0] <= instant < window[1]:
                continue
            key = record.get(source.key_field)
            candidate = CursorValue(instant, _key_part(key))
            newest = candidate if newest is None or candidate > newest else newest
        shaped = shape(source, spec, record)
        event = shaped.get(spec.event_key) if isinstance(shaped, dict) else None
        placed.append((instant.date() if instant else None, event if type(event) is str else None, json_text(shaped)))
    for day, event, line in placed:
        by_day[day or _neighbour_day(placed, window)].append((event, line))
    held: set[str] = set()
    keyless: set[str] = set()
    if engine is not None:
        held = already_held(engine, spec, {event: line for lines in by_day.values() for event, line in lines if event})
        keyless = quarantined_keyless(engine, spec, {line for lines in by_day.values() for event, line in lines
                                                     if event is None})
    count = skipped = 0
    for day, lines in sorted(by_day.items()):
        fresh = [line for event, line in lines if not (event in held if event else line in keyless)]
        skipped += len(lines) - len(fresh)
        if fresh:
            write_atomic(target / f"{day.isoformat()}.jsonl", "\n".join(fresh) + "\n")
            count += len(fresh)
    return folder.as_posix(), LandedPage(count, skipped, newest, seen, tuple(sorted(by_day)))


def write_pull_manifests(root: Path, dataset: str, run_id: str, page_folders: list[str], produced_at: datetime) -> list[date]:
    """One manifest per day the pull's pages touched, listing that day's files in page order."""
    files: dict[date, list[Path]] = defaultdict(list)
    for folder in page_folders:
        for path in sorted((root / folder).glob("*.jsonl")):
            files[date.fromisoformat(path.stem)].append(path)
    for day, paths in sorted(files.items()):
        write_manifest(root, manifest_id_for(dataset, run_id, day), dataset, day, produced_at, paths)
    return sorted(files)


def manifest_id_for(dataset: str, run_id: str, day: date) -> str:
    return f"{dataset}-pull-{run_id}-{day.isoformat()}"
