"""A partition's inputs as the write consumes them: validated chunks, read afresh on every iteration.

Reading, validating and writing go chunk by chunk (about FACTORY_CHUNK_BYTES of input each, in
delivery order), so memory holds one chunk, not the partition (and the next one, read ahead while the
warehouse takes the current one: the two overlap on two cores). Iterating again reads the files again:
a retried attempt starts from the sources, not from what a failed attempt held.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from schemas.datasets import DatasetSpec
from schemas.manifest import SourceManifest
from schemas.settings import DEFAULT_CHUNK_BYTES
from tasks.manifests import asset_error, asset_files, check_fetched_unchanged, delivery_order
from tasks.read import UnreadableAsset, read_chunks
from tasks.validate import ValidatedBatch, validate_batch

_END = object()


@dataclass
class Delivery:
    """The verified manifests of one partition, readable as validated chunks in delivery order."""

    spec: DatasetSpec
    manifests: list[SourceManifest]
    root: Path
    partition_key: date
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    read_ahead: bool = True  # read and validate the next chunk while the caller writes this one
    stages: dict[str, float] = field(default_factory=dict)  # "read" and "validate" seconds, over all chunks

    def __iter__(self) -> Iterator[ValidatedBatch]:
        self.stages.update(read=0.0, validate=0.0)
        return self._read_ahead() if self.read_ahead else self._chunks()

    def _chunks(self) -> Generator[ValidatedBatch, None, None]:
        with asset_files(self.manifests, self.root) as paths:
            check_fetched_unchanged(self.manifests, paths)
            # chunks must follow delivery order: an event's first record in the run is its earliest delivery
            chunks = read_chunks(self.spec, delivery_order(self.manifests), paths, self.chunk_bytes)
            while True:
                began = time.perf_counter()
                try:
                    raw = next(chunks, None)
                except UnreadableAsset as exc:
                    raise asset_error(exc.manifest, exc.index, "format", str(exc)) from None
                self.stages["read"] += time.perf_counter() - began
                if raw is None:
                    return
                began = time.perf_counter()
                batch = validate_batch(self.spec, raw, self.partition_key)
                del raw  # the validated chunk holds what the write needs
                self.stages["validate"] += time.perf_counter() - began
                yield batch
                del batch  # before the next chunk is read

    def _read_ahead(self) -> Iterator[ValidatedBatch]:
        """`_chunks` on a reading thread, at most one chunk ahead; its errors are raised here, and
        when the caller stops early (a failed write) the thread stops and closes its files."""
        handoff: queue.Queue[object] = queue.Queue(maxsize=1)
        stop = threading.Event()

        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    handoff.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            chunks = self._chunks()
            try:
                for batch in chunks:
                    if not put(batch):
                        return
                    del batch
                put(_END)
            except BaseException as exc:  # handed to the consumer, which raises it
                put(exc)
            finally:
                chunks.close()

        reader = threading.Thread(target=produce, name="datafactory-read-ahead", daemon=True)
        reader.start()
        try:
            while True:
                item = handoff.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
                del item
        finally:
            stop.set()
            reader.join()
