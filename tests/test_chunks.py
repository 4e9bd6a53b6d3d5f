"""A partition read, validated and written in chunks gives exactly what it gives read whole: the same
counts, checks, bronze, silver, quarantine and lake rows, whatever the chunk size (FACTORY_CHUNK_BYTES),
and a run that fails or is killed between chunks converges when rerun."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from datetime import date, datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.datasets import get_dataset
from schemas.settings import DEFAULT_CHUNK_BYTES
from tasks.database import get_engine, reading
from tasks.generate import realistic_lines, write_lines, write_manifest
from tasks.lake import Lake, read_files
from tasks.lake_state import current_record
from tasks.manifests import asset_files, partition_manifests, read_manifests
from tasks.read import BOM, count_jsonl_lines, count_jsonl_records, jsonl_blocks, read_chunks
from tasks.silver import SPILL_PREFIX
from tasks.storage import open_storage
from tests.conftest import REPO, sqlite_only
from tests.faults import Injected, inject
from tests.helpers import DAYS, commit
from tests.test_faults import assert_converged
from tests.test_oracle import assert_matches_oracle, make_deliveries

SPEC = get_dataset("tickets")
LINE_PER_CHUNK, FEW_LINES = 1, 700  # bytes: every line its own chunk; two or three lines a chunk
D14, D16, D17 = DAYS


def _verdicts(done) -> list[tuple[str, str, float | None]]:  # type: ignore[no-untyped-def]
    return [(c.name, c.status, c.observed) for c in done.checks]


def _same_as_whole(whole_url: str, chunked_url: str, root: Path, seed: int, chunk_bytes: int) -> None:
    """Random defect-laden deliveries in random order, then forced reruns and replays: every run's counts
    and check verdicts in chunks equal the same run's read whole, and the warehouse is the oracle's."""
    root.mkdir()
    days = make_deliveries(root, seed)
    rng = random.Random(seed)
    runs: list[tuple[date, bool]] = [(day, False) for day in rng.sample(days, len(days))]
    runs += [(rng.choice(days), True) for _ in range(3)]
    for day, force in runs:
        whole = commit(whole_url, root, day, force=force, chunk_bytes=DEFAULT_CHUNK_BYTES)
        chunked = commit(chunked_url, root, day, force=force, chunk_bytes=chunk_bytes)
        assert chunked.counts == whole.counts, (day, force)
        assert _verdicts(chunked) == _verdicts(whole), (day, force)
    assert_matches_oracle(chunked_url, root)


@pytest.mark.parametrize("seed", [2, 3])
def test_a_few_lines_per_chunk_count_and_check_exactly_as_whole_runs(warehouse_url: str, other_warehouse_url: str,
                                                                      tmp_path: Path, seed: int) -> None:
    _same_as_whole(warehouse_url, other_warehouse_url, tmp_path / "deliveries", seed, FEW_LINES)


@sqlite_only  # the hostile-record property test runs a line per chunk on PostgreSQL
def test_a_line_per_chunk_counts_and_checks_exactly_as_whole_runs(warehouse_url: str, other_warehouse_url: str,
                                                                  tmp_path: Path) -> None:
    _same_as_whole(warehouse_url, other_warehouse_url, tmp_path / "deliveries", 1, LINE_PER_CHUNK)


def _big_delivery(root: Path, events: int = 3000) -> None:
    source = root / "sources" / "big.jsonl"
    write_lines(source, realistic_lines(D17, events, events // 4, seed=3, defect_every=500))
    write_manifest(root, "big", "tickets", D17, datetime(2026, 4, 17, 23, tzinfo=timezone.utc), [source])


@sqlite_only
def test_a_snapshot_written_in_chunks_holds_the_rows_of_one_written_whole(warehouse_url: str, other_warehouse_url: str,
                                                                          tmp_path: Path) -> None:
    root = tmp_path / "deliveries"
    _big_delivery(root)
    lakes = [Lake(open_storage(str(tmp_path / name))) for name in ("whole", "chunked")]
    commit(warehouse_url, root, D17, lake=lakes[0], chunk_bytes=DEFAULT_CHUNK_BYTES)
    commit(other_warehouse_url, root, D17, lake=lakes[1], chunk_bytes=64 * 1024)
    rows, files = [], []
    for url, lake in zip((warehouse_url, other_warehouse_url), lakes):
        with reading(get_engine(url)) as conn:
            record = current_record(conn, lake, "tickets", D17)
        files.append(len(record["files"]))
        rows.append(read_files(lake, "tickets", D17, record).sort("event_id"))
    assert files[0] == 1 and files[1] > 10
    assert rows[1].equals(rows[0])


def test_the_reader_hands_over_chunks_in_delivery_order_that_add_up_to_the_whole(tmp_path: Path) -> None:
    """Chunks of about chunk_bytes of input, small assets sharing one, lines numbered as in their file."""
    for name, events in (("a", 40), ("b", 3), ("c", 900)):
        source = tmp_path / "sources" / f"{name}.jsonl"
        write_lines(source, realistic_lines(D17, events, 10, seed=len(name) + events, defect_every=20))
        write_manifest(tmp_path, name, "tickets", D17, datetime(2026, 4, 17, 20 + len(name), tzinfo=timezone.utc),
                       [source])
    manifests = partition_manifests(tmp_path, "tickets", D17)
    whole = read_manifests(SPEC, manifests, tmp_path)
    with asset_files(manifests, tmp_path) as paths:
        chunks = list(read_chunks(SPEC, manifests, paths, chunk_bytes=16 * 1024))
    assert len(chunks) > 10
    records = pl.concat([c.records for c in chunks])
    assert records.equals(whole.records)
    assert pl.concat([c.malformed for c in chunks]).equals(whole.malformed)
    assert sum(c.declared_records for c in chunks) == whole.declared_records == 943
    assert sum(c.total for c in chunks) == whole.total == 943


# bytes a JSONL file may hold around its lines: blank lines of every kind, a BOM, CR LF, invalid UTF-8
PIECES = st.sampled_from([b"{}", b"x", b"\n", b"\r\n", b" ", b"\t", b"\x0b", b"\x0c", BOM, b"\xff", b"\n \n"])


@settings(max_examples=300, deadline=None)
@given(content=st.lists(PIECES, max_size=40).map(b"".join), block_bytes=st.integers(1, 12))
def test_file_blocks_split_no_line_and_count_what_the_reader_reads(content: bytes, block_bytes: int) -> None:
    """Read in blocks of any size, a file's blocks end at newlines, rejoin to the file (its leading BOM
    dropped), number their lines as the file does, and count the non-blank lines a naive split counts."""
    import io

    blocks = list(jsonl_blocks(io.BytesIO(content), block_bytes))
    assert b"".join(block for _, block in blocks) == content.removeprefix(BOM)
    assert all(block.endswith(b"\n") for _, block in blocks[:-1])
    assert [first for first, _ in blocks] == [1 + sum(b.count(b"\n") for _, b in blocks[:i]) for i in range(len(blocks))]
    naive = sum(1 for line in content.removeprefix(BOM).split(b"\n") if line.strip(b" \t\r\n\x0b\x0c"))
    assert sum(count_jsonl_lines(block) for _, block in blocks) == count_jsonl_records(content) == naive


@pytest.fixture
def own_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp folder for this test and the processes it starts: a run killed by a test on the other
    xdist worker must not leave its spill where this test looks for leftovers."""
    folder = tmp_path / "temp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _spills_left(temp: Path) -> list[Path]:
    return sorted(temp.glob(f"{SPILL_PREFIX}*"))


# between two chunks' writes (the second chunk spills the silver candidates), and after the last
CHUNK_BOUNDARIES = ["tasks.warehouse:_write_chunk:after:2", "tasks.silver:SilverCandidates._spill:after:3",
                    "tasks.lake:SnapshotWriter.add:after:2", "tasks.warehouse:write_silver:after"]


@pytest.mark.parametrize("boundary", CHUNK_BOUNDARIES)
def test_a_run_failing_between_chunks_converges_when_rerun(warehouse_url: str, sample_dir: Path, tmp_path: Path,
                                                           boundary: str, monkeypatch: pytest.MonkeyPatch,
                                                           own_temp: Path) -> None:
    lake = Lake(open_storage(str(tmp_path / "lake")), retention=3)
    for day in (D14, D16):
        commit(warehouse_url, sample_dir, day, lake=lake, chunk_bytes=FEW_LINES)
    with monkeypatch.context() as patch:
        inject(patch, boundary)
        with pytest.raises(Injected):
            commit(warehouse_url, sample_dir, D17, lake=lake, chunk_bytes=FEW_LINES)
    commit(warehouse_url, sample_dir, D17, lake=lake, chunk_bytes=FEW_LINES)
    assert_converged(warehouse_url, lake, sample_dir)
    assert _spills_left(own_temp) == []


@pytest.mark.parametrize("boundary", CHUNK_BOUNDARIES[:2])
def test_a_run_killed_between_chunks_converges_when_rerun(warehouse_url: str, sample_dir: Path, tmp_path: Path,
                                                          boundary: str, own_temp: Path) -> None:
    lake = Lake(open_storage(str(tmp_path / "lake")), retention=3)
    for day in (D14, D16):
        commit(warehouse_url, sample_dir, day, lake=lake, chunk_bytes=FEW_LINES)
    killed = subprocess.run([sys.executable, "-m", "tests.faults", boundary, "--", "commit", warehouse_url,
                             str(sample_dir), D17.isoformat(), lake.storage.url], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "FACTORY_TEST_CHUNK_BYTES": str(FEW_LINES)})
    assert killed.returncode == -9, killed.stderr
    commit(warehouse_url, sample_dir, D17, lake=lake, chunk_bytes=FEW_LINES)
    assert_converged(warehouse_url, lake, sample_dir)
    assert _spills_left(own_temp) == []
