"""Fault injection at step boundaries: raise, or kill -9 the process, before or after a named call.

In-process (`inject`, with pytest's monkeypatch) a fault raises `Injected`. As a subprocess
(`python -m tests.faults SPEC -- commit WAREHOUSE MANIFESTS DAY LAKE [force]`, `-- restore WAREHOUSE
DAY LAKE SNAPSHOT`, or `-- cli ARGS...` for the `datafactory` command itself) the process kills itself
with SIGKILL at the boundary: no except, finally or atexit runs, exactly as when a worker is killed. SPEC is `module:attribute[:before|after[:N]]`, the attribute as the calling
module looks it up (`tasks.commit:write_partition`; a method as `tasks.lake:SnapshotWriter.stage`),
N the call that faults (default 1).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from datetime import date
from functools import wraps
from pathlib import Path
from typing import Any, Callable


class Injected(Exception):
    """The fault a test injected."""


def _target(spec: str) -> tuple[Any, str, str, int]:
    module_name, attr, *rest = spec.split(":")
    when = rest[0] if rest else "after"
    nth = int(rest[1]) if len(rest) > 1 else 1
    owner: Any = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, name, when, nth


def faulty(real: Callable[..., Any], when: str, nth: int, fire: Callable[[], None]) -> Callable[..., Any]:
    calls = {"n": 0}

    @wraps(real)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == nth and when == "before":
            fire()
        result = real(*args, **kwargs)
        if calls["n"] == nth and when == "after":
            fire()
        return result

    return wrapper


def _raise() -> None:
    raise Injected("fault injected at a step boundary")


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def inject(monkeypatch: Any, spec: str) -> None:
    """Raise `Injected` at the boundary SPEC names, in this process."""
    owner, name, when, nth = _target(spec)
    monkeypatch.setattr(owner, name, faulty(getattr(owner, name), when, nth, _raise))


def main(argv: list[str]) -> None:
    spec, separator, action, *rest = argv
    assert separator == "--" and action in ("commit", "restore", "cli")
    from tasks.lake import Lake
    from tasks.storage import open_storage

    owner, name, when, nth = _target(spec)
    setattr(owner, name, faulty(getattr(owner, name), when, nth, _kill))
    if action == "cli":
        from flows.cli import main as cli_main

        sys.exit(cli_main(rest))
    if action == "commit":
        from tests.helpers import commit

        url, manifest_dir, day, lake_url, *flags = rest
        commit(url, Path(manifest_dir), date.fromisoformat(day), force="force" in flags,
               lake=Lake(open_storage(lake_url)))
    else:
        from tests.helpers import restore

        url, day, lake_url, snapshot = rest
        restore(url, Lake(open_storage(lake_url)), date.fromisoformat(day), snapshot)


if __name__ == "__main__":
    main(sys.argv[1:])
