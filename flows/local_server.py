"""An opt-in local Prefect server that `datafactory` commands share across invocations.

With no Prefect API configured, every command that runs a flow starts Prefect's ephemeral server and
stops it when it exits: several seconds per command. `datafactory server start` starts one ordinary
`prefect server start` on loopback, in the background and in a session of its own, and records it in
`.factory/prefect-server.json`; while it answers, commands in this directory use it. It runs until
`datafactory server stop`. A PREFECT_API_URL from the environment or the active Prefect profile always
wins: then this file is never consulted. Imports no Prefect (the CLI calls it before Prefect loads).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from flows.prefect_env import QUIET_DEFAULTS, chosen_by_user
from tasks.processes import process_alive

STATE_FILE = Path(".factory") / "prefect-server.json"
LOG_FILE = Path(".factory") / "prefect-server.log"
DEFAULT_PORT = 4242  # not Prefect's 4200: a team server on this machine keeps its port
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class LocalServer:
    pid: int
    port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _healthy(server: LocalServer, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{server.api_url}/health", timeout=timeout) as response:  # noqa: S310 (loopback)
            return bool(response.status == 200)
    except OSError:
        return False


def _is_prefect_server(pid: int) -> bool:
    """Is `pid` still the `prefect server` we started (and not a process that reused its number)?"""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return process_alive(pid)  # no /proc here: trust the number
    return b"prefect" in command and b"server" in command


def recorded() -> LocalServer | None:
    """The server `datafactory server start` recorded here, if it still runs."""
    try:
        data = json.loads(STATE_FILE.read_text())
        server = LocalServer(pid=int(data["pid"]), port=int(data["port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return server if _is_prefect_server(server.pid) else None


def use_if_running() -> LocalServer | None:
    """Point this process at the recorded server when the user configured no Prefect API and it
    answers; commands then skip the ephemeral server's start-up."""
    if chosen_by_user("PREFECT_API_URL"):
        return None
    server = recorded()
    if server is None or not _healthy(server):
        return None
    os.environ["PREFECT_API_URL"] = server.api_url
    return server


def start(port: int = DEFAULT_PORT) -> tuple[LocalServer, bool]:
    """Start the shared server (or find it running); returns it and whether it was started now."""
    running = recorded()
    if running is not None and _healthy(running):
        return running, False
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{k: v for k, v in QUIET_DEFAULTS.items() if not chosen_by_user(k)}}
    with LOG_FILE.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # not in the shell's process group: it outlives this command
        )
    server = LocalServer(pid=process.pid, port=port)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _healthy(server):
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {process.returncode}; see {LOG_FILE}")
        if time.monotonic() > deadline:
            stop_process(server.pid)
            raise RuntimeError(f"prefect server did not answer on {server.api_url} within {START_TIMEOUT_S:.0f} s; "
                               f"see {LOG_FILE}")
        time.sleep(0.2)
    STATE_FILE.write_text(json.dumps(asdict(server)) + "\n")
    return server, True


def stop_process(pid: int) -> None:
    """SIGTERM, then SIGKILL after 10 s: the server and everything of its session."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if process_alive(pid):
        os.killpg(pid, signal.SIGKILL)


def stop() -> LocalServer | None:
    """Stop the recorded server; returns what was stopped (None when nothing ran)."""
    server = recorded()
    if server is not None:
        stop_process(server.pid)
    STATE_FILE.unlink(missing_ok=True)
    return server
