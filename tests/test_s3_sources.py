"""`s3://` source assets on a real S3 endpoint (moto on loopback, through prefect-aws): private copies,
one-line errors naming the manifest, and a store that goes away and comes back."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

import boto3
import pytest

from tasks.errors import InputError, TransientError
from tasks.generate import write_manifest
from tasks.manifests import S3_CACHE_PREFIX, asset_files, discover_manifests, partition_manifests
from tests.helpers import commit

pytestmark = pytest.mark.s3
D14 = date(2026, 4, 14)


def _s3_manifest(sample_dir: Path, bucket: str, key: str, upload: bool = True) -> Path:
    source = sample_dir / "sources/tickets/2026-04-14/events.jsonl"
    if upload:
        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=source.read_bytes())
    path = write_manifest(sample_dir, "tickets-2026-04-14-a", "tickets", D14,
                          datetime(2026, 4, 14, 23, tzinfo=timezone.utc), [source])
    manifest = json.loads(path.read_text())
    manifest["assets"][0]["uri"] = f"s3://{bucket}/{key}"
    path.write_text(json.dumps(manifest, indent=2))
    source.unlink()
    return path


def _bucket(url: str) -> str:
    return url.removeprefix("s3://").split("/")[0]


def _fetch_folders() -> set[Path]:
    """This process's fetch folders (other test workers share the temp directory)."""
    return set(Path(tempfile.gettempdir()).glob(f"{S3_CACHE_PREFIX}{os.getpid()}-*"))


def test_a_key_holding_dot_dot_is_fetched_into_a_private_folder_only(warehouse_url: str, sample_dir: Path,
                                                                       s3_bucket_url: str) -> None:
    """The key `../../x` names an object; it never becomes a path outside the fetch folder."""
    before = _fetch_folders()
    _s3_manifest(sample_dir, _bucket(s3_bucket_url), "drops/../../escape/events.jsonl")
    outside = Path(tempfile.gettempdir()).parent / "escape"
    assert commit(warehouse_url, sample_dir, D14).result.bronze_inserted == 8
    assert not outside.exists() and _fetch_folders() == before  # and the copies are gone


def test_a_missing_object_is_one_line_naming_the_manifest_and_asset(sample_dir: Path, s3_bucket_url: str) -> None:
    path = _s3_manifest(sample_dir, _bucket(s3_bucket_url), "drops/never-uploaded.jsonl", upload=False)
    with pytest.raises(InputError) as err:
        partition_manifests(sample_dir, "tickets", D14)
    assert (err.value.path, err.value.field) == (str(path), "assets[0].uri")
    assert str(err.value).endswith("never-uploaded.jsonl does not exist") and err.value.line == 10


def test_a_missing_bucket_is_one_line_naming_the_manifest(sample_dir: Path, s3_bucket_url: str) -> None:
    path = _s3_manifest(sample_dir, "no-such-bucket-here", "drops/events.jsonl", upload=False)
    with pytest.raises(InputError) as err:
        partition_manifests(sample_dir, "tickets", D14)
    assert err.value.path == str(path) and "the bucket does not exist" in str(err.value)


def test_concurrent_runs_fetch_the_same_key_into_their_own_copies(sample_dir: Path, s3_bucket_url: str) -> None:
    _s3_manifest(sample_dir, _bucket(s3_bucket_url), "drops/events.jsonl")
    manifests = discover_manifests(sample_dir)
    seen: list[Path] = []
    barrier = threading.Barrier(2)

    def fetch() -> None:
        with asset_files([m for m in manifests if m.partition_key == D14 and m.dataset == "tickets"], sample_dir) as paths:
            barrier.wait()  # both copies exist at once
            seen.extend(paths.values())

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == 2 and not any(p.exists() for p in seen)


def _moto(port: int) -> subprocess.Popen:
    """A moto S3 server in its own process (killing it is a real outage: every connection drops)."""
    process = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start")


def test_an_s3_outage_is_transient_and_the_run_converges_when_it_is_back(warehouse_url: str, sample_dir: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The lake's S3 endpoint is killed in the middle of a commit: a TransientError (Prefect retries it),
    the warehouse rolled back, no attempt left RUNNING; with the endpoint back, the rerun commits."""
    from sqlalchemy import select

    from schemas.tables import ingest_run, partition_state
    from tasks import lake as lake_module
    from tasks.database import get_engine, reading
    from tasks.lake import Lake, read_marker
    from tasks.lake_state import snapshot_listing
    from tasks.storage import open_storage
    from tests.pgcluster import free_port

    port = free_port()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                        "AWS_MAX_ATTEMPTS": "2"}.items():
        monkeypatch.setenv(name, value)
    server = _moto(port)
    try:
        boto3.client("s3").create_bucket(Bucket="blip")
        # the endpoint named explicitly: prefect-aws caches clients, one built from AWS_ENDPOINT_URL alone
        # could be an earlier test's
        lake = Lake(open_storage("s3://blip/lake", None, f"http://127.0.0.1:{port}"))
        real = lake_module._write_temp

        def outage(*args: object, **kwargs: object) -> object:
            server.kill()
            server.wait()
            return real(*args, **kwargs)

        monkeypatch.setattr(lake_module, "_write_temp", outage)
        with pytest.raises(TransientError):
            commit(warehouse_url, sample_dir, D14, lake=lake)
        monkeypatch.setattr(lake_module, "_write_temp", real)
        engine = get_engine(warehouse_url)
        with reading(engine) as conn:
            assert conn.execute(select(partition_state.c.status)).scalars().all() == ["failed"]
            assert conn.execute(select(ingest_run.c.status)).scalars().all() == ["failed"]
        server = _moto(port)  # back, empty: a new store
        boto3.client("s3").create_bucket(Bucket="blip")
        assert commit(warehouse_url, sample_dir, D14, lake=lake).result.bronze_inserted == 8
        [current] = [m["snapshot_id"] for m in snapshot_listing(engine, lake, "tickets", D14) if m["current"]]
        assert read_marker(lake, "tickets", D14)["snapshot_id"] == current
    finally:
        server.kill()
        server.wait()
