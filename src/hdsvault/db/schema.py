"""The tables. Every column that could hold health data holds ciphertext or a keyed token.

Clear columns are limited to what the platform needs to run and what an operator may see:
tenant identifiers (FINESS), resource types, ids (server-assigned, random), versions, timestamps.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(9), primary_key=True, comment="FINESS number"),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("shredded_at", DateTime(timezone=True)),
)

tenant_keys = Table(
    "tenant_keys",
    metadata,
    Column("tenant_id", String(9), ForeignKey("tenants.id"), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("kek_id", String(200), nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("tenant_id", "purpose", "version"),
    CheckConstraint("purpose IN ('data', 'index')", name="purpose"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True, comment="public part of the token"),
    Column("tenant_id", String(9), ForeignKey("tenants.id")),
    Column("role", String(64), nullable=False),
    Column("label", Text, nullable=False, default=""),
    Column("secret_hash", LargeBinary(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

resource_versions = Table(
    "resource_versions",
    metadata,
    Column("tenant_id", String(9), ForeignKey("tenants.id"), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("body", LargeBinary, comment="AEAD ciphertext of the resource; NULL for a deletion"),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("tenant_id", "resource_type", "resource_id", "version_id"),
)
Index(
    "ix_resource_versions_key_version",
    resource_versions.c.tenant_id,
    resource_versions.c.key_version,
)

# -- platform-wide keys and identity ------------------------------------------------------------

platform_keys = Table(
    "platform_keys",
    metadata,
    Column("purpose", String(32), nullable=False, comment="journal-signing | journal-mac"),
    Column("version", Integer, nullable=False),
    Column("kek_id", String(200), nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("purpose", "version"),
)

platform_info = Table(
    "platform_info",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# -- journal ------------------------------------------------------------------------------------

journal_entries = Table(
    "journal_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True, comment="arrival order"),
    Column("log_id", String(16), nullable=False, comment="'platform' or a tenant FINESS"),
    Column("seq", Integer, comment="leaf index once sequenced; NULL while pending"),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("category", String(16), nullable=False),
    Column("action", String(1), nullable=False),
    Column("outcome", String(2), nullable=False),
    Column("severity", String(8), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("actor_role", String(64)),
    Column("professional_id", String(64)),
    Column("on_behalf_of", String(255)),
    Column("objects", Text, nullable=False, comment="JSON array of references"),
    Column("patient", String(128)),
    Column("purpose_of_use", String(32)),
    Column("source_address", String(64)),
    Column("zone", String(32)),
    Column("request_id", String(64)),
    Column("detail_sealed", LargeBinary, comment="AEAD ciphertext of revealing details"),
    Column("leaf_hash", LargeBinary(32), comment="RFC 9162 leaf hash, set when sequenced"),
    Column("mac", LargeBinary(32), comment="HMAC(journal-mac key, log_id, seq, leaf_hash)"),
    Column(
        "pruned",
        Boolean,
        nullable=False,
        server_default=text("false"),  # a keyword both SQLite and PostgreSQL accept
        comment="content removed by retention; leaf_hash and mac kept",
    ),
)
Index("ux_journal_entries_log_seq", journal_entries.c.log_id, journal_entries.c.seq, unique=True)
# Pending entries only (partial): the sequencer finds them, and the logs that have some, in
# time proportional to what is pending, not to the journal's size; appends touch a tiny index.
Index(
    "ix_journal_entries_pending",
    journal_entries.c.log_id,
    journal_entries.c.id,
    sqlite_where=journal_entries.c.seq.is_(None),
    postgresql_where=journal_entries.c.seq.is_(None),
)
# Lookups for the views (patient, actor, time), which show sequenced entries only, in ``seq``
# order. Partial, so that an append (one per patient on every read) touches no index keyed by a
# random value: the sequencer adds these index entries in batches when it sets ``seq``. ``seq``
# ends the patient and actor keys so that a history comes out of the index already in order
# (else SQLite's planner prefers walking the whole log by ``seq`` to sorting). Revision 0006.
for _column in ("patient", "actor", "time"):
    Index(
        f"ix_journal_entries_{_column}",
        journal_entries.c.log_id,
        journal_entries.c[_column],
        *([journal_entries.c.seq] if _column != "time" else []),
        sqlite_where=journal_entries.c.seq.is_not(None),
        postgresql_where=journal_entries.c.seq.is_not(None),
    )

journal_logs = Table(
    "journal_logs",
    metadata,
    Column("log_id", String(16), primary_key=True),
    Column("size", Integer, nullable=False, comment="number of sequenced leaves"),
)

journal_nodes = Table(
    "journal_nodes",
    metadata,
    Column("log_id", String(16), nullable=False),
    Column("level", Integer, nullable=False, comment=">= 1; level 0 is journal_entries.leaf_hash"),
    Column("idx", Integer, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    PrimaryKeyConstraint("log_id", "level", "idx"),
)

journal_checkpoints = Table(
    "journal_checkpoints",
    metadata,
    Column("log_id", String(16), nullable=False),
    Column("size", Integer, nullable=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False, comment="C2SP signed note"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("log_id", "size"),
)

export_cursors = Table(
    "export_cursors",
    metadata,
    Column("sink", String(64), nullable=False),
    Column("log_id", String(16), nullable=False),
    Column("last_seq", Integer, nullable=False),
    PrimaryKeyConstraint("sink", "log_id"),
)

# -- records ------------------------------------------------------------------------------------
# The FHIR store (hdsvault.records). Bodies live in ``resource_versions`` (ciphertext, above);
# ``resources`` is the head of each logical resource (O(1) current-version lookup, listing and
# paging order); ``search_tokens`` holds the blind-index tokens of the current version only.

Index(
    "ix_resource_versions_history",
    resource_versions.c.tenant_id,
    resource_versions.c.resource_type,
    resource_versions.c.last_updated,
)
Index(
    "ix_resource_versions_system_history",
    resource_versions.c.tenant_id,
    resource_versions.c.last_updated,
)

resources = Table(
    "resources",
    metadata,
    Column("tenant_id", String(9), ForeignKey("tenants.id"), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False, comment="current version"),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column(
        "tokens",
        LargeBinary,
        comment="the current version's blind-index tokens (16 bytes each), to remove them",
    ),
    PrimaryKeyConstraint("tenant_id", "resource_type", "resource_id"),
)
Index(
    "ix_resources_listing",
    resources.c.tenant_id,
    resources.c.resource_type,
    resources.c.last_updated,
    resources.c.resource_id,
)

search_tokens = Table(
    "search_tokens",
    metadata,
    Column("token", LargeBinary(16), nullable=False, comment="HMAC blind-index token"),
    Column("resource_id", String(64), nullable=False),
    # One B-tree only, ordered for lookups by token and covering resource_id. No tenant or
    # type column: the token is keyed per tenant and its field names the resource type
    # (``Observation.code``), so a token belongs to one tenant and one type; the rows are
    # a quarter smaller and inserts cheaper (migration 0005). A resource's tokens are
    # removed by their full keys, taken from resources.tokens.
    PrimaryKeyConstraint("token", "resource_id"),
    sqlite_with_rowid=False,
)

# -- access -------------------------------------------------------------------------------------

break_glass_grants = Table(
    "break_glass_grants",
    metadata,
    Column("id", String(32), primary_key=True, comment="random; the journal entry names it"),
    Column("tenant_id", String(9), ForeignKey("tenants.id"), nullable=False),
    Column("subject", String(255), nullable=False, comment="principal subject"),
    Column("professional_id", String(64)),
    Column("role", String(64), nullable=False),
    Column("patient", String(128), nullable=False, comment="'Patient/<id>' (server id)"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    comment="Time-bounded break-the-glass grants; the declared reason is sealed in the journal",
)
Index(
    "ix_break_glass_grants_lookup",
    break_glass_grants.c.tenant_id,
    break_glass_grants.c.subject,
    break_glass_grants.c.patient,
    break_glass_grants.c.expires_at,
)

# -- imaging ------------------------------------------------------------------------------------
# The DICOM store (hdsvault.imaging). Instances live in the blob store, sealed (chunked AEAD);
# these tables are the study/series/instance index. Identifiers (UIDs, PatientID) and every
# searchable attribute are blind-index tokens in ``imaging_tokens``; the DICOM header is kept
# only sealed (``meta``: DICOM JSON without bulk data). Clear columns are technical: random ids,
# SOP Class and Transfer Syntax UIDs (needed to negotiate DIMSE contexts), sizes, hashes.

imaging_studies = Table(
    "imaging_studies",
    metadata,
    Column("tenant_id", String(9), ForeignKey("tenants.id"), nullable=False),
    Column("id", String(36), nullable=False, comment="random; also the ImagingStudy id"),
    Column("uid_token", LargeBinary(16), nullable=False, comment="token of StudyInstanceUID"),
    Column("key_version", Integer, nullable=False),
    Column("meta", LargeBinary, nullable=False, comment="AEAD: study-level attributes"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("revision", Integer, nullable=False, comment="bumped when an instance is added"),
    Column("fhir_revision", Integer, nullable=False, comment="revision the ImagingStudy shows"),
    Column("patient_ref", String(80), comment="'Patient/<id>' (random server id) once linked"),
    PrimaryKeyConstraint("tenant_id", "id"),
)
Index(
    "ux_imaging_studies_uid", imaging_studies.c.tenant_id, imaging_studies.c.uid_token, unique=True
)
Index("ix_imaging_studies_created", imaging_studies.c.tenant_id, imaging_studies.c.created_at)
Index("ix_imaging_studies_sync", imaging_studies.c.revision, imaging_studies.c.fhir_revision)

imaging_series = Table(
    "imaging_series",
    metadata,
    Column("tenant_id", String(9), ForeignKey("tenants.id"), nullable=False),
    Column("id", String(36), nullable=False),
    Column("study_id", String(36), nullable=False),
    Column("uid_token", LargeBinary(16), nullable=False, comment="token of SeriesInstanceUID"),
    Column("key_version", Integer, nullable=False),
    Column("meta", LargeBinary, nullable=False, comment="AEAD: series-level attributes"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
)
Index("ux_imaging_series_uid", imaging_series.c.tenant_id, imaging_series.c.uid_token, unique=True)
Index("ix_imaging_series_study", imaging_series.c.tenant_id, imaging_series.c.study_id)

imaging_instances = Table(
    "imaging_instances",
    metadata,
    Column("tenant_id", String(9), ForeignKey("tenants.id"), nullable=False),
    Column("id", String(36), nullable=False, comment="random; names the blob"),
    Column("study_id", String(36), nullable=False),
    Column("series_id", String(36), nullable=False),
    Column("uid_token", LargeBinary(16), nullable=False, comment="token of SOPInstanceUID"),
    Column("sop_class_uid", String(64), nullable=False),
    Column("transfer_syntax_uid", String(64), nullable=False),
    Column("size", Integer, nullable=False, comment="plaintext bytes (DICOM file)"),
    Column("blob_key", String(200), nullable=False),
    Column("blob_sha256", LargeBinary(32), nullable=False, comment="SHA-256 of the sealed blob"),
    Column("chunk_bytes", Integer, nullable=False),
    Column("key_version", Integer, nullable=False, comment="data-key version of meta"),
    Column(
        "blob_key_version",
        Integer,
        comment="data-key version of the blob; NULL: stored before it was recorded",
    ),
    Column("meta", LargeBinary, nullable=False, comment="AEAD: instance attributes"),
    Column("source", String(255), nullable=False, comment="AE title or HTTP principal"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
)
Index(
    "ux_imaging_instances_uid",
    imaging_instances.c.tenant_id,
    imaging_instances.c.uid_token,
    unique=True,
)
Index("ix_imaging_instances_series", imaging_instances.c.tenant_id, imaging_instances.c.series_id)
Index("ix_imaging_instances_study", imaging_instances.c.tenant_id, imaging_instances.c.study_id)

imaging_tokens = Table(
    "imaging_tokens",
    metadata,
    Column("tenant_id", String(9), nullable=False),
    Column("level", String(8), nullable=False, comment="study | series | instance"),
    Column("item_id", String(36), nullable=False),
    Column("token", LargeBinary(16), nullable=False, comment="HMAC blind-index token"),
    PrimaryKeyConstraint("tenant_id", "level", "item_id", "token"),
    sqlite_with_rowid=False,
)
Index(
    "ix_imaging_tokens_lookup",
    imaging_tokens.c.tenant_id,
    imaging_tokens.c.level,
    imaging_tokens.c.token,
    imaging_tokens.c.item_id,
)

blob_chunks = Table(
    "blob_chunks",
    metadata,
    Column("blob_key", String(200), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False, comment="sealed bytes, as the blob store got them"),
    PrimaryKeyConstraint("blob_key", "seq"),
    comment="The database blob backend (PostgreSQL large payloads, chunked)",
)

# -- ingest -------------------------------------------------------------------------------------
# HL7 v2 messages received over MLLP (hdsvault.ingest): persisted sealed before the ACK, keyed
# for idempotence by a token of (sending application, facility, control id).

hl7_messages = Table(
    "hl7_messages",
    metadata,
    Column("tenant_id", String(9), ForeignKey("tenants.id"), nullable=False),
    Column("id", String(36), nullable=False),
    Column("control_token", LargeBinary(16), nullable=False, comment="token of MSH-3|MSH-4|MSH-10"),
    Column("message_type", String(16), nullable=False, comment="e.g. ADT^A01, ORU^R01"),
    Column("status", String(16), nullable=False, comment="received | AA | AE | AR"),
    Column("key_version", Integer, nullable=False),
    Column("message", LargeBinary, nullable=False, comment="AEAD: the raw message"),
    Column("ack", LargeBinary, comment="AEAD: the ACK sent (replayed for a duplicate)"),
    Column("source_address", String(64)),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("processed_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("tenant_id", "id"),
)
Index(
    "ux_hl7_messages_control", hl7_messages.c.tenant_id, hl7_messages.c.control_token, unique=True
)
Index("ix_hl7_messages_status", hl7_messages.c.status, hl7_messages.c.received_at)

# -- backup -------------------------------------------------------------------------------------
# What the backup service (hdsvault.backup) must remember outside its repositories: the
# offline media written and their last check, every verification result (the "0" of
# 3-2-1-1-0) and the signed restore-drill reports. No health data: ids, counts, times.

backup_media = Table(
    "backup_media",
    metadata,
    Column("label", String(64), primary_key=True, comment="what is written on the medium"),
    Column("kind", String(32), nullable=False, comment="removable | tape | ..."),
    Column("path", Text, nullable=False, comment="where it was mounted when written"),
    Column("repository_id", String(64), nullable=False),
    Column("snapshots", Text, nullable=False, comment="JSON array of snapshot ids"),
    Column("offsite", Boolean, nullable=False, default=True),
    Column("written_at", DateTime(timezone=True), nullable=False),
    Column("last_verified_at", DateTime(timezone=True)),
    Column("last_result", String(16), nullable=False, comment="never | ok | failed"),
    Column("detail", Text, nullable=False, default=""),
)

backup_checks = Table(
    "backup_checks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("target", String(80), nullable=False, comment="repo:<name> | media:<label>"),
    Column("kind", String(16), nullable=False, comment="verify | read-data | sample | media"),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("summary", Text, nullable=False),
)
Index("ix_backup_checks_target_time", backup_checks.c.target, backup_checks.c.time)

backup_drills = Table(
    "backup_drills",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("repository", String(64), nullable=False),
    Column("snapshot", String(64), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("rto_ms", Integer, nullable=False),
    Column("report", Text, nullable=False, comment="canonical JSON, signed"),
    Column("signature", Text, nullable=False, comment="base64 Ed25519 (backup-signing key)"),
)


# -- bulk export --------------------------------------------------------------------------------
# FHIR Bulk Data ``$export`` jobs (hdsvault.records.bulk_export). The files themselves are
# sealed parts in the blob store; a row holds only technical facts: who asked (a principal's
# subject), which resource types, since when, the state, and the manifest of sealed parts
# (types, counts, blob keys). No health data.

bulk_exports = Table(
    "bulk_exports",
    metadata,
    Column("id", String(32), primary_key=True, comment="random; names the job in URLs"),
    Column("tenant_id", String(9), ForeignKey("tenants.id"), nullable=False),
    Column("requested_by", String(255), nullable=False, comment="principal subject"),
    Column("request", Text, nullable=False, comment="the kick-off URL path and query"),
    Column("types", Text, nullable=False, comment="JSON array; empty = every type"),
    Column("since", DateTime(timezone=True)),
    Column("scope", String(16), nullable=False, comment="system | patient"),
    Column(
        "status", String(16), nullable=False, comment="accepted|running|completed|failed|cancelled"
    ),
    Column("written", Integer, nullable=False, comment="resources written so far"),
    Column("parts", Text, nullable=False, comment="JSON array of sealed parts"),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("transaction_time", DateTime(timezone=True)),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
Index("ix_bulk_exports_tenant_created", bulk_exports.c.tenant_id, bulk_exports.c.created_at)
Index("ix_bulk_exports_expires", bulk_exports.c.expires_at)
