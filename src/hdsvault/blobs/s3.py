"""Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph RGW...), through boto3.

A PUT of one object is atomic and, once acknowledged, durable by the store's own contract;
the SHA-256 is computed locally as the bytes go out and also sent as ``ChecksumSHA256`` so
the store checks the upload end to end. Payloads are streamed in with a multipart upload
when they exceed :data:`MULTIPART_BYTES`, so a large instance is never one buffer.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from hdsvault.blobs.base import BlobError, BlobInfo, BlobNotFound, Hasher, Payload, check_key
from hdsvault.blobs.base import chunks_of as _chunks

MULTIPART_BYTES = 16 * 1024 * 1024
READ_CHUNK = 1024 * 1024


class S3BlobStore:
    """Blobs as objects ``<prefix><key>`` of one bucket."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        prefix: str = "",
        create_bucket: bool = False,
        client: Any = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self._client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )
        if create_bucket:
            with contextlib.suppress(self._client.exceptions.BucketAlreadyOwnedByYou):
                self._client.create_bucket(Bucket=bucket)

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, data: Payload) -> BlobInfo:
        name = self._name(key)
        hasher = Hasher()
        buf = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            for chunk in _chunks(data):
                hasher.update(chunk)
                buf += chunk
                if len(buf) >= MULTIPART_BYTES:
                    if upload_id is None:
                        upload_id = self._client.create_multipart_upload(
                            Bucket=self.bucket, Key=name
                        )["UploadId"]
                    n = len(parts) + 1
                    r = self._client.upload_part(
                        Bucket=self.bucket,
                        Key=name,
                        UploadId=upload_id,
                        PartNumber=n,
                        Body=bytes(buf),
                    )
                    parts.append({"ETag": r["ETag"], "PartNumber": n})
                    buf.clear()
            if upload_id is None:
                info = hasher.info(key)
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=name,
                    Body=bytes(buf),
                    ChecksumSHA256=base64.b64encode(info.sha256).decode(),
                )
                return info
            if buf:
                n = len(parts) + 1
                r = self._client.upload_part(
                    Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=n, Body=bytes(buf)
                )
                parts.append({"ETag": r["ETag"], "PartNumber": n})
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
            return hasher.info(key)
        except Exception as exc:
            if upload_id is not None:
                with contextlib.suppress(Exception):  # the original error is the one to report
                    self._client.abort_multipart_upload(
                        Bucket=self.bucket, Key=name, UploadId=upload_id
                    )
            if isinstance(exc, BlobError):
                raise
            raise BlobError(f"cannot write blob {key} to s3://{self.bucket}: {exc}") from None

    def _get_object(self, key: str) -> Any:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._name(key))
        except self._client.exceptions.NoSuchKey:
            raise BlobNotFound(f"no blob {key}") from None
        except Exception as exc:
            raise BlobError(f"cannot read blob {key} from s3://{self.bucket}: {exc}") from None

    def open(self, key: str) -> Iterator[bytes]:
        body = self._get_object(key)["Body"]
        return _stream(body)

    def get(self, key: str) -> bytes:
        data: bytes = self._get_object(key)["Body"].read()
        return data

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._name(key))
        except Exception as exc:
            raise BlobError(f"cannot delete blob {key}: {exc}") from None

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._name(key))
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise BlobError(f"cannot reach s3://{self.bucket}: {exc}") from None
        return True

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for obj in page.get("Contents", []):
                yield str(obj["Key"])[len(self.prefix) :]

    def prepare(self, prefixes: Iterable[str]) -> None:
        """Nothing to prepare: keys are not paths."""

    def close(self) -> None:
        self._client.close()


def _stream(body: Any) -> Iterator[bytes]:
    try:
        while chunk := body.read(READ_CHUNK):
            yield chunk
    finally:
        body.close()
