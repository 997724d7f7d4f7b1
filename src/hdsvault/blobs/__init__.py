"""Blob stores: where large sealed payloads (DICOM instances) live, outside the database.

A blob store only ever receives ciphertext (the imaging store seals before it writes), keeps
it durably and hands it back; it knows nothing of DICOM or FHIR (storage layer). Every put
returns the SHA-256 of the stored bytes, which the caller records so that ``verify`` can
prove each blob intact without any key (invariant 5).
"""

from hdsvault.blobs.base import BlobError, BlobInfo, BlobNotFound, BlobStore
from hdsvault.blobs.factory import open_blob_store

__all__ = ["BlobError", "BlobInfo", "BlobNotFound", "BlobStore", "open_blob_store"]
