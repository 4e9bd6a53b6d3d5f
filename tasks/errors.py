"""Typed errors: terminal ones (bad input) are never retried, transient ones are."""

from __future__ import annotations

import re
from pathlib import Path

# C0 controls, DEL, C1 controls, line/paragraph separators and lone surrogates: nothing a one-line
# message or a database text column may carry as is
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """`text` on one line: control characters, line separators and lone surrogates escaped as `\\xNN`/`\\uNNNN`.

    Input (file names, field values, exception messages) reaches messages and the ledger through here,
    so an error is always one line and PostgreSQL never sees a NUL."""
    return _UNPRINTABLE.sub(_escape, str(text))


class FactoryError(Exception):
    """Base of errors the CLI turns into a one-line message."""

    exit_code = 2

    def __init__(self, message: object = "") -> None:
        super().__init__(printable(message))


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


class StorageError(FactoryError):
    """The lake (or a source store) could not be read or written: full disk, permissions, a vanished
    folder. The run failed; the warehouse was rolled back; the next commit cleans up what was left."""

    exit_code = 1


class ContractDefinitionError(FactoryError):
    """The dataset's contract itself is broken (a check that cannot run): a bug in `schemas/`, not in the data."""

    exit_code = 1


class SchemaMismatchError(FactoryError):
    """The warehouse's tables are not what the code needs (a factory revision behind or ahead, a dataset
    change that needs an operator): nothing ran; the message names both sides and the command."""

    exit_code = 2
