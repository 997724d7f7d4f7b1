"""Open the configured blob backend (``[blobs] backend``)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from hdsvault.blobs.base import BlobStore
from hdsvault.config import Settings


def blobs_dir(settings: Settings) -> Path:
    """Where the filesystem backend keeps blobs: inside data_dir, so backups include them."""
    return settings.blobs.path or settings.data_dir / "blobs"


def open_blob_store(settings: Settings, engine: Engine) -> BlobStore:
    """The configured backend; inline keys (small blobs written in the index transaction,
    :mod:`hdsvault.blobs.inline`) go to the ``blob_chunks`` table whatever the backend."""
    b = settings.blobs
    if b.backend == "database":
        from hdsvault.blobs.database import DatabaseBlobStore

        return DatabaseBlobStore(engine)  # inline keys are rows of its own table already
    from hdsvault.blobs.inline import InlineRouting

    return InlineRouting(_backend(settings), engine)


def _backend(settings: Settings) -> BlobStore:
    b = settings.blobs
    if b.backend == "s3":
        from hdsvault.blobs.s3 import S3BlobStore

        return S3BlobStore(
            b.s3_bucket,
            endpoint_url=b.s3_endpoint_url,
            region=b.s3_region,
            access_key=b.s3_access_key,
            secret_key=b.s3_secret_key.get_secret_value() if b.s3_secret_key else None,
            prefix=b.s3_prefix,
        )
    from hdsvault.blobs.filesystem import FilesystemBlobStore

    return FilesystemBlobStore(blobs_dir(settings))
