"""Typed errors: terminal ones (bad input) are never retried, transient ones are."""

from __future__ import annotations

from pathlib import Path


class FactoryError(Exception):
    """Base of errors the CLI turns into a one-line message."""

    exit_code = 2


class InputError(FactoryError):
    """Bad input: names the file, the line and the field. Terminal: retrying cannot help."""

    def __init__(self, path: Path | str, line: int | None, field: str, message: str,
                 reason_code: str | None = None) -> None:
        self.path, self.line, self.field, self.reason_code = str(path), line, field, reason_code
        where = f"{self.path}:{line}" if line else self.path
        suffix = f" [{reason_code}]" if reason_code else ""
        super().__init__(f"{where}: {field}: {message}{suffix}")


class PartitionLockedError(FactoryError):
    """Another run holds the partition and we chose not to wait."""

    exit_code = 1


class TransientError(FactoryError):
    """An infrastructure hiccup (connection loss, throttling) worth retrying with backoff."""

    exit_code = 1
