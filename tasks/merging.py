"""A value folded from many chunks' parts without refolding all of it for every chunk."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

import polars as pl

Part = TypeVar("Part", pl.DataFrame, pl.Series)


class Merging(Generic[Part]):
    """Parts are kept aside and folded into the merged value (by `fold`, over the merged value and the
    parts) once they outnumber it in rows: each row is folded a bounded number of times, so a
    partition of many chunks costs no more than one of few."""

    def __init__(self, fold: Callable[[list[Part]], Part]) -> None:
        self._fold: Callable[[list[Part]], Part] = fold
        self._merged: Part | None = None
        self._pending: list[Part] = []

    def add(self, part: Part) -> None:
        self._pending.append(part)
        if sum(len(p) for p in self._pending) >= (len(self._merged) if self._merged is not None else 0):
            self._merge()

    def _merge(self) -> None:
        parts = ([self._merged] if self._merged is not None else []) + self._pending
        self._pending = []
        if parts:
            self._merged = self._fold(parts)

    @property
    def value(self) -> Part | None:
        """Everything added so far, folded (None when nothing was)."""
        if self._pending:
            self._merge()
        return self._merged
