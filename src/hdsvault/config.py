"""The one typed settings object.

Settings come from defaults (the embedded single-node platform: SQLite + files under ``./var``),
then an optional TOML file, then ``HDSVAULT_*`` environment variables (nested fields use ``__``,
e.g. ``HDSVAULT_DATABASE__URL``). They are built once at start (:func:`load_settings`) and passed
down; no other module reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from hdsvault.access.settings import AccessSettings, OidcSettings, PerimeterSettings, TlsSettings

CONFIG_ENV = "HDSVAULT_CONFIG"
"""Environment variable naming the TOML configuration file (optional)."""


class ConfigError(Exception):
    """The configuration is invalid; the message says which field and why."""


class DatabaseSettings(BaseModel):
    """Where records, keys (wrapped) and the journal live."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Default: SQLite file <data_dir>/hdsvault.db. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/dbname",
    )
    pool_size: int = Field(default=5, ge=1, le=200)

    @field_validator("url")
    @classmethod
    def _known_backend(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("sqlite:///", "postgresql+psycopg://")):
            raise ValueError("must start with sqlite:/// or postgresql+psycopg://")
        return v


class FileKekSettings(BaseModel):
    """A key-encryption key kept in a local file (mode 0600)."""

    path: Path | None = Field(default=None, description="Default: <data_dir>/keys/kek.key")


class Pkcs11KekSettings(BaseModel):
    """A key-encryption key that never leaves an HSM, reached over PKCS#11."""

    module: Path = Field(description="Path of the PKCS#11 module (.so)")
    token_label: str
    key_label: str = "hdsvault-kek"
    pin: SecretStr


class KekSettings(BaseModel):
    """Which KEK provider wraps the per-tenant data keys."""

    provider: Literal["file", "pkcs11"] = "file"
    file: FileKekSettings = FileKekSettings()
    pkcs11: Pkcs11KekSettings | None = None

    @model_validator(mode="after")
    def _pkcs11_needs_settings(self) -> KekSettings:
        if self.provider == "pkcs11" and self.pkcs11 is None:
            raise ValueError(
                "provider 'pkcs11' needs a [kek.pkcs11] section (module, token_label, pin)"
            )
        return self


def _per_core(workers: int) -> int:
    """``workers``, or for 0 one per CPU core, at most 8 (1 when the count is unknown)."""
    return workers or min(os.cpu_count() or 1, 8)


class ServerSettings(BaseModel):
    """The HTTP listener."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="HTTP processes: 0, one per CPU core (at most 8); 1, the serving process "
        "itself; more, worker processes under it (api/workers.py)",
    )
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    def worker_processes(self) -> int:
        """How many processes serve HTTP (``workers``, 0 resolved: see the field)."""
        return _per_core(self.workers)


class FhirSettings(BaseModel):
    """The FHIR REST API and store (``docs/fhir.md``)."""

    max_bundle_entries: int = Field(default=10_000, ge=1, le=1_000_000)
    default_count: int = Field(default=20, ge=1, le=1000)
    max_count: int = Field(default=1000, ge=1, le=10_000)
    max_sort_candidates: int = Field(
        default=10_000, ge=1, description="Matches sorted in memory for _sort on a parameter"
    )
    max_chain_matches: int = Field(
        default=1000, ge=1, description="Inner results of a chained parameter"
    )
    base_urls: list[str] = Field(
        default_factory=list,
        description="Absolute base URLs of this server: references to them are local",
    )
    export_retention_hours: int = Field(
        default=24, ge=1, le=24 * 30, description="Bulk $export files are deleted after this"
    )
    export_part_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=64 * 1024,
        le=256 * 1024 * 1024,
        description="Bulk $export: NDJSON bytes per sealed part (bounds memory per job)",
    )


class SiemSinkSettings(BaseModel):
    """One syslog receiver (SIEM) the journal is exported to, at least once, in order."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    host: str
    port: int = Field(ge=1, le=65535)
    transport: Literal["tcp", "tls"] = "tls"
    format: Literal["rfc5424", "cef", "ecs"] = "rfc5424"
    ca_file: Path | None = Field(default=None, description="CA of the receiver (tls)")
    cert_file: Path | None = Field(default=None, description="client certificate (tls)")
    key_file: Path | None = Field(default=None, description="client key (tls)")
    logs: list[str] = Field(default=["*"], description="log ids to export; '*' = all")

    @model_validator(mode="after")
    def _tls_needs_ca(self) -> SiemSinkSettings:
        if self.transport == "tls" and self.ca_file is None:
            raise ValueError("transport 'tls' needs ca_file (the receiver's CA)")
        return self


class JournalSettings(BaseModel):
    """Sequencing, SIEM export and retention of the journal."""

    integrate_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    export_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    siem: list[SiemSinkSettings] = Field(default_factory=list)
    retention_days: int = Field(
        default=365,
        ge=183,
        description="entries older than this may be pruned (minimum 6 months: French rules "
        "require access traces to be kept at least that long)",
    )


class BlobSettings(BaseModel):
    """Where DICOM instances and other large payloads live (always sealed; ``docs/imaging.md``)."""

    backend: Literal["filesystem", "database", "s3"] = "filesystem"
    path: Path | None = Field(default=None, description="filesystem: default <data_dir>/blobs")
    s3_endpoint_url: str | None = Field(default=None, description="s3: endpoint (MinIO, Ceph...)")
    s3_bucket: str = "hdsvault-blobs"
    s3_region: str = "us-east-1"
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_prefix: str = ""
    chunk_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=64 * 1024,
        le=256 * 1024 * 1024,
        description="plaintext bytes per AEAD segment of a blob",
    )
    inline_max_bytes: int = Field(
        default=64 * 1024,
        ge=0,
        le=512 * 1024,
        description=(
            "DICOM instances of at most this many bytes are stored in the index database, in "
            "the transaction of their index row (one flush per instance instead of three); "
            "0: every instance goes to the backend"
        ),
    )
    inline_cache_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        le=4 * 1024 * 1024 * 1024,
        description=(
            "sealed inline blobs kept in each server process's memory for retrievals (least "
            "recently used out first; ciphertext only); 0: none, every retrieval reads them "
            "from the index database"
        ),
    )
    file_cache_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=0,
        le=64 * 1024 * 1024 * 1024,
        description=(
            "sealed blobs of the backend (instances of one AEAD segment, stored as files or "
            "objects) kept in each server process's memory for retrievals, as Orthanc's "
            "storage cache (128 MB by default) keeps files (least recently used out first; "
            "ciphertext only); 0: none, every retrieval reads them from the backend"
        ),
    )


class DicomPeerSettings(BaseModel):
    """A DICOM application entity allowed to talk to hdsvault, and the tenant it acts for."""

    ae_title: str = Field(pattern=r"^[ -~]{1,16}$")
    tenant: str = Field(pattern=r"^[0-9AB]{9}$", description="FINESS of the establishment")
    host: str | None = Field(default=None, description="C-MOVE destination address")
    port: int | None = Field(default=None, ge=1, le=65535, description="C-MOVE destination port")
    role: str = Field(default="radiology", description="role of the peer's principal")


class DicomSettings(BaseModel):
    """The DIMSE listener (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET) and DICOMweb limits."""

    enabled: bool = False
    ae_title: str = Field(default="HDSVAULT", pattern=r"^[ -~]{1,16}$")
    host: str = "127.0.0.1"
    port: int = Field(default=11112, ge=1, le=65535)
    peers: list[DicomPeerSettings] = Field(default_factory=list)
    max_pdu: int = Field(default=262_144, ge=0)
    network_timeout: float = Field(default=60.0, gt=0)
    max_query_results: int = Field(default=1000, ge=1, le=100_000)
    max_stow_bytes: int = Field(default=2 * 1024 * 1024 * 1024, ge=1024)
    workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="processes serving associations: 0, one per CPU core (at most 8); 1, the "
        "listening process itself; more, it accepts and hands each connection to the least "
        "busy worker process",
    )

    def worker_processes(self) -> int:
        """How many processes serve associations (``workers``, 0 resolved: see the field)."""
        return _per_core(self.workers)


class Hl7SenderSettings(BaseModel):
    """An HL7 v2 sending application/facility (MSH-3/MSH-4) and the tenant it writes to."""

    application: str = Field(min_length=1, max_length=227)
    facility: str = Field(default="*", description="MSH-4 namespace id; '*' = any")
    tenant: str = Field(pattern=r"^[0-9AB]{9}$")


class Hl7Settings(BaseModel):
    """The HL7 v2 MLLP listener (ADT, ORU)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=2575, ge=1, le=65535)
    senders: list[Hl7SenderSettings] = Field(default_factory=list)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = Field(default=None, description="require client certs")
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    receiving_application: str = "HDSVAULT"
    receiving_facility: str = "HDSVAULT"


class BackupRepositorySettings(BaseModel):
    """One backup repository (``[[backup.repositories]]``; ``docs/backup.md``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: Literal["hardened-local", "local", "s3"] = Field(
        description="hardened-local: chattr +i WORM directory; local: plain directory "
        "(not immutable); s3: bucket with Object Lock (COMPLIANCE)"
    )
    path: Path | None = Field(default=None, description="Directory (hardened-local, local)")
    retention_days: int = Field(
        default=30, ge=0, le=36500, description="Objects immutable this long after writing"
    )
    offsite: bool | None = Field(default=None, description="Default: true for s3, else false")
    media: str | None = Field(
        default=None, description="Media type for 3-2-1-1-0 (default: disk / object-storage)"
    )
    endpoint_url: str | None = Field(default=None, description="S3 endpoint (s3)")
    bucket: str | None = None
    prefix: str = ""
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> BackupRepositorySettings:
        if self.kind in ("hardened-local", "local") and self.path is None:
            raise ValueError(f"repository {self.name!r} ({self.kind}) needs a path")
        if self.kind == "s3" and not self.bucket:
            raise ValueError(f"repository {self.name!r} (s3) needs a bucket")
        return self


class BackupSettings(BaseModel):
    """Backups of the whole platform, restore drills, offline media (``docs/backup.md``)."""

    repositories: list[BackupRepositorySettings] = Field(default_factory=list)
    schedule: str | None = Field(
        default=None,
        pattern=r"^(every \d+(m|h|d)|daily \d{2}:\d{2})$",
        description="'every 6h' / 'every 30m' / 'daily 02:30' (UTC), run by `backup daemon`",
    )
    keep: str | None = Field(
        default="daily=30,monthly=12,yearly=10",
        description="Retention policy applied after scheduled runs (None: never forget)",
    )
    verify_sample_percent: float = Field(default=5.0, ge=0, le=100)
    verification_max_age_days: int = Field(default=8, ge=1, le=3650)
    trusted_signers: list[str] = Field(
        default_factory=list,
        description="Base64 Ed25519 public keys whose snapshots are trusted without the "
        "platform database (disaster recovery on a new host)",
    )
    pg_bin_dir: Path | None = Field(
        default=None, description="Directory of pg_dump/pg_restore (default: newest found)"
    )
    drill_sample_reads: int = Field(default=5, ge=0, le=1000)


class LoggingSettings(BaseModel):
    """Structured JSON logs on stderr."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    json_output: bool = True


class Settings(BaseSettings):
    """The effective configuration of one hdsvault process."""

    model_config = SettingsConfigDict(
        env_prefix="HDSVAULT_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(
        default=Path("var"), description="Where the embedded platform keeps its files"
    )
    database: DatabaseSettings = DatabaseSettings()
    kek: KekSettings = KekSettings()
    server: ServerSettings = ServerSettings()
    logging: LoggingSettings = LoggingSettings()
    journal: JournalSettings = JournalSettings()
    backup: BackupSettings = BackupSettings()
    fhir: FhirSettings = FhirSettings()
    token_default_ttl_days: int = Field(default=90, ge=1, le=3650)
    access: AccessSettings = AccessSettings()
    oidc: OidcSettings = OidcSettings()
    perimeter: PerimeterSettings = PerimeterSettings()
    tls: TlsSettings = TlsSettings()
    blobs: BlobSettings = BlobSettings()
    dicom: DicomSettings = DicomSettings()
    hl7: Hl7Settings = Hl7Settings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = init_settings.init_kwargs.pop("_toml_file", None)  # type: ignore[attr-defined]
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    # Derived locations: one place decides where each file lives.
    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.data_dir / 'hdsvault.db').resolve()}"

    @property
    def kek_file(self) -> Path:
        return self.kek.file.path or self.data_dir / "keys" / "kek.key"

    @property
    def certificates_dir(self) -> Path:
        return self.data_dir / "certificates"

    def with_secrets(self) -> dict[str, Any]:
        """The configuration as JSON values, secrets in clear: what a worker process is handed
        to rebuild these exact settings (over a socket, never its command line or environment)."""
        revealed: dict[str, Any] = _revealed(
            self.model_dump(mode="python"), self.model_dump(mode="json")
        )
        return revealed

    def redacted(self) -> dict[str, Any]:
        """The configuration as a dict, secrets masked (for ``config show`` and logs)."""
        out = self.model_dump(mode="json")
        out["database"]["url"] = _redact_url(self.database_url)
        out["kek"]["file"]["path"] = str(self.kek_file)
        if out["kek"].get("pkcs11"):
            out["kek"]["pkcs11"]["pin"] = "********"
        return out


def _revealed(value: Any, as_json: Any) -> Any:
    """``as_json`` (the JSON dump: networks, paths, enums as text) with the secrets of
    ``value`` (the Python dump, same shape) in clear."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _revealed(v, as_json[k]) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_revealed(v, j) for v, j in zip(value, as_json, strict=True)]
    return as_json


def _redact_url(url: str) -> str:
    """Hide a password in a database URL: ``user:secret@`` -> ``user:***@``."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, at, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}{':***' if ':' in creds else ''}{at}{host}"


def config_path(explicit: Path | None = None) -> Path | None:
    """The TOML file in force: ``explicit`` (``--config``), else ``$HDSVAULT_CONFIG``, else none."""
    if explicit is not None:
        return explicit
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings once: defaults < TOML file < environment < explicit overrides.

    The TOML file is ``config_file`` or the file named by ``HDSVAULT_CONFIG``. Every problem is
    reported as a :class:`ConfigError` naming the field, so start-up fails with a clear message.
    """
    path = config_path(config_file)
    if path is not None and not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    try:
        kwargs: dict[str, Any] = dict(overrides)
        if path is not None:
            kwargs["_toml_file"] = path
        return Settings(**kwargs)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc}") from None
