"""Where lake objects (and `s3://` source assets) live: a local folder or S3 through prefect-aws.

One small interface, two implementations. Keys are relative, `/`-separated paths under the root
(a folder, or `s3://bucket/prefix`). S3 goes through a prefect-aws `S3Bucket` block: a saved block by
name (FACTORY_S3_BLOCK), or one built from the URL with the standard AWS variables (credentials,
region, AWS_ENDPOINT_URL) or FACTORY_S3_ENDPOINT_URL for S3-compatible stores such as MinIO.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from tasks.errors import InputError, TransientError


class Storage(Protocol):
    url: str

    def read(self, key: str) -> bytes: ...
    def write(self, key: str, data: bytes) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, keys: list[str]) -> None: ...
    def move(self, source_prefix: str, target_prefix: str) -> None: ...
    def check(self) -> None: ...


@dataclass
class LocalStorage:
    root: Path

    @property
    def url(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write(self, key: str, data: bytes) -> None:
        """Atomic: a reader sees the old object or the new one, never half of it."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        partial.write_bytes(data)
        os.replace(partial, path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*")
                      if p.is_file() and not p.name.endswith(".partial"))

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        for key in keys:  # drop folders the deletes emptied
            parent = self._path(key).parent
            while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    def check(self) -> None:
        """Fail with one clear line now, not mid-run, when the lake folder cannot be used."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(self.root, None, "FACTORY_LAKE_URL", f"cannot create the lake folder: {exc}") from exc

    def move(self, source_prefix: str, target_prefix: str) -> None:
        target = self._path(target_prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self._path(source_prefix)), str(target))


class S3Storage:
    """Objects under s3://bucket/prefix, through the S3Bucket block's own boto3 client."""

    def __init__(self, bucket: Any, url: str) -> None:
        self.bucket = bucket
        self.url = url
        self.folder = bucket.bucket_folder.strip("/")
        self._client = bucket.credentials.get_s3_client()

    def _key(self, key: str) -> str:
        return f"{self.folder}/{key}" if self.folder else key

    def _call(self, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        try:
            return getattr(self._client, method)(Bucket=self.bucket.bucket_name, **kwargs)
        except EndpointConnectionError as exc:
            raise TransientError(f"{self.url}: {exc}") from exc
        except NoCredentialsError as exc:
            raise InputError(self.url, None, "FACTORY_LAKE_URL",
                             "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or FACTORY_S3_BLOCK") from exc
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                        "ServiceUnavailable", "503"):
                raise TransientError(f"{self.url}: {code}") from exc
            if code in ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise InputError(self.url, None, "FACTORY_LAKE_URL",
                                 f"{code}: {exc.response.get('Error', {}).get('Message', '')}".rstrip(": ")) from exc
            raise

    def check(self) -> None:
        """Fail with one clear line now, not mid-run, when the bucket is missing or not ours to use."""
        from botocore.exceptions import ClientError

        try:
            self._call("head_bucket")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            why = {"404": "the bucket does not exist", "403": "access denied"}.get(code, code)
            raise InputError(self.url, None, "FACTORY_LAKE_URL", why) from exc

    def read(self, key: str) -> bytes:
        return self._call("get_object", Key=self._key(key))["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        self._call("put_object", Key=self._key(key), Body=data)  # an S3 PUT is atomic per object

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._call("head_object", Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
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

    def delete(self, keys: list[str]) -> None:
        for offset in range(0, len(keys), 1000):
            chunk = keys[offset:offset + 1000]
            self._call("delete_objects", Delete={"Objects": [{"Key": self._key(k)} for k in chunk], "Quiet": True})

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
        bucket = S3Bucket.load(block)
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
