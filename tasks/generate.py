"""Write source deliveries: manifests for existing files, and large synthetic partitions of any dataset
that declares synthetic data."""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from schemas.datasets import DATASETS, SyntheticData, get_dataset
from schemas.kinds import FieldKind
from tasks.atomic import write_atomic
from tasks.read import count_records


def write_manifest(manifest_dir: Path, manifest_id: str, dataset: str, partition_key: date,
                   produced_at: datetime, assets: Iterable[Path], modality: str = "text") -> Path:
    """A manifest declaring files under `manifest_dir`, with their real sha256 and record counts, at the
    dataset's newest schema version."""
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
        "schema_version": get_dataset(dataset).schema_versions[-1] if dataset in DATASETS else "1",
        "produced_at": produced_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "assets": described,
    }
    out = manifest_dir / f"{manifest_id}.json"
    write_atomic(out, json.dumps(manifest, indent=2) + "\n")  # a reader never sees half a manifest
    return out


def synthetic_events(day: date, count: int, entities: int, seed: int,
                     dataset: str = "tickets") -> Iterable[dict[str, Any]]:
    """Valid events of a dataset dated inside `day`, spread over `entities` entities; deterministic per seed."""
    return _synthetic(dataset).events(day, count, entities, seed)


def _synthetic(dataset: str) -> SyntheticData:
    spec = get_dataset(dataset)
    if spec.synthetic is None:
        raise ValueError(f"dataset {dataset} declares no synthetic data (DatasetSpec.synthetic in schemas/datasets/)")
    return spec.synthetic


DEFECTS = ("malformed_record", "schema_violation", "future_event", "duplicate_in_batch", "conflicting_duplicate",
           "late_arriving")


def realistic_lines(day: date, count: int, entities: int, seed: int, defect_every: int = 10_000,
                    dataset: str = "tickets") -> Iterator[bytes]:
    """`count` JSONL lines of synthetic events carrying what real deliveries carry: timestamps with and
    without fractional seconds (every other line microseconds, every fifth milliseconds), and, once per
    `defect_every` lines each, every kind of defect in DEFECTS: a truncated line, an unknown priority,
    an event dated after the day, the line before delivered again, the line before's event id with other
    content, and an update dated the day before. Deterministic per seed; 0 = no defects."""
    spec, synthetic = get_dataset(dataset), _synthetic(dataset)
    stamp = spec.partition_column
    others = [f.name for f in spec.fields if f.kind is FieldKind.TIMESTAMP and f.name != stamp]
    previous = b""
    slots = _defect_slots(defect_every) if defect_every else {}
    for n, event in enumerate(synthetic.events(day, count, entities, seed)):
        if n % 2:
            event[stamp] = event[stamp].replace("Z", ".123456Z")
        elif n % 5 == 0 and others:
            event[others[0]] = event[others[0]].replace("Z", ".250Z")
        line = orjson.dumps(event)
        defect = slots.get(n % defect_every) if defect_every else None
        if defect == "malformed_record":
            line = line[: len(line) // 2]
        elif defect == "schema_violation":
            line = orjson.dumps(synthetic.violate(event))
        elif defect == "future_event":
            line = line.replace(f'"{stamp}":"{day:%Y-%m-%d}'.encode(),
                                f'"{stamp}":"{day + timedelta(days=1):%Y-%m-%d}'.encode(), 1)
        elif defect == "duplicate_in_batch":
            line = previous
        elif defect == "conflicting_duplicate":
            line = orjson.dumps(synthetic.edit(orjson.loads(previous)))
        elif defect == "late_arriving":
            line = line.replace(f'"{stamp}":"{day:%Y-%m-%d}'.encode(),
                                f'"{stamp}":"{day - timedelta(days=1):%Y-%m-%d}'.encode(), 1)
        previous = line
        yield line


def _defect_slots(every: int) -> dict[int, str]:
    """Where in each run of `every` lines each kind of defect sits: spread out, never on a run's first line."""
    return {(2 * k + 1) * every // (2 * len(DEFECTS)) or 1: kind for k, kind in enumerate(DEFECTS)}


def write_lines(path: Path, lines: Iterable[bytes]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("wb") as out:
        for line in lines:
            out.write(line + b"\n")
            written += 1
    return written


def write_jsonl(path: Path, events: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("wb") as out:
        for event in events:
            out.write(orjson.dumps(event) + b"\n")
            written += 1
    return written


def generate_partitions(manifest_dir: Path, start: date, days: int, events_per_day: int,
                        entities: int | None = None, dataset: str = "tickets", defect_every: int = 0) -> list[Path]:
    """`days` daily deliveries of synthetic events, each with its manifest; returns the manifests.
    With `defect_every`, each delivery carries realistic defects (`realistic_lines`)."""
    entities = entities or max(1, events_per_day // 4)
    manifests = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        source = manifest_dir / "sources" / dataset / day.isoformat() / "events.jsonl"
        write_lines(source, realistic_lines(day, events_per_day, entities, seed=offset, defect_every=defect_every,
                                            dataset=dataset))
        produced = datetime.combine(day, time(23, 30), tzinfo=timezone.utc)
        manifests.append(write_manifest(manifest_dir, f"{dataset}-{day.isoformat()}-synthetic", dataset,
                                        day, produced, [source]))
    return manifests
