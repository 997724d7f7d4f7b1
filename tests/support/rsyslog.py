"""A real rsyslogd for tests: private config, loopback port, TCP or TLS input, raw output.

Each instance runs in the foreground (``-n``) with its own config, pid file and work
directory, and no system inputs; its only rule writes ``%rawmsg%`` to a file the test reads.
TLS receivers use certificates made here with ``cryptography`` (a throwaway CA and a server
certificate for 127.0.0.1/localhost).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RSYSLOG_MODULE_DIRS = (
    "/usr/lib/x86_64-linux-gnu/rsyslog",
    "/usr/lib/aarch64-linux-gnu/rsyslog",
    "/usr/lib/rsyslog",
    "/usr/lib64/rsyslog",
)

# --------------------------------------------------------------------------- rsyslogd


def _rsyslogd_path() -> str | None:
    return shutil.which("rsyslogd") or next(
        (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.access(p, os.X_OK)), None
    )


def missing_rsyslog(tls: bool) -> str | None:
    """What prevents running the receiver, or ``None``."""
    if _rsyslogd_path() is None:
        return "rsyslogd not found; run scripts/setup-system.sh (Debian package rsyslog)"
    needed = ["imtcp.so"] + (["lmnsd_gtls.so"] if tls else [])
    for module in needed:
        if not any(Path(d, module).exists() for d in RSYSLOG_MODULE_DIRS):
            package = "rsyslog-gnutls" if module == "lmnsd_gtls.so" else "rsyslog"
            return f"rsyslog module {module} not found (Debian package {package})"
    return None


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path) -> Pki:
    """A test CA, a server certificate for 127.0.0.1/localhost, and a client certificate."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hdsvault test SIEM CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        name: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return (
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    directory.mkdir(parents=True, exist_ok=True)
    server = leaf(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client = leaf("hdsvault-exporter", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    pki = Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(server[0])
    pki.server_key.write_bytes(server[1])
    pki.client_cert.write_bytes(client[0])
    pki.client_key.write_bytes(client[1])
    for key_file in (pki.server_key, pki.client_key):
        key_file.chmod(0o600)
    return pki


class Rsyslogd:
    """One rsyslogd receiving on ``127.0.0.1:port`` and writing what arrives to ``out``."""

    def __init__(
        self, workdir: Path, *, port: int, pki: Pki | None = None, auth_mode: str = "anon"
    ) -> None:
        self.workdir = workdir
        self.port = port
        self.pki = pki
        self.auth_mode = auth_mode
        self.conf = workdir / "rsyslog.conf"
        self.pidfile = workdir / "rsyslogd.pid"
        self.out = workdir / "out.log"
        self.internal = workdir / "internal.log"
        self.stderr = workdir / "rsyslogd.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.config())

    def config(self) -> str:
        """The receiver configuration (docs/siem.md shows the same)."""
        tls_global = ""
        module = 'module(load="imtcp")'
        if self.pki is not None:
            tls_global = (
                f'       DefaultNetstreamDriverCAFile="{self.pki.ca}"\n'
                f'       DefaultNetstreamDriverCertFile="{self.pki.server_cert}"\n'
                f'       DefaultNetstreamDriverKeyFile="{self.pki.server_key}"\n'
            )
            module = (
                'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"\n'
                f'       StreamDriver.AuthMode="{self.auth_mode}")'
            )
        return f"""\
# hdsvault SIEM receiver for tests: no system inputs (no imuxsock/imklog).
global(workDirectory="{self.workdir}"
       maxMessageSize="256k"
{tls_global}       )
{module}
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="siem") {{
  action(type="omfile" file="{self.out}" template="raw"
         flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imtcp" port="{self.port}" address="127.0.0.1" ruleset="siem"
      SupportOctetCountedFraming="on")
# rsyslogd's own messages (errors, start/stop) go elsewhere, for debugging only.
action(type="omfile" file="{self.internal}")
"""

    def start(self, timeout: float = 15.0) -> None:
        binary = _rsyslogd_path()
        assert binary is not None
        self.pidfile.unlink(missing_ok=True)
        with self.stderr.open("ab") as err:
            self.proc = subprocess.Popen(
                [binary, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited with {self.proc.returncode}: {self.diag()}")
            if self.listening():
                return
            time.sleep(0.02)
        raise RuntimeError(f"rsyslogd did not listen on {self.port}: {self.diag()}")

    def listening(self) -> bool:
        """Whether the port is in LISTEN state. Read from /proc rather than by connecting:
        a probe connection would be a (TLS-failing) session in rsyslogd's own log."""
        try:
            table = Path("/proc/net/tcp").read_text()
        except OSError:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False
        wanted = f"0100007F:{self.port:04X}"
        return any(
            fields[1] == wanted and fields[3] == "0A"
            for fields in (line.split() for line in table.splitlines()[1:])
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def lines(self) -> list[bytes]:
        try:
            data = self.out.read_bytes()
        except FileNotFoundError:
            return []
        return data.split(b"\n")[:-1]  # only complete lines

    def wait_for_lines(
        self, done: Callable[[list[bytes]], bool], timeout: float = 20.0
    ) -> list[bytes]:
        """Poll the output file until ``done(lines)`` (rsyslog writes asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if done(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"rsyslogd output incomplete after {timeout}s ({len(lines)} lines); "
                    f"{self.diag()}"
                )
            time.sleep(0.02)

    def diag(self) -> str:
        parts = []
        for path in (self.stderr, self.internal):
            with contextlib.suppress(FileNotFoundError):
                parts.append(f"{path.name}: {path.read_text(errors='replace')[-2000:]}")
        return " | ".join(parts)


def rsyslog_version() -> str:
    binary = _rsyslogd_path()
    assert binary is not None
    first = subprocess.run([binary, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return first.replace(" compiled with:", "").strip()


# --------------------------------------------------------------------------- fixtures
