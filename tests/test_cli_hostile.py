"""`datafactory` against hostile arguments, tampered snapshots, a full disk and a busy database:
one line on stderr and the documented exit code, never a traceback, and nothing changed that should not.

Most cases call the CLI's `main` in this process (they fail before any flow runs); a full disk, a busy
database and one tampered snapshot go through a real subprocess, as users run the command."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from schemas.tables import BRONZE, partition_state
from tasks.database import get_engine, reading
from tasks.lake import Lake, read_marker
from tasks.lake_state import snapshot_listing
from tasks.storage import open_storage
from tests.helpers import DAYS, cli, commit_with_evidence
from tests.test_cli import api_url, datafactory, workspace  # noqa: F401  (fixtures)

D14, D16, D17 = DAYS


def one_line(result: subprocess.CompletedProcess[str] | tuple[int, str, str], code: int) -> str:
    """The single stderr line of a failed command, after checking its exit code."""
    returncode, stderr = (result.returncode, result.stderr) if isinstance(result, subprocess.CompletedProcess) \
        else (result[0], result[2])
    lines = stderr.strip().splitlines()
    assert (returncode, len(lines)) == (code, 1), stderr
    assert "Traceback" not in stderr and lines[0].startswith("datafactory")
    return lines[0]


@pytest.mark.parametrize(("args", "says"), [
    (["run", "--operator", "x" * 200], "at most 128 characters (got 200)"),
    (["run", "--operator", "bad\nname"], "holds control characters"),
    (["replay", "--manifest-id", "m-1\n"], "is not a manifest id"),
    (["restore", "--partition", "2026-04-17", "--snapshot", "../../dt=2026-04-16/_snapshots/x"], "is not a snapshot id"),
    (["backfill", "--start", "2026-04-14", "--end", "2026-04-17", "--mode", "execute", "--concurrency", "0"],
     "is not between 1 and 64"),
    (["run", "--dataset", "orders\n"], "unknown dataset"),
    (["run", "--partition", "2026-13-01"], "is not a date"),
    (["health", "--days", "-3"], "is not between 1 and 3660"),
    (["run", "--partition", "9999-12-31"], "outside the partitions the factory handles"),
    (["backfill", "--start", "1900-01-01", "--end", "9998-12-31", "--mode", "dry-run"], "backfill it in windows"),
])
def test_hostile_arguments_are_one_line_and_exit_2(workspace: Path, args: list[str], says: str,
                                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    assert says in one_line(cli(monkeypatch, capsys, workspace, *args), 2)
    assert not (workspace / "warehouse.db").exists()  # refused before anything was opened


@pytest.mark.parametrize(("env", "says"), [
    ({"FACTORY_LAKE_RETENTION": "many"}, "FACTORY_LAKE_RETENTION: Input should be a valid integer"),
    ({"FACTORY_DATABASE_URL": "sqlite:////proc/nowhere/w.db"}, "FACTORY_DATABASE_URL: cannot create its folder"),
    ({"FACTORY_REPORT_DIR": "/proc/nowhere"}, "FACTORY_REPORT_DIR: cannot create it"),
    ({"FACTORY_HEARTBEAT_SECONDS": "inf"}, "FACTORY_HEARTBEAT_SECONDS: Input should be a finite number"),
    ({"FACTORY_HEARTBEAT_SECONDS": "0"}, "FACTORY_HEARTBEAT_SECONDS: Input should be greater than 0"),
    ({"FACTORY_DEFAULT_PARTITION": "9999-12-31"}, "outside the partitions the factory handles"),
    ({"FACTORY_DATABASE_URL": "garbage"}, "FACTORY_DATABASE_URL: is not a database URL"),
    ({"FACTORY_DATABASE_URL": "mysql://h/x"}, "mysql is not a supported warehouse"),
])
def test_settings_that_cannot_work_are_one_line_naming_them(workspace: Path, env: dict[str, str], says: str,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    assert says in one_line(cli(monkeypatch, capsys, workspace, "run", "--mode", "dry-run", env=env), 2)


def test_a_dot_env_that_is_not_utf8_is_one_line(workspace: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    (workspace / ".env").write_bytes(b"FACTORY_LAKE_RETENTION=\xff\n")
    monkeypatch.chdir(workspace)
    assert ".env: not valid UTF-8" in one_line(cli(monkeypatch, capsys, workspace, "status"), 2)


def test_hostile_arguments_through_the_console_script(workspace: Path) -> None:
    """The same refusal in a real process: one line, exit 2."""
    assert "at most 128 characters" in one_line(datafactory(workspace, "run", "--operator", "x" * 200), 2)


@pytest.mark.timeout(120)  # a FIFO that is read would block forever
def test_a_fifo_in_the_manifest_directory_is_named_not_read(workspace: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    os.mkfifo(workspace / "manifests" / "incoming.json")
    line = one_line(cli(monkeypatch, capsys, workspace, "manifests", "validate", str(workspace / "manifests")), 2)
    assert line.endswith("incoming.json: (file): is a FIFO, not a regular file")


def _committed_lake(workspace: Path) -> tuple[str, Lake]:
    url = f"sqlite:///{workspace / 'warehouse.db'}"
    lake = Lake(open_storage(str(workspace / "lake")))
    for day in DAYS:
        commit_with_evidence(url, workspace / "manifests", day, lake, workspace / "reports")
    # a second snapshot to return to
    commit_with_evidence(url, workspace / "manifests", D17, lake, workspace / "reports", force=True)
    return url, lake


def _state(url: str, lake: Lake) -> tuple:
    return (snapshot_listing(get_engine(url), lake, "tickets", D17), read_marker(lake, "tickets", D17),
            read_marker(lake, "tickets", D16))


@pytest.mark.parametrize("tamper", ["other_partition", "record_claims_other_partition", "data_file_missing",
                                    "byte_flipped", "record_truncated", "record_missing"])
def test_restore_refuses_a_damaged_or_foreign_snapshot_in_one_line(workspace: Path, tamper: str,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    url, lake = _committed_lake(workspace)
    [older, _] = [m["snapshot_id"] for m in snapshot_listing(get_engine(url), lake, "tickets", D17)]
    prefix = workspace / "lake" / "tickets" / "dt=2026-04-17"
    record = prefix / "_snapshots" / f"{older}.json"
    data_file = prefix / json.loads(record.read_text())["files"][0]["path"]
    snapshot = older
    if tamper == "other_partition":
        snapshot = snapshot_listing(get_engine(url), lake, "tickets", D16)[0]["snapshot_id"]
    elif tamper == "record_claims_other_partition":
        record.write_text(record.read_text().replace('"partition_key": "2026-04-17"', '"partition_key": "2026-04-16"'))
    elif tamper == "data_file_missing":
        data_file.unlink()
    elif tamper == "byte_flipped":
        raw = bytearray(data_file.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data_file.write_bytes(bytes(raw))
    elif tamper == "record_truncated":
        record.write_text(record.read_text()[:40])
    else:
        record.unlink()
    before = _state(url, lake)
    run = (datafactory(workspace, "restore", "--partition", "2026-04-17", "--snapshot", snapshot)
           if tamper == "byte_flipped" else  # one case as a real process
           cli(monkeypatch, capsys, workspace, "restore", "--partition", "2026-04-17", "--snapshot", snapshot))
    line = one_line(run, 2)
    expected = {"other_partition": "is not a committed snapshot of tickets/2026-04-17",
                "record_claims_other_partition": "[snapshot_record_changed]",
                "data_file_missing": "does not exist [lake_file_missing]",
                "byte_flipped": "[lake_file_corrupt]", "record_truncated": "[snapshot_record_changed]",
                "record_missing": "does not exist [snapshot_record_missing]"}[tamper]
    assert expected in line
    assert _state(url, lake) == before


def test_reads_do_not_wait_behind_a_writer_holding_sqlite(workspace: Path) -> None:
    """A run holds SQLite's write lock; status, checks and health answer at once (WAL readers)."""
    url, _ = _committed_lake(workspace)
    holder = sqlite3.connect(workspace / "warehouse.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for args in (["status"], ["checks", "--partition", "2026-04-17"], ["health"],
                     ["lake", "snapshots", "--partition", "2026-04-17"]):
            result = datafactory(workspace, *args, timeout=60)  # SQLite's busy timeout is 600 s
            # health exits 1: the shipped orders were never run here; it answered all the same
            assert result.returncode == (1 if args == ["health"] else 0) and result.stderr == "", result.stderr
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _mount_tiny_lake(folder: Path, kilobytes: int) -> bool:
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(folder)],
                             capture_output=True)
    return mounted.returncode == 0


@pytest.mark.flow
def test_a_full_disk_under_the_lake_is_one_line_and_rolls_the_warehouse_back(workspace: Path, api_url: str) -> None:
    """A real tmpfs of 64 KiB as the lake, nearly full: the run fails in one line naming the lake path,
    exit 1, the warehouse has nothing of it; with space again, the rerun succeeds and leaves no temp files."""
    lake = workspace / "tiny-lake"
    if not _mount_tiny_lake(lake, 64):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN); the ENOSPC path is covered by test_faults")
    try:
        filler = lake / "filler"
        with filler.open("wb") as out:
            try:
                out.write(b"\0" * 63 * 1024)
            except OSError:
                pass
        env = {"FACTORY_LAKE_URL": str(lake)}
        line = one_line(datafactory(workspace, "run", "--partition", "2026-04-16", api_url=api_url, extra_env=env), 1)
        assert line.startswith(f"datafactory: {lake}/tickets/dt=2026-04-16/") and "the disk is full" in line
        url = f"sqlite:///{workspace / 'warehouse.db'}"
        with reading(get_engine(url)) as conn:
            assert conn.execute(select(BRONZE["tickets"])).first() is None
            assert conn.execute(select(partition_state.c.status)).scalars().all() == ["failed"]
        filler.unlink()
        again = datafactory(workspace, "run", "--partition", "2026-04-16", api_url=api_url, extra_env=env)
        assert again.returncode == 0, again.stderr
        leftovers = [p for p in lake.rglob("*") if p.name.endswith((".partial", ".tmp")) or "_tmp" in p.parts]
        assert leftovers == []
    finally:
        get_engine.cache_clear()
        subprocess.run(["umount", str(lake)], capture_output=True)


def test_the_warehouse_down_is_one_line(workspace: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    down = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    line = one_line(cli(monkeypatch, capsys, workspace, "status", env={"FACTORY_DATABASE_URL": down}), 1)
    assert line.startswith(f"datafactory: {down}: FACTORY_DATABASE_URL: the warehouse failed")
