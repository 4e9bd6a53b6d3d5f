"""The runbook cannot drift: every `datafactory` command in its console blocks runs, in order, and exits 0."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO

RUNBOOK = REPO / "runbooks" / "data-factory.md"


def runbook_commands() -> list[str]:
    """`$ datafactory …` lines of the ```console blocks, in the order the runbook gives them."""
    commands, inside = [], False
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```console"
            continue
        if inside and line.startswith("$ datafactory "):
            commands.append(line.removeprefix("$ datafactory ").strip())
    return commands


def _current_snapshot(workspace: Path, partition: str) -> str:
    return (workspace / ".factory" / "lake" / "tickets" / f"dt={partition}" / "_SUCCESS").read_text()


@pytest.mark.flow
def test_every_runbook_command_runs_in_a_scratch_workspace(prefect_harness: None, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """With the defaults the runbook documents (no FACTORY_* set), run in a copy of the repository's data."""
    from flows.cli import main
    from tasks.database import get_engine

    shutil.copytree(REPO / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    for name in [k for k in __import__("os").environ if k.startswith("FACTORY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
    from tasks.fixture_api import FixtureApi

    api = FixtureApi(REPO / "data" / "api" / "customers.json")  # the customers API the pull commands read
    monkeypatch.setenv("FACTORY_SOURCE_URLS", __import__("json").dumps({"customers": api.start()}))
    get_engine.cache_clear()  # the default warehouse URL is relative: open it from this workspace
    commands = runbook_commands()
    assert len(commands) >= 15
    failures = []
    try:
        for command in commands:
            if "<snapshot_id>" in command:
                partition = re.search(r"--partition (\S+)", command).group(1)  # type: ignore[union-attr]
                command = command.replace("<snapshot_id>", _current_snapshot(tmp_path, partition))
            code = main(shlex.split(command))
            output = capsys.readouterr()
            if code != 0:
                failures.append(f"datafactory {command} -> exit {code}\n{output.out[-800:]}{output.err[-800:]}")
    finally:
        get_engine.cache_clear()
        api.stop()
    assert failures == []
