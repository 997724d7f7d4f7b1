"""``hdsvault verify``: one command checks every stored byte (invariant 5).

Each kind of stored data carries its own proof, and this package walks them all:

- sealed columns (resource versions, imaging metadata, HL7 messages): every ciphertext is
  opened, so its AES-GCM tag — bound to its tenant, kind, id and version — is checked; the
  clear bytes are dropped at once, never shown (:mod:`.sealed_data`);
- blobs (DICOM instances): the SHA-256 of each stored object is recomputed and compared with
  the one recorded at ingest; a missing object is named too (:mod:`.blob_hashes`);
- the journal: every log is recomputed and checked against its signed checkpoints
  (:func:`hdsvault.journal.service.verify`);
- backups, on request (they read every pack): each configured repository is verified
  (:meth:`hdsvault.backup.service.BackupService.verify`).

The run itself is journaled (``platform.verify``, administration) with its verdict.
"""
