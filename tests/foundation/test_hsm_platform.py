"""The whole platform on an HSM-held KEK (SoftHSM2 over PKCS#11), end to end through the CLI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sqlalchemy import select

from hdsvault.config import load_settings
from hdsvault.db.schema import tenant_keys
from hdsvault.platform import Platform, init_platform
from hdsvault.tenants.service import add_tenant

from support.softhsm import SoftHSMToken


def hsm_settings(token: SoftHSMToken, tmp_path: Path, pin: str | None = None):  # type: ignore[no-untyped-def]
    return load_settings(
        data_dir=tmp_path / "var",
        kek={
            "provider": "pkcs11",
            "pkcs11": {
                "module": token.module,
                "token_label": token.token_label,
                "key_label": f"kek-{tmp_path.name}",
                "pin": pin or token.pin,
            },
        },
    )


def test_platform_keys_are_wrapped_by_the_hsm(softhsm_token: SoftHSMToken, tmp_path: Path) -> None:
    settings = hsm_settings(softhsm_token, tmp_path)
    steps = init_platform(settings)
    assert any("HSM key" in s for s in steps)
    assert not settings.kek_file.exists()  # no key file at all with an HSM
    platform = Platform.open(settings)
    try:
        tenant = add_tenant(platform, "750712184", "CHU HSM", by="test").id
        with platform.engine.begin() as conn:
            keys = platform.keyring.data_keys(conn, tenant)
            kek_ids = set(conn.execute(select(tenant_keys.c.kek_id)).scalars())
        from hdsvault.crypto.aead import SealContext

        ctx = SealContext(tenant, "test", "1", 1)
        blob = keys.seal(b"hsm-protected", ctx)
    finally:
        platform.close()
    assert kek_ids == {f"pkcs11:{softhsm_token.token_label}/kek-{tmp_path.name}"}
    # A new process-level platform unwraps through the HSM again.
    reopened = Platform.open(settings)
    try:
        with reopened.engine.connect() as conn:
            assert reopened.keyring.data_keys(conn, tenant).open(blob, ctx) == b"hsm-protected"
        assert reopened.keyring.kek_id.startswith("pkcs11:")
    finally:
        reopened.close()


def test_cli_over_the_hsm_and_wrong_pin_refuses(
    softhsm_token: SoftHSMToken, tmp_path: Path
) -> None:
    cfg = tmp_path / "hdsvault.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "var"}"\n[kek]\nprovider = "pkcs11"\n[kek.pkcs11]\n'
        f'module = "{softhsm_token.module}"\ntoken_label = "{softhsm_token.token_label}"\n'
        f'key_label = "kek-cli-{tmp_path.name}"\n'
    )
    env = {**os.environ, "HDSVAULT_KEK__PKCS11__PIN": softhsm_token.pin}

    def run(*args: str, pin: str | None = None) -> subprocess.CompletedProcess[str]:
        e = dict(env)
        if pin is not None:
            e["HDSVAULT_KEK__PKCS11__PIN"] = pin
        return subprocess.run(
            ["hdsvault", "--config", str(cfg), *args], env=e, capture_output=True, text=True
        )

    assert run("init").returncode == 0
    assert run("tenant", "add", "750712184", "--name", "CHU HSM").returncode == 0
    assert run("keys", "rotate", "--tenant", "750712184").returncode == 0
    shown = run("tenant", "show", "750712184")
    assert "data-key versions  2" in shown.stdout
    refused = run("tenant", "list", pin="0000")
    assert refused.returncode == 3
    assert "PIN" in refused.stderr or "pin" in refused.stderr
    assert softhsm_token.pin not in run("config", "show").stdout
