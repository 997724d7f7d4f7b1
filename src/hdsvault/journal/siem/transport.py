"""Syslog over TCP (RFC 6587) and TLS (RFC 5425), octet-counted, to one SIEM receiver.

Why octet counting (``MSG-LEN SP SYSLOG-MSG``) for both: it is the only framing RFC 5425
allows over TLS, and over plain TCP (RFC 6587 §3.4.1) it is the one that cannot be broken by
the content of a message; rsyslog, syslog-ng and the commercial collectors detect it by the
leading digit. Our messages never contain a raw newline anyway (see ``formats``).

TLS: 1.2 or later, the receiver's certificate verified against the configured CA file and its
name (or IP address) checked against ``server_name`` (default: the host we connect to); an
optional client certificate for receivers that authenticate senders (rsyslog
``StreamDriver.AuthMode="x509/certvalid"`` or ``"x509/name"``).

What "sent" means. Syslog over TCP has no application-level acknowledgement: :meth:`send`
returning means the kernel accepted the bytes, not that the receiver stored them. Two checks
narrow the gap: before each batch the connection is probed (a syslog receiver never sends
application data, so a readable socket means it closed or reset the connection, and we
reconnect rather than write into a dead socket), and :meth:`close` drains and half-closes
the connection so that the last batch is followed by a FIN, not a reset that could make the
receiver drop unread bytes. What remains (bytes in flight when the receiver crashes or is
stopped before reading them) is the residual risk documented in docs/siem.md; the exporter's
persistent cursor turns every *detected* failure into a resend (duplicates, not loss).
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["SyslogSender", "TlsConfig", "TransportError", "frame"]


class TransportError(Exception):
    """A batch could not be written: nothing of it may be assumed delivered."""


def frame(message: bytes) -> bytes:
    """Octet-counting frame: ``MSG-LEN SP SYSLOG-MSG`` (RFC 5425 §4.3, RFC 6587 §3.4.1)."""
    return b"%d %b" % (len(message), message)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """How to authenticate the receiver (and, optionally, ourselves to it)."""

    ca_file: Path
    """PEM file of the CA(s) that may sign the receiver's certificate (and only those: the
    system trust store is not used, a SIEM is a private endpoint)."""
    cert_file: Path | None = None
    """Client certificate chain (PEM), for receivers that require one."""
    key_file: Path | None = None
    """Private key of ``cert_file`` (PEM, unencrypted); may be inside ``cert_file``."""
    server_name: str | None = None
    """Name (DNS or IP) the receiver's certificate must carry; default: the host."""

    def context(self) -> ssl.SSLContext:
        """A client context: TLS >= 1.2, CERT_REQUIRED, hostname checked, our CA only."""
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("TLS key_file given without cert_file")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(cafile=str(self.ca_file))
        if self.cert_file is not None:
            context.load_cert_chain(
                str(self.cert_file), None if self.key_file is None else str(self.key_file)
            )
        return context


class SyslogSender:
    """A connection to one receiver; connects lazily and reconnects after any failure.

    Not thread-safe: one exporter owns one sender.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: TlsConfig | None = None,
        connect_timeout: float = 5.0,
        send_timeout: float = 10.0,
        refusal_wait: float = 0.2,
    ) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, not {port}")
        self.host = host
        self.port = port
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self.refusal_wait = refusal_wait
        # Built now: a missing or invalid CA/cert file is a start-up error, not a send error.
        self._context = tls.context() if tls is not None else None
        self._sock: socket.socket | None = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        """Open the connection (TLS handshake included) within ``connect_timeout``."""
        self.close()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise TransportError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self._context is not None:
                assert self.tls is not None
                sock = self._context.wrap_socket(
                    sock, server_hostname=self.tls.server_name or self.host
                )
            sock.settimeout(self.send_timeout)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            sock.close()
            raise TransportError(
                f"cannot set up {'TLS' if self._context else 'TCP'} session with "
                f"{self.host}:{self.port}: {exc}"
            ) from exc
        if not self._not_refused(sock):
            sock.close()
            raise TransportError(
                f"{self.host}:{self.port} closed the connection right after accepting it: "
                "sender not allowed, or client certificate missing or refused?"
            )
        self._sock = sock

    def _not_refused(self, sock: socket.socket) -> bool:
        """Watch the new connection for ``refusal_wait`` seconds; False if the peer closed it.

        Receivers refuse senders *after* accepting the connection: rsyslog checks a client
        certificate (``StreamDriver.AuthMode="x509/..."``) or ``AllowedSender`` once the
        session exists, and with TLS 1.3 the client's handshake completes before the server
        has judged its certificate. Writing at once would put the first batch into a
        connection about to be closed: "written without error", yet lost, again at every
        reconnect. A quiet connection after this wait is taken as accepted.
        """
        deadline = time.monotonic() + self.refusal_wait
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], remaining)
            if readable and not self._peer_alive(sock):
                return False
            if not readable:
                return True
        return True

    def send(self, messages: Sequence[bytes]) -> None:
        """Write ``messages`` (each one syslog message) as octet-counted frames.

        Returns once every byte was handed to the kernel without error; raises
        :class:`TransportError` (after closing the connection) otherwise.
        """
        if self._sock is not None and not self._peer_alive(self._sock):
            self.close()
        if self._sock is None:
            self.connect()
        sock = self._sock
        assert sock is not None
        data = b"".join(frame(message) for message in messages)
        try:
            sock.sendall(data)
        except (OSError, ValueError) as exc:
            self._abort()
            raise TransportError(f"send to {self.host}:{self.port} failed: {exc}") from exc

    def close(self) -> None:
        """Close gracefully: drain what the receiver sent, half-close, close.

        Draining first matters: closing a socket with unread input makes the kernel send a
        reset, and a reset may make the receiver discard our last bytes still unread.
        """
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            self._peer_alive(sock)  # drains
            if isinstance(sock, ssl.SSLSocket):
                sock.settimeout(min(self.send_timeout, 1.0))
                sock = sock.unwrap()  # close_notify; the receiver has then read everything
            sock.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            pass
        finally:
            sock.close()

    def _abort(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    @staticmethod
    def _peer_alive(sock: socket.socket) -> bool:
        """Whether the receiver still holds the connection open (drains any input).

        A syslog receiver sends no application data: input is end of stream, a reset, or
        (TLS 1.3) session tickets, which the TLS layer consumes.
        """
        timeout = sock.gettimeout()
        try:
            sock.setblocking(False)
            while True:
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    return True
                if not data:
                    return False
        except (OSError, ValueError):
            return False
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(timeout)

    def __enter__(self) -> SyslogSender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        scheme = "tls" if self.tls is not None else "tcp"
        return f"SyslogSender({scheme}://{self.host}:{self.port})"
