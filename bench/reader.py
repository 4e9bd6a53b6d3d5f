"""Benchmark: the JSONL reader on a clean delivery and on the same delivery with realistic defects.

    python bench/reader.py [--events 300000] [--bad-every 10000] [--repeat 3]

Generates N synthetic events; the defective copy has one malformed line every `--bad-every` lines, a
few contract violations (a number where a string is due, an escaped key, a key given twice) and
timestamps with and without fractional seconds. Reads both through `read_partition` (the flow's read
step) and prints the best of `--repeat` runs, and the ratio. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas.datasets import get_dataset  # noqa: E402
from tasks.generate import synthetic_events, write_manifest  # noqa: E402
from tasks.manifests import partition_manifests, read_manifests  # noqa: E402

DAY = date(2026, 4, 17)


def lines(events: int, bad_every: int | None) -> list[bytes]:
    out = []
    for n, event in enumerate(synthetic_events(DAY, events, max(1, events // 4), seed=1)):
        if n % 2:  # mixed precision: every other stamp carries microseconds
            event["updated_at"] = event["updated_at"].replace("Z", ".123456Z")
        line = orjson.dumps(event)
        if bad_every and n % bad_every == bad_every // 2:
            line = line[: len(line) // 2]  # truncated: not JSON
        elif bad_every and n % bad_every == bad_every // 3:
            line = line.replace(b'"subject":', b'"subject":12345,"x":', 1)  # a number where a string is due
        elif bad_every and n % bad_every == bad_every // 4:
            line = line.replace(b'"channel":', b'"\\u0063hannel":', 1)  # an escaped key
        elif bad_every and n % bad_every == bad_every // 5:
            line = line.replace(b'"status":', b'"status":"x","status":', 1)  # a key given twice
        out.append(line)
    return out


def best_read(root: Path, repeat: int) -> float:
    spec = get_dataset("tickets")
    manifests = partition_manifests(root, "tickets", DAY)
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        read_manifests(spec, manifests, root)
        best = min(best, time.perf_counter() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--bad-every", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for label, bad in (("clean", None), (f"1 bad per {args.bad_every}", args.bad_every)):
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            source = root / "sources" / "events.jsonl"
            source.parent.mkdir(parents=True)
            source.write_bytes(b"\n".join(lines(args.events, bad)) + b"\n")
            write_manifest(root, "m", "tickets", DAY, datetime(2026, 4, 17, 23, tzinfo=timezone.utc), [source])
            results[label] = best_read(root, args.repeat)
            print(f"{label:>22}: {results[label]:6.2f} s  ({args.events / results[label]:,.0f} lines/s)")
    clean, dirty = results.values()
    print(f"{'defective / clean':>22}: {dirty / clean:6.2f}")


if __name__ == "__main__":
    main()
