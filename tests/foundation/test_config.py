"""Settings: defaults, TOML, environment precedence, clear errors, no secrets shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from hdsvault.config import ConfigError, load_settings


def test_defaults_are_the_embedded_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HDSVAULT_CONFIG", raising=False)
    s = load_settings()
    assert s.database_url.startswith("sqlite:///")
    assert s.database_url.endswith("var/hdsvault.db")
    assert s.kek.provider == "file"
    assert s.kek_file == Path("var/keys/kek.key")
    assert (s.server.host, s.server.port) == ("127.0.0.1", 8080)


def test_toml_then_environment_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "hdsvault.toml"
    cfg.write_text('data_dir = "/srv/hds"\n[server]\nport = 9000\nworkers = 4\n')
    s = load_settings(cfg)
    assert (s.server.port, s.server.workers, s.data_dir) == (9000, 4, Path("/srv/hds"))
    monkeypatch.setenv("HDSVAULT_SERVER__PORT", "9100")
    s = load_settings(cfg)
    assert (s.server.port, s.server.workers) == (9100, 4)


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[server]\nport = 7001\n")
    monkeypatch.setenv("HDSVAULT_CONFIG", str(cfg))
    assert load_settings().server.port == 7001


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("[server]\nport = 70000\n", "server.port"),
        ('[database]\nurl = "mysql://x"\n', "database.url"),
        ('[kek]\nprovider = "pkcs11"\n', "kek"),
        ("unknown_field = 1\n", "unknown_field"),
        ('[kek]\nprovider = "vault"\n', "kek.provider"),
    ],
)
def test_invalid_values_name_the_field(tmp_path: Path, toml: str, field: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert field in str(exc.value)


def test_unreadable_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport=")
    with pytest.raises(ConfigError):
        load_settings(bad)


def test_redacted_hides_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[database]\nurl = "postgresql+psycopg://hds:s3cret@db:5432/hds"\n'
        '[kek]\nprovider = "pkcs11"\n'
        '[kek.pkcs11]\nmodule = "/x.so"\ntoken_label = "t"\npin = "1234"\n'
    )
    shown = repr(load_settings(cfg).redacted())
    assert "s3cret" not in shown
    assert "1234" not in shown
    assert "hds:***@db:5432/hds" in shown


@pytest.mark.parametrize("section", ["dicom", "server"])
def test_workers_default_to_one_per_core(section: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    part = getattr(load_settings(), section)
    assert part.workers == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert part.worker_processes() == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert part.worker_processes() == 8  # at most 8 by default
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert part.worker_processes() == 1  # unknown: the serving process alone
    part.workers = 3
    assert part.worker_processes() == 3


def test_settings_with_secrets_rebuild_the_same_settings(tmp_path: Path) -> None:
    """What a DIMSE worker process is handed (over its socket) rebuilds equal settings,
    secrets in clear included."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path}"\n[kek]\nprovider = "pkcs11"\n'
        '[kek.pkcs11]\nmodule = "/m.so"\ntoken_label = "t"\npin = "1234-secret"\n'
    )
    settings = load_settings(cfg)
    handed = settings.with_secrets()
    assert handed["kek"]["pkcs11"]["pin"] == "1234-secret"
    assert type(settings)(**handed) == settings
