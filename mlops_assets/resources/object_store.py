"""The object store: where snapshots, dataset versions, predictions and reports live.

``root`` is a local folder (the embedded default) or ``s3://bucket/prefix`` on any
S3-compatible server (SeaweedFS, MinIO, AWS). S3 credentials are never configuration:
boto3 reads them from the standard AWS environment variables or an instance role, so they
cannot leak into Dagster's resource config, metadata or event log.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from mlops_assets.lib.env_settings import env_field


class ObjectStoreError(RuntimeError):
    """A store operation failed for good (after the client's own retries)."""


# Errors no retry can cure: the disk is full, the file system is read-only, the quota is used
# up. Retrying them with backoff (as a transient fault is) only delays the failure and keeps
# the disk full for longer.
PERMANENT_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG})


def is_permanent_os_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in PERMANENT_ERRNOS


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``'s sidecar lock file (hidden, so no listing shows it),
    held across processes of this machine until the block ends; the kernel drops it if the
    process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class S3Config(ConfigurableResource):
    """The one S3 configuration, nested in the object store and the dataset source and given to
    the IO manager. Credentials are not part of it: boto3 reads AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY (or an instance role).

    Its own small class rather than dagster_aws's S3Resource: importing dagster_aws costs
    about 0.9 s on every load of the code location (it imports Dagster's test utilities);
    :meth:`dagster_aws_resource` builds that one where it is needed (the S3 IO manager).
    """

    endpoint_url: str = env_field(
        "MLOPS_S3_ENDPOINT_URL",
        "",
        "S3-compatible server for s3:// store and sources (SeaweedFS, MinIO); empty means "
        "AWS. Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.",
    )
    region_name: str = env_field(
        "MLOPS_S3_REGION",
        "us-east-1",
        "Region for the S3 client.",
    )
    max_attempts: int = Field(
        default=6, description="Attempts per request, standard retry mode with backoff."
    )

    def dagster_aws_resource(self) -> Any:
        from dagster_aws.s3 import S3Resource

        return S3Resource(
            endpoint_url=self.endpoint_url or None,
            region_name=self.region_name,
            max_attempts=self.max_attempts,
        )


def s3_server(s3: S3Config | None) -> str:
    """How messages name the S3 server: its endpoint, or AWS S3."""
    return (s3.endpoint_url if s3 else None) or "AWS S3"


def s3_client(s3: S3Config | None) -> Any:
    """A boto3 S3 client for the S3 configuration ``s3`` (None: AWS with its defaults), with
    bounded timeouts, standard retries with backoff and path-style addressing.

    Each client gets its own session: the default session caches credentials for the life
    of the process, so rotated credentials would not be seen.
    """
    import boto3
    from botocore.config import Config

    s3 = s3 or S3Config()
    config = Config(
        retries={"max_attempts": s3.max_attempts, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path"},
    )
    session = boto3.session.Session(region_name=s3.region_name)
    return session.client("s3", endpoint_url=s3.endpoint_url or None, config=config)


class ObjectStoreResource(ConfigurableResource):
    """Keys are '/'-separated paths below ``root``; writes are atomic per object."""

    root: str
    # The one S3 configuration (endpoint, region, retries), shared with the dataset source and
    # the IO manager; None means AWS with boto3's defaults.
    s3: S3Config | None = None

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    # --- S3 ---------------------------------------------------------------------------

    @cached_property
    def _bucket_and_prefix(self) -> tuple[str, str]:
        bucket, _, prefix = self.root.removeprefix("s3://").partition("/")
        return bucket, prefix.strip("/")

    @cached_property
    def _s3(self) -> Any:
        return s3_client(self.s3)

    def _s3_key(self, key: str) -> str:
        prefix = self._bucket_and_prefix[1]
        return f"{prefix}/{key}" if prefix else key

    def _s3_call(self, operation: str, key: str, call: Any) -> Any:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if operation in ("HeadObject", "GetObject") and code in (
                "404",
                "NoSuchKey",
                "NotFound",
            ):
                raise FileNotFoundError(f"object {self.uri(key)} does not exist") from None
            raise ObjectStoreError(self._describe(operation, key, f"{code}: {exc}")) from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise ObjectStoreError(self._describe(operation, key, str(exc))) from exc

    def _describe(self, operation: str, key: str, problem: str) -> str:
        return f"S3 {operation} of {self.uri(key)} on {s3_server(self.s3)} failed: {problem}"

    # --- local ------------------------------------------------------------------------

    @property
    def _root(self) -> Path:
        return Path(self.root).expanduser().resolve()

    def _path(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if not path.is_relative_to(self._root):
            raise ValueError(f"object key {key!r} escapes the store root {self._root}")
        return path

    # --- the interface ----------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.is_s3:
            bucket = self._bucket_and_prefix[0]
            self._s3_call(
                "PutObject",
                key,
                lambda: self._s3.put_object(Bucket=bucket, Key=self._s3_key(key), Body=data),
            )
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, path: Path) -> None:
        """Store a local file (streamed; multipart on S3), for objects too big for memory."""
        if self.is_s3:
            bucket = self._bucket_and_prefix[0]
            self._s3_call(
                "UploadFile",
                key,
                lambda: self._s3.upload_file(str(path), bucket, self._s3_key(key)),
            )
            return
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_file(self, key: str, path: Path) -> None:
        """Write a stored object to a local file (streamed), for objects too big for memory."""
        if self.is_s3:
            bucket = self._bucket_and_prefix[0]
            self._s3_call(
                "DownloadFile",
                key,
                lambda: self._s3.download_file(bucket, self._s3_key(key), str(path)),
            )
            return
        source = self._path(key)
        if not source.is_file():
            raise FileNotFoundError(f"object {self.uri(key)} does not exist")
        shutil.copyfile(source, path)

    def size(self, key: str) -> int:
        """Size in bytes of a stored object; FileNotFoundError when it does not exist."""
        if self.is_s3:
            bucket = self._bucket_and_prefix[0]
            head = self._s3_call(
                "HeadObject",
                key,
                lambda: self._s3.head_object(Bucket=bucket, Key=self._s3_key(key)),
            )
            return int(head["ContentLength"])
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"object {self.uri(key)} does not exist")
        return path.stat().st_size

    def get_bytes(self, key: str) -> bytes:
        if self.is_s3:
            bucket = self._bucket_and_prefix[0]
            response = self._s3_call(
                "GetObject", key, lambda: self._s3.get_object(Bucket=bucket, Key=self._s3_key(key))
            )
            return response["Body"].read()
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"object {self.uri(key)} does not exist") from None

    def get_json(self, key: str) -> Any | None:
        """The JSON object at ``key``, or None when there is none (records such as
        ``serving/<model>/latest.json``)."""
        try:
            return json.loads(self.get_bytes(key))
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        if self.is_s3:
            bucket = self._bucket_and_prefix[0]
            try:
                self._s3_call(
                    "HeadObject",
                    key,
                    lambda: self._s3.head_object(Bucket=bucket, Key=self._s3_key(key)),
                )
            except FileNotFoundError:
                return False
            return True
        return self._path(key).is_file()

    def list_keys(self, prefix: str) -> list[str]:
        if self.is_s3:
            bucket, root_prefix = self._bucket_and_prefix
            full = self._s3_key(prefix)
            paginator = self._s3.get_paginator("list_objects_v2")
            keys: list[str] = []

            def collect() -> None:
                for page in paginator.paginate(Bucket=bucket, Prefix=full):
                    for item in page.get("Contents", []):
                        keys.append(
                            item["Key"][len(root_prefix) + 1 :] if root_prefix else item["Key"]
                        )

            self._s3_call("ListObjectsV2", prefix, collect)
            return sorted(keys)
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self._root
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self._root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object at ``key`` and a token for :meth:`put_if`, or None when there is none.

        The token is the S3 ETag, or the sha256 of a local file's bytes."""
        if self.is_s3:
            bucket = self._bucket_and_prefix[0]
            try:
                response = self._s3_call(
                    "GetObject",
                    key,
                    lambda: self._s3.get_object(Bucket=bucket, Key=self._s3_key(key)),
                )
            except FileNotFoundError:
                return None
            return response["Body"].read(), str(response["ETag"])
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def put_if(self, key: str, data: bytes, token: str | None) -> str | None:
        """Compare-and-swap: write ``data`` at ``key`` only if the object is still the one
        ``token`` (from :meth:`read_versioned`) names, or, for None, only if there is none.
        Returns the new token, or None when another writer came first.

        On S3 this is a conditional PUT (If-Match / If-None-Match: AWS, MinIO and SeaweedFS
        honour both); locally, read-compare-write under an exclusive lock on the file. ``data``
        must differ from every other writer's (the leases carry a nonce): a PUT that the client
        retried after its first attempt succeeded is told 412, and is recognised as its own by
        reading back ``data``.
        """
        if self.is_s3:
            return self._s3_put_if(key, data, token)
        path = self._path(key)
        with _locked(path):
            current = self.read_versioned(key)
            if (current[1] if current else None) != token:
                return None
            self.put_bytes(key, data)
        return hashlib.sha256(data).hexdigest()

    def _s3_put_if(self, key: str, data: bytes, token: str | None) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = self._bucket_and_prefix[0]
        condition = {"IfNoneMatch": "*"} if token is None else {"IfMatch": token}
        try:
            response = self._s3.put_object(
                Bucket=bucket, Key=self._s3_key(key), Body=data, **condition
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            # 412: the condition failed; 409: a concurrent conditional write won (AWS).
            if status not in (409, 412) and code not in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            ):
                raise ObjectStoreError(self._describe("PutObject", key, f"{code}: {exc}")) from exc
            current = self.read_versioned(key)
            return current[1] if current is not None and current[0] == data else None
        except BotoCoreError as exc:
            raise ObjectStoreError(self._describe("PutObject", key, str(exc))) from exc
        return str(response["ETag"])

    def delete(self, key: str) -> None:
        """Remove the object at ``key``; nothing happens when there is none."""
        if self.is_s3:
            bucket = self._bucket_and_prefix[0]
            self._s3_call(
                "DeleteObject",
                key,
                lambda: self._s3.delete_object(Bucket=bucket, Key=self._s3_key(key)),
            )
            return
        self._path(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        if self.is_s3:
            bucket = self._bucket_and_prefix[0]
            return f"s3://{bucket}/{self._s3_key(key)}"
        return self._path(key).as_uri()
