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


def test_dicom_worker_processes_unwrap_through_the_hsm(
    softhsm_token: SoftHSMToken, tmp_path: Path
) -> None:
    """``[dicom] workers = 2`` on an HSM-held KEK: each worker process opens its own PKCS#11
    session with the PIN it was handed over its control socket (the start waits for both to
    be ready: one that could not open the platform would fail it), and stores what a peer
    sends."""
    import socket

    from pydicom.data import get_testdata_file

    from hdsvault.config import DicomPeerSettings
    from hdsvault.db.schema import imaging_instances
    from hdsvault.dicom.server import DimseServer
    from hdsvault.imaging.store import ImagingStore

    settings = hsm_settings(softhsm_token, tmp_path)
    init_platform(settings)
    platform = Platform.open(settings)
    try:
        tenant = add_tenant(platform, "750712184", "CHU HSM", by="test").id
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            settings.dicom.port = s.getsockname()[1]
        settings.dicom.workers = 2
        settings.dicom.peers = [DicomPeerSettings(ae_title="DCMTK", tenant=tenant)]
        store = ImagingStore(platform)
        server = DimseServer(store)
        try:
            host, port = server.start()
            for name in ("CT_small.dcm", "MR_small.dcm"):
                out = subprocess.run(
                    ["/usr/bin/storescu", "-aet", "DCMTK", "-aec", "HDSVAULT", host, str(port),
                     get_testdata_file(name)],
                    capture_output=True, text=True, timeout=60,
                )  # fmt: skip
                assert out.returncode == 0, out.stderr
        finally:
            server.stop()
            store.close()
        with platform.engine.connect() as conn:
            stored = conn.execute(select(imaging_instances.c.id)).all()
        assert len(stored) == 2
    finally:
        platform.close()
