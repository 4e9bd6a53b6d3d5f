"""A throwaway PostgreSQL cluster on a loopback port, for tests and benchmarks (never a mock)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def find_pg_bin() -> Path | None:
    """The newest Debian PostgreSQL server binaries, or those on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    bin_dir: Path
    data_dir: Path
    port: int
    as_user: list[str]
    options: str = ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def crash(self) -> None:
        """Stop the server the hard way (as a crash or an operator's `-m immediate` does); data is kept."""
        subprocess.run([*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate",
                        "-w", "stop"], check=True, capture_output=True)

    def resume(self) -> None:
        """Start it again on the same port and data."""
        subprocess.run([*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-o", self.options,
                        "-l", str(self.data_dir.parent / "server.log"), "-w", "start"], check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
                        "-w", "stop"], check=False, capture_output=True)
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def start_cluster(fsync: bool = False, locale_provider_icu: bool = True) -> Cluster:
    """initdb + pg_ctl start on 127.0.0.1; as root, runs as the `postgres` user (initdb refuses root).

    The default collation is ICU en-US, where 'evt-1' sorts before 'EVT-2': keys that must compare
    bytewise only do so because the tables ask for collation "C".
    """
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb) not found; install postgresql-15")
    base = Path(tempfile.mkdtemp(prefix="factory-pg-"))
    data_dir = base / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    locale = ["--locale-provider=icu", "--icu-locale=en-US", "--locale=C.UTF-8"] if locale_provider_icu else ["--locale=C.UTF-8"]
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "-A", "trust",
                    "-E", "UTF8", *locale], check=True, capture_output=True)
    port = free_port()
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync={'on' if fsync else 'off'}"
    if not fsync:
        options += " -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-o", options, "-l",
                    str(base / "server.log"), "-w", "start"], check=True, capture_output=True)
    return Cluster(bin_dir=bin_dir, data_dir=data_dir, port=port, as_user=as_user, options=options)
