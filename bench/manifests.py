"""Benchmark: manifest validation time against the number of assets (it must grow linearly).

    python bench/manifests.py [--assets 2000 8000 32000]

For each size, one manifest declaring that many one-line JSONL assets: discovery and verification of a
valid manifest, then of the same manifest with its last asset's record_count wrong (the error must
name that asset's line, which costs one pass over the text). Prints seconds and microseconds per
asset. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.errors import InputError  # noqa: E402
from tasks.manifests import _parse_manifest_cached, discover_manifests, verify_manifests  # noqa: E402


def write(root: Path, assets: int, wrong_last: bool) -> None:
    (root / "sources").mkdir(exist_ok=True)
    declared = []
    for n in range(assets):
        data = f'{{"n": {n}}}\n'.encode()
        path = root / "sources" / f"{n}.jsonl"
        if not path.exists():
            path.write_bytes(data)
        declared.append({"uri": f"sources/{n}.jsonl", "format": "jsonl", "sha256": hashlib.sha256(data).hexdigest(),
                         "record_count": 2 if wrong_last and n == assets - 1 else 1})
    manifest = {"manifest_id": "m", "dataset": "tickets", "modality": "text", "partition_key": "2026-04-17",
                "schema_version": "1", "produced_at": "2026-04-17T23:00:00Z", "assets": declared}
    (root / "m.json").write_text(json.dumps(manifest, indent=2))


def timed(root: Path) -> tuple[float, str]:
    _parse_manifest_cached.cache_clear()
    began = time.perf_counter()
    try:
        verify_manifests(discover_manifests(root), root)
        outcome = "valid"
    except InputError as exc:
        outcome = f"error at line {exc.line} ({exc.field})"
    return time.perf_counter() - began, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, nargs="+", default=[2000, 8000, 32000])
    args = parser.parse_args()
    print(f"{'assets':>8} {'case':>12} {'seconds':>9} {'us/asset':>9}  outcome")
    for count in args.assets:
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            for wrong in (False, True):
                write(root, count, wrong)
                seconds, outcome = timed(root)
                print(f"{count:>8} {'last wrong' if wrong else 'valid':>12} {seconds:>9.2f} "
                      f"{seconds / count * 1e6:>9.0f}  {outcome}")


if __name__ == "__main__":
    main()
