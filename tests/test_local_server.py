"""`datafactory server start`: one local Prefect server that later commands reuse instead of starting an
ephemeral server each; a PREFECT_API_URL the user set still wins; `server stop` leaves no process."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tasks.processes import process_alive
from tests.pgcluster import free_port
from tests.test_cli import datafactory

pytestmark = pytest.mark.server


def _flow_run_exists(api_url: str, flow_run_id: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/flow_runs/{flow_run_id}", timeout=10) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise


@pytest.fixture
def workspace(sample_dir: Path) -> Path:
    return sample_dir.parent


def test_one_local_server_serves_later_commands_until_stopped(workspace: Path, prefect_harness: None) -> None:
    from prefect.settings import PREFECT_API_URL

    started = datafactory(workspace, "server", "start", "--port", str(free_port()), "--json")
    assert started.returncode == 0, started.stderr
    server = json.loads(started.stdout)
    try:
        assert json.loads(datafactory(workspace, "server", "status", "--json").stdout)["pid"] == server["pid"]
        ran = datafactory(workspace, "run", "--partition", "2026-04-14", "--json")
        assert ran.returncode == 0, ran.stderr
        assert _flow_run_exists(server["api_url"], json.loads(ran.stdout)["flow_run_id"])

        harness = str(PREFECT_API_URL.value())  # the user's own API: it wins over the local server
        forced = datafactory(workspace, "run", "--partition", "2026-04-14", "--force", "--json", api_url=harness)
        flow_run_id = json.loads(forced.stdout)["flow_run_id"]
        assert _flow_run_exists(harness, flow_run_id) and not _flow_run_exists(server["api_url"], flow_run_id)
    finally:
        stopped = datafactory(workspace, "server", "stop", "--json")
    assert (stopped.returncode, json.loads(stopped.stdout)["stopped"]) == (0, server["pid"])
    assert not process_alive(server["pid"])
    assert json.loads(datafactory(workspace, "server", "status", "--json").stdout) == {"running": False}
