"""An S3-compatible repository with Object Lock in COMPLIANCE mode (WORM off the host).

Why S3 Object Lock: a hardened local repository is immutable against everything except root on
its host. An object locked in COMPLIANCE mode cannot be deleted or overwritten by anyone —
root on our host, the bucket owner, the provider's own administrators — before its
retain-until date, and that date can only be moved *later*. That is the copy ransomware
cannot reach.

Mapping of the :class:`~hdsvault.backup.repository.RepositoryBackend` interface:

* ``put``: ``PutObject`` with ``If-None-Match: *`` (write-once: refused if the name exists),
  ``ObjectLockMode=COMPLIANCE`` and ``ObjectLockRetainUntilDate = now + retention``, plus a
  ``Content-MD5`` so the store rejects a body damaged in transit. ``locks/`` is not locked.
* ``get``/``get_range``/``size``/``exists``/``list``: the *current* version of each key. A
  plain ``DeleteObject`` (no version) on a versioned bucket only adds a delete marker: the
  locked version is still there, and :meth:`S3Repository.undelete` lists what such an attack
  hid so that an operator can recover it.
* ``delete``: refused (:class:`ObjectLockedError`) while any version of the key is retained;
  afterwards every version is deleted (so pruning really frees space).
* ``is_locked``: ``HeadObject`` and compare ``ObjectLockRetainUntilDate`` with the clock.
* :meth:`S3Repository.extend_retention` moves retain-until dates later, never earlier
  (maintenance keeps live objects locked, ``docs/backup.md``).

The bucket must be created with Object Lock enabled (which also enables versioning); hdsvault
refuses a bucket without it, since the objects could then be deleted by whoever holds write
credentials.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from hdsvault.backup.errors import (
    BackupError,
    ObjectExistsError,
    ObjectLockedError,
    ObjectMissingError,
)

JsonList = list[dict[str, Any]]
Names = list[str]

__all__ = ["S3Repository"]

Buffer = bytes | bytearray | memoryview
MUTABLE_PREFIXES = ("locks/",)


def _code(exc: Exception) -> str:
    response: Any = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3Repository:
    """Repository objects in ``bucket`` under ``prefix``, locked for ``retention``."""

    def __init__(
        self,
        bucket: str,
        *,
        retention: timedelta,
        prefix: str = "",
        client: Any = None,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        check_lock: bool = True,
    ) -> None:
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}),
            )
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.retention = retention
        self.clock = clock
        if check_lock:
            self._check_object_lock()

    def __repr__(self) -> str:
        return f"S3Repository(s3://{self.bucket}/{self.prefix})"

    def _check_object_lock(self) -> None:
        try:
            conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except Exception as exc:
            raise BackupError(
                f"bucket {self.bucket} has no Object Lock configuration ({_code(exc) or exc}): "
                "create it with Object Lock enabled (it cannot be turned on later on most stores)"
            ) from None
        enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        if enabled != "Enabled":
            raise BackupError(f"bucket {self.bucket}: Object Lock is not enabled")

    # -- names -------------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid object name {name!r}")
        return self.prefix + name

    # -- interface -----------------------------------------------------------------------------

    def put(self, name: str, data: Buffer) -> None:
        body = bytes(data)
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._key(name),
            "Body": body,
            "ContentMD5": base64.b64encode(hashlib.md5(body).digest()).decode(),  # noqa: S324
            "IfNoneMatch": "*",
        }
        if not name.startswith(MUTABLE_PREFIXES):
            args["ObjectLockMode"] = "COMPLIANCE"
            args["ObjectLockRetainUntilDate"] = self.clock() + self.retention
        try:
            self.client.put_object(**args)
        except Exception as exc:
            if _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise ObjectExistsError(f"{name} already exists in {self!r}") from None
            raise

    def get(self, name: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(name))
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise ObjectMissingError(f"{name} is missing from {self!r}") from None
            raise
        return bytes(response["Body"].read())

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            response = self.client.get_object(
                Bucket=self.bucket,
                Key=self._key(name),
                Range=f"bytes={offset}-{offset + length - 1}",
            )
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise ObjectMissingError(f"{name} is missing from {self!r}") from None
            if _code(exc) == "InvalidRange":
                return b""
            raise
        return bytes(response["Body"].read())

    def _head(self, name: str, version: str | None = None) -> dict[str, Any] | None:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(name)}
        if version is not None:
            args["VersionId"] = version
        try:
            head: dict[str, Any] = self.client.head_object(**args)
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound", "405", "MethodNotAllowed"):
                return None
            raise
        return head

    def size(self, name: str) -> int:
        head = self._head(name)
        if head is None:
            raise ObjectMissingError(f"{name} is missing from {self!r}")
        return int(head["ContentLength"])

    def exists(self, name: str) -> bool:
        return self._head(name) is not None

    def list(self, prefix: str) -> list[str]:
        base = self._key(prefix.strip("/")) + "/"
        names: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
            for obj in page.get("Contents", []):
                names.append(str(obj["Key"])[len(self.prefix) :])
        names.sort()
        return names

    def _versions(self, name: str) -> JsonList:
        key = self._key(name)
        out: JsonList = []
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
            for v in page.get("Versions", []):
                if v["Key"] == key:
                    out.append({**v, "DeleteMarker": False})
            for v in page.get("DeleteMarkers", []):
                if v["Key"] == key:
                    out.append({**v, "DeleteMarker": True})
        return out

    def retain_until(self, name: str) -> datetime | None:
        """The latest retain-until date over every version of ``name`` (None: unlocked)."""
        latest: datetime | None = None
        for v in self._versions(name):
            if v["DeleteMarker"]:
                continue
            head = self._head(name, str(v["VersionId"]))
            until = head.get("ObjectLockRetainUntilDate") if head else None
            if until is not None and (latest is None or until > latest):
                latest = until
        return latest

    def is_locked(self, name: str) -> bool:
        if name.startswith(MUTABLE_PREFIXES):
            return False
        until = self.retain_until(name)
        return until is not None and self.clock() < until

    def delete(self, name: str) -> None:
        if self.is_locked(name):
            until = self.retain_until(name)
            raise ObjectLockedError(
                f"{name} is under S3 Object Lock (COMPLIANCE) until "
                f"{until.isoformat() if until else '?'}; not deleted"
            )
        versions = self._versions(name)
        if not any(not v["DeleteMarker"] for v in versions):
            raise ObjectMissingError(f"{name} is missing from {self!r}")
        for v in versions:
            try:
                self.client.delete_object(
                    Bucket=self.bucket, Key=self._key(name), VersionId=v["VersionId"]
                )
            except Exception as exc:
                if _code(exc) == "AccessDenied":
                    raise ObjectLockedError(f"{name}: the store refused the deletion") from None
                raise

    # -- maintenance ---------------------------------------------------------------------------

    def extend_retention(self, names: Iterable[str], until: datetime) -> int:
        """Move the retain-until date of the current version of each name to ``until``.

        Never shortens: an object already retained later is left alone (S3 refuses a shorter
        COMPLIANCE date; some emulators accept it, hdsvault does not ask). Returns how many
        objects were extended.
        """
        extended = 0
        for name in names:
            if name.startswith(MUTABLE_PREFIXES):
                continue
            head = self._head(name)
            if head is None:
                continue
            current = head.get("ObjectLockRetainUntilDate")
            if current is not None and current >= until:
                continue
            self.client.put_object_retention(
                Bucket=self.bucket,
                Key=self._key(name),
                VersionId=head.get("VersionId"),
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until},
            )
            extended += 1
        return extended

    def hidden_by_delete_markers(self, prefix: str = "") -> Names:
        """Names whose current version is a delete marker (a plain DELETE by someone).

        The locked data is still there as an older version; :meth:`undelete` restores it.
        """
        base = self._key(prefix.strip("/")) + "/" if prefix else self.prefix
        hidden: Names = []
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
            for marker in page.get("DeleteMarkers", []):
                if marker.get("IsLatest"):
                    hidden.append(str(marker["Key"])[len(self.prefix) :])
        return sorted(hidden)

    def undelete(self, name: str) -> None:
        """Remove the delete markers that hide ``name`` (its locked version reappears)."""
        for v in self._versions(name):
            if v["DeleteMarker"]:
                self.client.delete_object(
                    Bucket=self.bucket, Key=self._key(name), VersionId=v["VersionId"]
                )
