"""Write source deliveries: manifests for existing files, and large synthetic ticket partitions."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

import orjson

from schemas.tickets import CHANNELS, EVENT_TYPES, PRIORITIES, STATUSES
from tasks.read import count_records


def write_manifest(manifest_dir: Path, manifest_id: str, dataset: str, partition_key: date,
                   produced_at: datetime, assets: Iterable[Path], modality: str = "text") -> Path:
    """A manifest declaring files under `manifest_dir`, with their real sha256 and record counts."""
    described = []
    for path in assets:
        data = path.read_bytes()
        fmt = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}[path.suffix]
        described.append({
            "uri": path.resolve().relative_to(manifest_dir.resolve()).as_posix(),
            "format": fmt,
            "sha256": hashlib.sha256(data).hexdigest(),
            "record_count": count_records(data, fmt),
        })
    manifest = {
        "manifest_id": manifest_id,
        "dataset": dataset,
        "modality": modality,
        "partition_key": partition_key.isoformat(),
        "schema_version": "1",
        "produced_at": produced_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "assets": described,
    }
    out = manifest_dir / f"{manifest_id}.json"
    out.write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def synthetic_events(day: date, count: int, tickets: int, seed: int) -> Iterable[dict[str, Any]]:
    """Valid ticket events dated inside `day`, spread over `tickets` tickets; deterministic per seed."""
    rng = random.Random(seed)
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    for n in range(count):
        ticket = rng.randrange(tickets)
        updated = start + timedelta(seconds=rng.randrange(86_400))
        created = updated - timedelta(seconds=rng.randrange(3 * 86_400))
        yield {
            "event_id": f"EV-{day:%Y%m%d}-{seed:04d}-{n:09d}",
            "ticket_id": f"TCK-{ticket:08d}",
            "event_type": rng.choice(EVENT_TYPES),
            "created_at": _iso(created),
            "updated_at": _iso(updated),
            "status": rng.choice(STATUSES),
            "priority": rng.choice(PRIORITIES),
            "channel": rng.choice(CHANNELS),
            "customer_id": f"CUST-{rng.randrange(100_000):06d}",
            "subject": f"Ticket {ticket} about order {rng.randrange(10**6)}",
            "body": "Customer reports an issue with their order; details follow. " * rng.randint(1, 3),
            "product_line": rng.choice([None, "billing", "shipping", "accounts", "mobile"]),
            "tags": rng.sample(["vip", "refund", "bug", "urgent", "follow-up", "sla"], rng.randint(0, 3)),
        }


def write_jsonl(path: Path, events: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("wb") as out:
        for event in events:
            out.write(orjson.dumps(event) + b"\n")
            written += 1
    return written


def generate_partitions(manifest_dir: Path, start: date, days: int, events_per_day: int,
                        tickets: int | None = None, dataset: str = "tickets") -> list[Path]:
    """`days` daily deliveries of synthetic events, each with its manifest; returns the manifests."""
    tickets = tickets or max(1, events_per_day // 4)
    manifests = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        source = manifest_dir / "sources" / dataset / day.isoformat() / "events.jsonl"
        write_jsonl(source, synthetic_events(day, events_per_day, tickets, seed=offset))
        produced = datetime.combine(day, time(23, 30), tzinfo=timezone.utc)
        manifests.append(write_manifest(manifest_dir, f"{dataset}-{day.isoformat()}-synthetic", dataset,
                                        day, produced, [source]))
    return manifests
