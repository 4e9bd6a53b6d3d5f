"""Where lake objects (and `s3://` source assets) live: a local folder or S3 through prefect-aws.

One small interface, two implementations. Keys are relative, `/`-separated paths under the root
(a folder, or `s3://bucket/prefix`). S3 goes through a prefect-aws `S3Bucket` block: a saved block by
name (FACTORY_S3_BLOCK), or one built from the URL with the standard AWS variables (credentials,
region, AWS_ENDPOINT_URL) or FACTORY_S3_ENDPOINT_URL for S3-compatible stores such as MinIO.

Failures are typed: `TransientError` (connection lost, throttled: retried), `MissingObject`,
`StoreUnusable` (no bucket, no credentials, access denied) and `StorageError` (a local write that
failed: a full disk, permissions). Callers add whose setting or manifest names the object.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from tasks.errors import InputError, StorageError, TransientError

PARTIAL_SUFFIX = ".partial"  # an atomic write in progress; a leftover of a killed one when no writer holds it



Keys = list[str]  # object keys; an alias, since the storages' own `list` method shadows the builtin

class MissingObject(StorageError):
    """The key names nothing in the store."""


class StoreUnusable(StorageError):
    """The store itself cannot be used: no such bucket, no credentials, access denied."""

    def __init__(self, url: str, why: str) -> None:
        self.url, self.why = url, why
        super().__init__(f"{url}: {why}")


def _local_failure(path: Path, action: str, exc: OSError) -> StorageError:
    why = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    return StorageError(f"{path}: could not {action}: {why}")


class Storage(Protocol):
    @property
    def url(self) -> str: ...

    def read(self, key: str) -> bytes: ...
    def write(self, key: str, data: bytes) -> None: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int | None: ...
    def list(self, prefix: str, partial: bool = False) -> Keys: ...
    def delete(self, keys: Keys) -> None: ...
    def move(self, source_prefix: str, target_prefix: str) -> None: ...
    def prune(self, prefix: str) -> None: ...
    def check(self) -> None: ...


@dataclass
class LocalStorage:
    root: Path

    @property
    def url(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        """The file of a key; a key that would leave the root (`..`, absolute) is refused."""
        parts = key.split("/")
        if key.startswith("/") or ".." in parts or "\x00" in key:
            raise StorageError(f"{self.root}: key {key!r} would leave the lake folder")
        return self.root / key

    def read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise MissingObject(f"{path}: does not exist") from None
        except IsADirectoryError:
            raise MissingObject(f"{path}: is a folder, not a file") from None
        except OSError as exc:
            raise _local_failure(path, "read", exc) from exc

    def write(self, key: str, data: bytes) -> None:
        """Atomic: a reader sees the old object or the new one, never half of it."""
        path = self._path(key)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(data)
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise _local_failure(path, "write", exc) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int | None:
        """Bytes of an object; None when there is none."""
        try:
            return self._path(key).stat().st_size if self._path(key).is_file() else None
        except OSError:
            return None

    def list(self, prefix: str, partial: bool = False) -> Keys:
        """Keys under `prefix`; with `partial`, also the unfinished writes (to clean up after a killed one)."""
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*")
                      if p.is_file() and (partial or not p.name.endswith(PARTIAL_SUFFIX)))

    def delete(self, keys: Keys) -> None:
        try:
            for key in keys:
                self._path(key).unlink(missing_ok=True)
            for key in keys:  # drop folders the deletes emptied
                parent = self._path(key).parent
                while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent
        except OSError as exc:
            raise _local_failure(self.root, "delete", exc) from exc

    def check(self) -> None:
        """Fail with one clear line now, not mid-run, when the lake folder cannot be used."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(self.root, None, "FACTORY_LAKE_URL", f"cannot create the lake folder: "
                             f"{exc.strerror or exc}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise InputError(self.root, None, "FACTORY_LAKE_URL", "the lake folder is not writable")

    def move(self, source_prefix: str, target_prefix: str) -> None:
        target = self._path(target_prefix)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self._path(source_prefix)), str(target))
        except OSError as exc:
            raise _local_failure(target, "publish", exc) from exc
        self.prune(source_prefix.rsplit("/", 1)[0])

    def prune(self, prefix: str) -> None:
        """Remove empty folders under `prefix` (and `prefix` itself when empty): S3 has no folders to leave."""
        base = self._path(prefix)
        if not base.is_dir():
            return
        for folder in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()
        if base != self.root and not any(base.iterdir()):
            base.rmdir()


class S3Storage:
    """Objects under s3://bucket/prefix, through the S3Bucket block's own boto3 client."""

    def __init__(self, bucket: Any, url: str) -> None:
        self.bucket = bucket
        self.url = url
        self.folder = bucket.bucket_folder.strip("/")
        self._client = bucket.credentials.get_s3_client()

    def _key(self, key: str) -> str:
        return f"{self.folder}/{key}" if self.folder else key

    def object_url(self, key: str) -> str:
        """The object's own address (the block's bucket and folder, whatever URL named the lake)."""
        return f"s3://{self.bucket.bucket_name}/{self._key(key)}"

    def connection_settings(self) -> dict[str, str | None]:
        """What another S3 client (DuckDB's httpfs) needs to reach the same objects as this one."""
        credentials = self._client._request_signer._credentials  # the client's resolved credentials
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
        return {"key_id": frozen.access_key if frozen else None, "secret": frozen.secret_key if frozen else None,
                "session_token": frozen.token if frozen else None, "region": self._client.meta.region_name,
                "endpoint_url": self._client.meta.endpoint_url}

    def _call(self, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        try:
            return getattr(self._client, method)(Bucket=self.bucket.bucket_name, **kwargs)
        except (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError) as exc:
            raise TransientError(f"{self.url}: {exc}") from exc
        except NoCredentialsError as exc:
            raise StoreUnusable(self.url, "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                                "or FACTORY_S3_BLOCK") from exc
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in ("SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                        "ServiceUnavailable", "503", "500"):
                raise TransientError(f"{self.url}: {code}") from exc
            if code in ("NoSuchKey", "404", "NotFound"):
                raise MissingObject(f"{self.url}: {kwargs.get('Key', '')}: does not exist") from exc
            if code in ("NoSuchBucket", "AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                        "AllAccessDisabled", "InvalidBucketName"):
                why = {"NoSuchBucket": "the bucket does not exist", "403": "access denied"}.get(code, code)
                raise StoreUnusable(self.url, why) from exc
            raise StorageError(f"{self.url}: {method} failed: {code} {error.get('Message', '')}".rstrip()) from exc
        except BotoCoreError as exc:  # anything else the client raises (bad endpoint URL, ...)
            raise StorageError(f"{self.url}: {method} failed: {exc}") from exc

    def check(self) -> None:
        """Fail with one clear line now, not mid-run, when the bucket is missing or not ours to use."""
        try:
            self._call("head_bucket")
        except MissingObject as exc:  # HEAD answers a missing bucket with a bare 404
            raise InputError(self.url, None, "FACTORY_LAKE_URL", "the bucket does not exist") from exc
        except StoreUnusable as exc:
            raise InputError(self.url, None, "FACTORY_LAKE_URL", exc.why) from exc

    def read(self, key: str) -> bytes:
        return self._call("get_object", Key=self._key(key))["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        self._call("put_object", Key=self._key(key), Body=data)  # an S3 PUT is atomic per object

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        try:
            return int(self._call("head_object", Key=self._key(key))["ContentLength"])
        except MissingObject:
            return None

    def list(self, prefix: str, partial: bool = False) -> Keys:
        """Keys under `prefix` (an S3 PUT is atomic: there are no unfinished writes to list)."""
        keys: Keys = []
        inner = prefix.strip("/")
        start = f"{self._key(inner)}/" if inner else (f"{self.folder}/" if self.folder else "")
        token: dict[str, str] = {}
        while True:
            page = self._call("list_objects_v2", Prefix=start, **token)
            keys += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                break
            token = {"ContinuationToken": page["NextContinuationToken"]}
        strip = len(self.folder) + 1 if self.folder else 0
        return sorted(k[strip:] for k in keys)

    def delete(self, keys: Keys) -> None:
        for offset in range(0, len(keys), 1000):
            chunk = keys[offset:offset + 1000]
            self._call("delete_objects", Delete={"Objects": [{"Key": self._key(k)} for k in chunk], "Quiet": True})

    def prune(self, prefix: str) -> None:
        """Nothing to do: S3 has no folders."""

    def move(self, source_prefix: str, target_prefix: str) -> None:
        """S3 has no rename: copy every object, then delete the sources."""
        moved = self.list(source_prefix)
        for key in moved:
            target = target_prefix.rstrip("/") + key[len(source_prefix.rstrip("/")):]
            self._call("copy_object", Key=self._key(target),
                       CopySource={"Bucket": self.bucket.bucket_name, "Key": self._key(key)})
        self.delete(moved)


def s3_bucket(url: str, block: str | None = None, endpoint_url: str | None = None) -> Any:
    """The prefect-aws S3Bucket for `s3://bucket/prefix`: a saved block, or built from the environment."""
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

    parsed = urlparse(url)
    if block:
        bucket: Any = S3Bucket.load(block)
        return bucket.model_copy(update={"bucket_folder": "/".join(
            p for p in (bucket.bucket_folder.strip("/"), parsed.path.strip("/")) if p)})
    params = AwsClientParameters(endpoint_url=endpoint_url) if endpoint_url else AwsClientParameters()
    return S3Bucket(bucket_name=parsed.netloc, bucket_folder=parsed.path.strip("/"),
                    credentials=AwsCredentials(aws_client_parameters=params))


def open_storage(url: str, block: str | None = None, endpoint_url: str | None = None) -> Storage:
    """The storage behind a lake URL: `s3://bucket/prefix`, or a local folder."""
    if url.startswith("s3://"):
        return S3Storage(s3_bucket(url, block, endpoint_url), url)
    return LocalStorage(Path(url))
