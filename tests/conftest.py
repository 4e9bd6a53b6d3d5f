"""Fixtures: a real PostgreSQL cluster (session), a warehouse per test on SQLite and PostgreSQL, sample data."""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from tests.pgcluster import Cluster, find_pg_bin, free_port, start_cluster

REPO = Path(__file__).resolve().parent.parent
SAMPLE_MANIFESTS = REPO / "data" / "manifests"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway cluster per session. Under CI a missing PostgreSQL fails the run instead of skipping."""
    if find_pg_bin() is None:
        message = "PostgreSQL server binaries not found (Debian: apt-get install postgresql-15)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


def _new_pg_database(cluster: Cluster) -> tuple[str, str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return name, cluster.url(name)


def _drop_pg_database(cluster: Cluster, name: str) -> None:
    from tasks.database import get_engine

    get_engine.cache_clear()
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def _fresh_warehouse(kind: str, request: pytest.FixtureRequest, sqlite_file: Path) -> Iterator[str]:
    """A fresh, empty warehouse: a SQLite file, or a new database on the real PostgreSQL cluster."""
    if kind == "sqlite":
        yield f"sqlite:///{sqlite_file}"
        return
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    name, url = _new_pg_database(cluster)
    try:
        yield url
    finally:
        _drop_pg_database(cluster, name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty warehouse: a SQLite file, or a new database on the real PostgreSQL cluster."""
    with _fresh_warehouse(request.param, request, tmp_path / "warehouse.db") as url:
        yield url


@pytest.fixture
def other_warehouse_url(warehouse_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A second fresh warehouse of the same kind as `warehouse_url` (to compare two ways of loading)."""
    kind = "sqlite" if warehouse_url.startswith("sqlite") else "postgres"
    with _fresh_warehouse(kind, request, tmp_path / "other-warehouse.db") as url:
        yield url


# Behaviour that does not depend on the database (evidence files, artifacts, the lake) runs on SQLite only.
sqlite_only = pytest.mark.parametrize("warehouse_url", ["sqlite"], indirect=True)


@pytest.fixture
def sample_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped sample manifests and sources (tests may edit it)."""
    target = tmp_path / "manifests"
    shutil.copytree(SAMPLE_MANIFESTS, target)
    return target


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server for every flow test."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # Prefect's flow-run heartbeat thread sleeps in one-second steps and is joined when each flow run ends:
    # up to a second per flow run, for crash detection no in-process test relies on (the server tests'
    # worker runs keep theirs)
    with prefect_test_harness(server_startup_timeout=120), \
            temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@pytest.fixture
def factory_env(prefect_harness: None, warehouse_url: str, sample_dir: Path, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> str:
    """Flows read their settings from the environment: point them at this test's warehouse and data."""
    monkeypatch.setenv("FACTORY_DATABASE_URL", warehouse_url)
    monkeypatch.setenv("FACTORY_MANIFEST_DIR", str(sample_dir))
    monkeypatch.setenv("FACTORY_REPORT_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("FACTORY_LAKE_URL", str(tmp_path / "lake"))
    return warehouse_url


@pytest.fixture(autouse=True)
def marts_where_tested(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process flow tests of other things commit without refreshing marts (each refresh is several task
    runs: most of a partition run's time in the suite); tests marked `marts` run them after every commit, as
    the product does by default, and so do the CLI tests (their subprocesses start from no FACTORY_* setting)."""
    if request.node.get_closest_marker("marts") is None:
        monkeypatch.setenv("FACTORY_MARTS_AFTER_COMMIT", "false")


@pytest.fixture(autouse=True)
def tickets_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two datasets are registered: commands (and the subprocesses tests start) speak of tickets unless
    a test names orders, as a user with FACTORY_DEFAULT_DATASET=tickets would."""
    monkeypatch.setenv("FACTORY_DEFAULT_DATASET", "tickets")


@pytest.fixture(autouse=True)
def evidence_contract(tmp_path: Path) -> Iterator[None]:
    """Contract test on every test: each evidence file the test produced validates against the schema."""
    yield
    from tasks.evidence import read_evidence, validate_evidence

    for path in sorted(tmp_path.rglob("run_evidence/*/*/*.json")):
        validate_evidence(read_evidence(path))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 endpoint on loopback: moto's threaded server, for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket_url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the loopback endpoint, reached through the standard AWS variables only."""
    import boto3
    from prefect_aws.credentials import _get_client_cached

    # prefect-aws caches a client per credentials object: one built from the environment of an earlier
    # test (without these variables) would be handed out again
    _get_client_cached.cache_clear()

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/factory"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lake_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The lake on a local folder, or on S3 (moto on loopback) through prefect-aws."""
    if request.param == "local":
        return str(tmp_path / "lake")
    return request.getfixturevalue("s3_bucket_url")
