"""Discover source manifests, validate them (schema, rules, asset sha256 and record_count), fingerprint them.

Every way a manifest or its assets can be wrong ends in one `InputError` naming the file, the line and
the field: entries that are not regular files, bytes that are not UTF-8, JSON that is not strict JSON
(tasks/strict_json.py), schema violations, URIs that leave the manifest directory, assets that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timezone
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, cast

import jsonschema
from pydantic import ValidationError

from schemas.datasets import DATASETS, DatasetSpec
from schemas.manifest import Asset, SourceManifest, manifest_json_schema, partition_out_of_range
from schemas.reason_codes import ActionReason
from tasks import digest_cache
from tasks.errors import InputError, StorageError, TransientError, printable
from tasks.processes import private_folder
from tasks.read import RawBatch, UnreadableAsset, count_jsonl_lines, count_records, jsonl_blocks, read_partition
from tasks.strict_json import DuplicateKeyError, loads_strict, value_lines

BATCH_NAMESPACE = uuid.UUID("6f1c1d2e-9a1b-4b8e-8d7a-0c6b1f0e2a11")
MAX_MANIFEST_BYTES = 64 * 2**20  # a manifest of 100,000 assets is ~25 MB


# --- reading a manifest file -------------------------------------------------------------------

def read_regular_file(path: Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file, or an InputError saying what the entry is instead.

    Opened without blocking and judged by fstat on the open descriptor: a FIFO never hangs the run,
    a directory or a broken symlink is named as such."""
    with open_regular_file(path, limit) as handle, _reading(path):
        return handle.read()


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """An error while reading an opened file, as the one-line InputError naming it."""
    try:
        yield
    except OSError as exc:
        raise InputError(path, None, "(file)", f"cannot be read: {exc.strerror or exc}") from None


@contextmanager
def open_regular_file(path: Path, limit: int | None = None) -> Iterator[BinaryIO]:
    """A regular file opened for reading (see read_regular_file), for callers that read it in blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        what = "is a broken symbolic link" if path.is_symlink() else "does not exist"
        raise InputError(path, None, "(file)", what) from None
    except OSError as exc:
        raise InputError(path, None, "(file)", f"cannot be opened: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode)
                    else "a socket" if stat.S_ISSOCK(info.st_mode) else "a device")
            raise InputError(path, None, "(file)", f"is {kind}, not a regular file")
        if limit is not None and info.st_size > limit:
            raise InputError(path, None, "(file)", f"is {info.st_size} bytes; a manifest may hold at most {limit}")
        handle = os.fdopen(fd, "rb", closefd=False)
        os.set_blocking(fd, True)
    except OSError as exc:
        os.close(fd)
        raise InputError(path, None, "(file)", f"cannot be read: {exc.strerror or exc}") from None
    except BaseException:
        os.close(fd)
        raise
    try:
        yield handle
    finally:
        handle.close()
        os.close(fd)


def _field_name(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{printable(part)}" if out else printable(part))
    return out or "(manifest)"


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(manifest_json_schema(), format_checker=jsonschema.FormatChecker())


class ManifestText:
    """A manifest's text and, computed once and only when an error needs it, the line of every value."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text
        self._lines: dict[tuple[str | int, ...], int] | None = None

    def line(self, *where: str | int) -> int:
        """The line of the value at a JSON path, or of its nearest enclosing value."""
        if self._lines is None:
            self._lines = value_lines(self.text)[0]
        key = tuple(where)
        while key not in self._lines and key:
            key = key[:-1]
        return self._lines.get(key, 1)

    def error(self, where: tuple[str | int, ...], message: str, reason: str | None = None) -> InputError:
        return InputError(self.path, self.line(*where), _field_name(where), message, reason)


def _decode(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(path, line, "(file)", f"not valid UTF-8: byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start}") from None
    return text.removeprefix("\ufeff")  # a byte order mark is an encoding marker, not content


def _load(source: ManifestText) -> Any:
    try:
        return loads_strict(source.text)
    except DuplicateKeyError as exc:
        where, line = next(((p, n) for p, n in value_lines(source.text)[1]), ((exc.key,), 1))
        raise InputError(source.path, line, _field_name(where), "appears twice in one object") from None
    except ValueError as exc:
        raise InputError(source.path, _json_error_line(str(exc)), "(json)", f"not valid JSON: {exc}") from None


def _json_error_line(message: str) -> int | None:
    found = re.search(r"line (\d+) column", message)
    return int(found.group(1)) if found else None


def parse_manifest(path: Path) -> SourceManifest:
    """Parse and schema-check one manifest file; the error names file, line and field."""
    try:
        info = path.stat()
    except OSError:
        info = None  # read_regular_file names what the entry is
    if info is not None and stat.S_ISREG(info.st_mode):
        return _parse_manifest_cached(path, info.st_mtime_ns, info.st_size)
    return _parse_manifest(path)


@lru_cache(maxsize=65_536)
def _parse_manifest_cached(path: Path, _mtime_ns: int, _size: int) -> SourceManifest:
    """Memoised on the file's identity: a backfill over many partitions parses each manifest once."""
    return _parse_manifest(path)


def _parse_manifest(path: Path) -> SourceManifest:
    source = ManifestText(path, _decode(path, read_regular_file(path, MAX_MANIFEST_BYTES)))
    raw = _load(source)
    errors = sorted(_validator().iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        error = errors[0]
        where = tuple(error.absolute_path)
        if error.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", error.message)
            raise InputError(path, source.line(*where), _field_name((*where, *missing[:1])), printable(error.message))
        raise source.error(where, printable(error.message))
    if raw["dataset"] not in DATASETS:
        raise source.error(("dataset",), f"unknown dataset {raw['dataset']!r} (known: {', '.join(sorted(DATASETS))})")
    known_versions = DATASETS[raw["dataset"]].schema_versions
    if raw["schema_version"] not in known_versions:
        raise source.error(("schema_version",), f"{printable(raw['schema_version'])!r} is no schema version of dataset "
                           f"{raw['dataset']} (it reads {', '.join(known_versions)}; DatasetSpec.schema_versions)")
    try:
        day = date.fromisoformat(raw["partition_key"])
    except ValueError:
        raise source.error(("partition_key",), f"{raw['partition_key']!r} is not a calendar date") from None
    if (why := partition_out_of_range(day)) is not None:
        raise source.error(("partition_key",), why)
    files = [posixpath.normpath(a["uri"]) if not a["uri"].startswith("s3://") else a["uri"] for a in raw["assets"]]
    for index, name in enumerate(files):  # `a.jsonl` and `./a.jsonl` are one file
        if name in files[:index]:
            raise source.error(("assets", index, "uri"), f"{raw['assets'][index]['uri']!r} is listed twice "
                               f"(also assets[{files.index(name)}])")
    for index, asset in enumerate(raw["assets"]):
        _check_uri(source, index, asset["uri"])
    try:
        manifest = SourceManifest(**raw, path=path)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise source.error(tuple(first["loc"]), printable(first["msg"])) from None
    if manifest.produced_at.tzinfo is None:  # the schema's date-time format requires one; do not rely on it
        raise source.error(("produced_at",), f"{raw['produced_at']!r} has no UTC offset")
    try:
        produced = manifest.produced_at.astimezone(timezone.utc).date()
    except OverflowError:
        produced = date.max
    if (why := partition_out_of_range(produced)) is not None:
        raise source.error(("produced_at",), why.replace("partitions", "times"))
    return manifest


S3_URI = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)", re.S)


def _check_uri(source: ManifestText, index: int, uri: str) -> None:
    """Rules the schema cannot say: a relative path inside the manifest directory, or s3://bucket/key."""
    where = ("assets", index, "uri")
    if printable(uri) != uri:
        raise source.error(where, f"{printable(uri)!r} holds control characters")
    if uri.startswith("s3://"):
        if not S3_URI.fullmatch(uri):
            raise source.error(where, f"{uri!r} is not s3://bucket/key")
        return
    if "://" in uri or uri.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", uri):
        raise source.error(where, f"{uri!r} must be relative to the manifest directory")


# --- assets ------------------------------------------------------------------------------------

S3_CACHE_PREFIX = "datafactory-s3-"


def _line_of_asset(manifest: SourceManifest, index: int, field: str) -> int | None:
    try:
        source = ManifestText(manifest.path, _decode(manifest.path, read_regular_file(manifest.path)))
    except InputError:
        return None
    return source.line("assets", index, field)


def asset_error(manifest: SourceManifest, index: int, field: str, message: str,
                 reason: str | None = None) -> InputError:
    return InputError(manifest.path, _line_of_asset(manifest, index, field), f"assets[{index}].{field}", message, reason)


def fetch_s3_asset(manifest: SourceManifest, index: int, into: Path) -> Path:
    """A private local copy of an `s3://bucket/key` asset, read through the lake's storage (prefect-aws).

    The copy's name is a hash of the URI, never the key itself: a key may hold `../`."""
    from schemas.settings import load_settings
    from tasks.storage import MissingObject, StoreUnusable, open_storage

    uri = manifest.assets[index].uri
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    settings = load_settings()
    try:
        data = open_storage(f"s3://{bucket}", None, settings.s3_endpoint_url).read(key)
    except MissingObject:
        raise asset_error(manifest, index, "uri", f"{uri} does not exist") from None
    except StoreUnusable as exc:
        raise asset_error(manifest, index, "uri", f"{uri}: {exc.why}") from None
    except TransientError:
        raise
    except StorageError as exc:
        raise asset_error(manifest, index, "uri", str(exc)) from None
    local = into / hashlib.sha256(uri.encode()).hexdigest()[:32]
    local.write_bytes(data)
    return local


@contextmanager
def asset_files(manifests: list[SourceManifest], root: Path) -> Iterator[dict[tuple[str, int], Path]]:
    """Local paths of every asset of `manifests`, keyed by (manifest id, asset index); s3:// assets are
    fetched into a private folder that is removed afterwards (and by the next run, if this one is killed)."""
    folder: Path | None = None
    try:
        paths: dict[tuple[str, int], Path] = {}
        for manifest in manifests:
            for index, asset in enumerate(manifest.assets):
                if asset.uri.startswith("s3://") and folder is None:
                    folder = private_folder(S3_CACHE_PREFIX)
                paths[(manifest.manifest_id, index)] = (fetch_s3_asset(manifest, index, folder) if folder is not None
                                                        and asset.uri.startswith("s3://")
                                                        else resolve_asset(manifest, index, root))
        yield paths
    finally:
        if folder is not None:
            for file in folder.glob("*"):
                file.unlink(missing_ok=True)
            folder.rmdir()


def resolve_asset(manifest: SourceManifest, index: int, root: Path) -> Path:
    """The local path of a local asset; a URI that escapes the manifest root is rejected."""
    asset = manifest.assets[index]
    candidate = (manifest.base_dir / asset.uri).resolve()
    if not candidate.is_relative_to(root.resolve()):
        raise asset_error(manifest, index, "uri", f"{asset.uri!r} escapes the manifest directory {root}")
    return candidate


@contextmanager
def _asset_errors(manifest: SourceManifest, index: int) -> Iterator[None]:
    """A file problem (not a regular file, unreadable) named by the manifest line of the asset."""
    try:
        yield
    except InputError as exc:
        message = str(exc).split(": (file): ", 1)[-1]
        raise asset_error(manifest, index, "uri", f"{manifest.assets[index].uri!r} {message}") from None


def _read_asset(manifest: SourceManifest, index: int, path: Path) -> bytes:
    with _asset_errors(manifest, index):
        return read_regular_file(path)


def _digest_and_count(manifest: SourceManifest, index: int, path: Path) -> tuple[str, Callable[[], int]]:
    """sha256 of an asset and how to count its records. JSONL is read once, block by block (memory
    holds one block, not the file); CSV and Parquet are read whole and counted only when asked. A local
    file verified before and not touched since is not read again (tasks/digest_cache.py)."""
    fmt = manifest.assets[index].format
    local = not manifest.assets[index].uri.startswith("s3://")  # a fetched copy is a new file every time
    key, known = digest_cache.remembered(path, fmt) if local else (None, None)
    if known is not None:
        return known[0], lambda: known[1]
    if fmt != "jsonl":
        data = _read_asset(manifest, index, path)
        digest = hashlib.sha256(data).hexdigest()

        def count() -> int:
            found = _count(manifest, index, data)
            digest_cache.remember(key, digest, found)
            return found
        return digest, count
    hashing, records = hashlib.sha256(), 0
    with _asset_errors(manifest, index), open_regular_file(path) as handle, _reading(path):
        for _, block in jsonl_blocks(cast(BinaryIO, _Hashing(handle, hashing))):
            records += count_jsonl_lines(block)
    digest_cache.remember(key, hashing.hexdigest(), records)
    return hashing.hexdigest(), lambda: records


class _Hashing:
    """A file whose every byte read also feeds a digest (the BOM and all: sha256 is of the file)."""

    def __init__(self, handle: BinaryIO, digest: Any) -> None:
        self.handle, self.digest = handle, digest

    def read(self, size: int) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


def _count(manifest: SourceManifest, index: int, data: bytes) -> int:
    try:
        return count_records(data, manifest.assets[index].format)
    except ValueError as exc:
        raise asset_error(manifest, index, "format", f"{manifest.assets[index].uri} {exc}") from None


def verify_asset(manifest: SourceManifest, index: int, path: Path, accept_changed: bool = False) -> Asset:
    """Check that an asset exists, has the declared sha256 and record_count; return it as it is now.

    With `accept_changed` a changed file is not an error: the returned asset carries the file's
    actual sha256 and record count, so the fingerprint (and the batch) are new."""
    asset: Asset = manifest.assets[index]
    digest, count = _digest_and_count(manifest, index, path)
    if digest != asset.sha256 and accept_changed:
        return asset.model_copy(update={"sha256": digest, "record_count": count()})
    if digest != asset.sha256:
        raise asset_error(manifest, index, "sha256", f"declared {asset.sha256[:12]}… but {asset.uri} has "
                           f"{digest[:12]}…", ActionReason.SOURCE_FINGERPRINT_CHANGED)
    found = count()
    if found != asset.record_count:
        raise asset_error(manifest, index, "record_count",
                           f"declared {asset.record_count} records but {asset.uri} has {found}")
    return asset


def verify_manifests(manifests: list[SourceManifest], root: Path, accept_changed: bool = False) -> list[SourceManifest]:
    """Every asset of every manifest verified (fetched first when on S3); the manifests as they are now."""
    verified = []
    try:
        with asset_files(manifests, root) as paths:
            for manifest in manifests:
                assets = tuple(verify_asset(manifest, index, paths[(manifest.manifest_id, index)], accept_changed)
                               for index in range(len(manifest.assets)))
                verified.append(manifest.model_copy(update={"assets": assets}))
    finally:
        digest_cache.flush()  # what was verified is remembered, in one write
    return verified


# --- discovery ---------------------------------------------------------------------------------

def discover_manifests(manifest_dir: Path) -> list[SourceManifest]:
    """Every manifest in the directory, parsed; manifest ids must be unique."""
    if not manifest_dir.is_dir():
        raise InputError(manifest_dir, None, "FACTORY_MANIFEST_DIR", "is not a directory")
    manifests: list[SourceManifest] = []
    seen: dict[str, Path] = {}
    for path in sorted(manifest_dir.glob("*.json")):
        manifest = parse_manifest(path)
        if manifest.manifest_id in seen:
            source = ManifestText(path, _decode(path, read_regular_file(path)))
            raise source.error(("manifest_id",), f"{manifest.manifest_id!r} is also declared by "
                               f"{seen[manifest.manifest_id]}")
        seen[manifest.manifest_id] = path
        manifests.append(manifest)
    return manifests


def declared_manifests(manifest_dir: Path, landing_dir: Path) -> list[SourceManifest]:
    """Every dataset's manifests: delivered datasets' from the manifest dir, pulled ones' from the landing dir."""
    pulled = {name for name, spec in DATASETS.items() if spec.pulled}
    # a factory of pulled datasets only needs no manifest dir
    delivered = [m for m in discover_manifests(manifest_dir) if m.dataset not in pulled] if manifest_dir.is_dir() else []
    if not pulled or not landing_dir.is_dir():
        return delivered
    return delivered + [m for m in discover_manifests(landing_dir) if m.dataset in pulled]


def delivery_order(manifests: Iterable[SourceManifest]) -> list[SourceManifest]:
    """Deliveries in the order they were produced; ties broken by manifest id."""
    return sorted(manifests, key=lambda m: (m.partition_key, m.produced_at, m.manifest_id))


def partition_manifests(manifest_dir: Path, dataset: str, partition_key: date, accept_changed: bool = False,
                        discovered: list[SourceManifest] | None = None) -> list[SourceManifest]:
    """The verified manifests of one (dataset, partition), in delivery order; from `discovered` when the
    caller (a backfill) has parsed the directory already, instead of parsing it again.

    With `accept_changed`, assets whose files changed are taken as they are now: the returned manifest
    carries their actual sha256 and record count, so the fingerprint (and the batch) are new.
    """
    chosen = [m for m in (discover_manifests(manifest_dir) if discovered is None else discovered)
              if m.dataset == dataset and m.partition_key == partition_key]
    return delivery_order(verify_manifests(chosen, manifest_dir, accept_changed))


def source_fingerprint(manifests: Iterable[SourceManifest]) -> str:
    """One hash of everything a partition consumes: manifest ids and each asset's declared content."""
    described = [
        [m.manifest_id, [[a.uri, a.format, a.sha256, a.record_count] for a in m.assets]]
        for m in sorted(manifests, key=lambda m: m.manifest_id)
    ]
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()


def batch_id_for(dataset: str, partition_key: date, fingerprint: str) -> str:
    """The same inputs for the same partition are the same batch, on every run."""
    return str(uuid.uuid5(BATCH_NAMESPACE, f"{dataset}|{partition_key.isoformat()}|{fingerprint}"))


def find_manifest(manifest_dir: Path, manifest_id: str, landing_dir: Path | None = None) -> SourceManifest:
    """The manifest with this id: a delivery's, or (with `landing_dir`) a pull's."""
    found = declared_manifests(manifest_dir, landing_dir) if landing_dir is not None else discover_manifests(manifest_dir)
    for manifest in found:
        if manifest.manifest_id == manifest_id:
            return manifest
    raise InputError(manifest_dir, None, "manifest_id", f"no manifest {manifest_id!r} in {manifest_dir}")


def check_fetched_unchanged(manifests: list[SourceManifest], paths: dict[tuple[str, int], Path]) -> None:
    """An s3:// asset is fetched again for reading, so its digest is checked again: the object may have
    changed since the (cached) verification."""
    for manifest in manifests:
        for index, asset in enumerate(manifest.assets):
            if asset.uri.startswith("s3://") and _file_sha256(paths[(manifest.manifest_id, index)]) != asset.sha256:
                raise asset_error(manifest, index, "sha256", f"{asset.uri} changed since it was verified",
                                  ActionReason.SOURCE_FINGERPRINT_CHANGED)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 * 2**20):
            digest.update(block)
    return digest.hexdigest()


def read_manifests(spec: DatasetSpec, manifests: list[SourceManifest], root: Path) -> RawBatch:
    """Every asset of already-verified manifests as one batch (tests and benchmarks; a partition run
    reads in chunks, tasks/delivery.py)."""
    with asset_files(manifests, root) as paths:
        check_fetched_unchanged(manifests, paths)
        try:
            return read_partition(spec, manifests, paths)
        except UnreadableAsset as exc:
            raise asset_error(exc.manifest, exc.index, "format", str(exc)) from None
