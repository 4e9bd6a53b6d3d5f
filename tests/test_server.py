"""A real Prefect server, the `data-factory` process pool, `prefect deploy`, a worker, a run from the CLI,
and the UI in a real browser. Everything started here is stopped here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import REPO
from tests.pgcluster import free_port

# one worker runs the whole module: its server, pool and worker are module fixtures
pytestmark = [pytest.mark.server, pytest.mark.xdist_group("prefect-server")]
PREFECT = str(Path(sys.executable).with_name("prefect"))



def _wait_healthy(api_url: str, process: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"prefect server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"prefect server not healthy after {seconds}s: {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Server on a loopback port with its own PREFECT_HOME, the pool, every deployment, one worker."""
    root = tmp_path_factory.mktemp("server")
    workspace = root / "workspace"
    shutil.copytree(REPO / "data", workspace / "data")
    api_url = f"http://127.0.0.1:{free_port()}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FACTORY_"))}
    env.update(PREFECT_HOME=str(root / "prefect-home"), PREFECT_API_URL=api_url,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING",
               PREFECT_WORKER_QUERY_SECONDS="1",  # the worker picks a scheduled run up within a second
               FACTORY_MANIFEST_DIR=str(workspace / "data" / "manifests"),
               FACTORY_DATABASE_URL=f"sqlite:///{workspace / 'warehouse.db'}",
               FACTORY_REPORT_DIR=str(workspace / "reports"), FACTORY_LAKE_URL=str(workspace / "lake"))
    port = api_url.split(":")[2].split("/")[0]
    server_log = root / "server.log"
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", port],
                              env=env, stdout=server_log.open("w"), stderr=subprocess.STDOUT)
    worker = None
    try:
        _wait_healthy(api_url, server, server_log)
        for command in (["work-pool", "create", "data-factory", "--type", "process"],
                        ["--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"]):
            done = subprocess.run([PREFECT, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr
        worker_log = root / "worker.log"
        worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "data-factory"], cwd=root, env=env,
                                  stdout=worker_log.open("w"), stderr=subprocess.STDOUT)
        yield {"env": env, "workspace": workspace, "api_url": api_url, "root": root}
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)


@pytest.fixture(scope="module")
def cli_run(deployed: dict[str, object]) -> dict[str, object]:
    """`prefect deployment run 'partition-flow/tickets-daily' -p partition_key=2026-04-17`, watched to the end."""
    done = subprocess.run([PREFECT, "deployment", "run", "partition-flow/tickets-daily", "-p",
                           "partition_key=2026-04-17", "--watch", "--watch-timeout", "300"],
                          env=deployed["env"], capture_output=True, text=True, timeout=360)  # type: ignore[arg-type]
    flow_run_id = next(line.split("UUID:")[1].strip() for line in done.stdout.splitlines() if "UUID:" in line)
    return {"returncode": done.returncode, "output": done.stdout + done.stderr, "flow_run_id": flow_run_id}


def test_a_cli_deployment_run_completes_on_the_worker_and_writes_the_warehouse(
        deployed: dict[str, object], cli_run: dict[str, object]) -> None:
    assert cli_run["returncode"] == 0 and "Completed" in str(cli_run["output"]), cli_run["output"]
    engine = create_engine(f"sqlite:///{deployed['workspace']}/warehouse.db")
    with engine.connect() as conn:
        bronze = conn.execute(text("SELECT COUNT(*) FROM raw_ticket_event")).scalar()
        state = conn.execute(text("SELECT status, output_count FROM partition_state")).all()
    engine.dispose()
    assert (bronze, [tuple(r) for r in state]) == (9, [("succeeded", 9)])  # 2026-04-17 alone: 9 distinct events


def test_the_run_leaves_evidence_naming_its_flow_run(deployed: dict[str, object], cli_run: dict[str, object]) -> None:
    folder = Path(str(deployed["workspace"])) / "reports" / "run_evidence" / "tickets" / "2026-04-17"
    evidence = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    assert [(e["ids"]["flow_run_id"], e["downstream"]["decision"]) for e in evidence] == [
        (cli_run["flow_run_id"], "unblock")]


@pytest.mark.browser
def test_the_ui_shows_the_evidence_artifact_on_the_flow_run(deployed: dict[str, object],
                                                            cli_run: dict[str, object]) -> None:
    from tests.browser import find_chromium, show_tab

    chromium = find_chromium(install=bool(os.environ.get("CI")))
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing and could not be installed (apt-get install chromium)")
        pytest.skip("chromium not found (Debian: apt-get install chromium); CI installs it")
    ui = str(deployed["api_url"]).removesuffix("/api")
    screenshot = Path(str(deployed["workspace"])) / "reports" / "ui-flow-run-artifacts.png"
    body = show_tab(chromium, f"{ui}/runs/flow-run/{cli_run['flow_run_id']}", "Artifacts",
                    "downstream unblock", screenshot)  # the description renders after the key: wait for it
    assert "tickets-2026-04-17-evidence" in body and "downstream unblock" in body
    assert screenshot.stat().st_size > 10_000


def test_a_backfill_fans_out_to_the_work_pool_through_run_deployment(deployed: dict[str, object],
                                                                      cli_run: dict[str, object]) -> None:
    """The backfill flow runs here; its gap partitions run as flow runs of the deployment, on the worker."""
    done = subprocess.run([sys.executable, "-m", "flows.cli", "backfill", "--dataset", "tickets", "--start", "2026-04-13", "--end", "2026-04-18",
                           "--mode", "execute", "--deployment", "partition-flow/tickets-daily", "--json"],
                          cwd=REPO, env=deployed["env"], capture_output=True, text=True, timeout=600)  # type: ignore[arg-type]
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(done.stdout)["results"]
    assert [(r["partition_key"], r["status"]) for r in results] == [("2026-04-14", "succeeded"),
                                                                    ("2026-04-16", "succeeded")]
    engine = create_engine(f"sqlite:///{deployed['workspace']}/warehouse.db")
    with engine.connect() as conn:
        logged = {r[0] for r in conn.execute(text("SELECT flow_run_id FROM decision_log WHERE action = 'backfill'"))}
    engine.dispose()
    assert logged == {r["flow_run_id"] for r in results}  # the partition runs were those deployment runs
