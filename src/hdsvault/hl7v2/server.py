"""MLLP listener (python-hl7's asyncio streams), optionally over TLS.

One asyncio loop in a background thread accepts connections; each message block is handed
to :meth:`hdsvault.ingest.service.Ingest.receive` in a worker thread (it does database I/O)
and the ACK is written back only after it returns, i.e. after the message is durable.
Messages of one connection are processed in order. TCP_NODELAY is set on accepted sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from typing import Any

import structlog
from hl7.mllp import MLLPStreamReader, MLLPStreamWriter, start_hl7_server

from hdsvault.ingest.service import Ingest
from hdsvault.platform import Platform

log = structlog.get_logger("hdsvault.hl7")


class MllpServer:
    def __init__(self, platform: Platform) -> None:
        self.settings = platform.settings.hl7
        self.ingest = Ingest(platform)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self.address: tuple[str, int] = ("", 0)

    def _ssl(self) -> ssl.SSLContext | None:
        s = self.settings
        if s.tls_cert_file is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(s.tls_cert_file), str(s.tls_key_file) if s.tls_key_file else None)
        if s.tls_client_ca_file is not None:
            ctx.load_verify_locations(str(s.tls_client_ca_file))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    async def _client(self, reader: MLLPStreamReader, writer: MLLPStreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        address = f"{peer[0]}:{peer[1]}" if peer else None
        limit = self.settings.max_message_bytes
        try:
            while not reader.at_eof():
                try:
                    block = await reader.readblock()
                except asyncio.IncompleteReadError:
                    break
                except Exception:  # framing error: nothing to acknowledge, drop the connection
                    log.warning("hl7.bad-frame", peer=address)
                    break
                if len(block) > limit:
                    text = "MSH|^~\\&|||||||ACK||P|2.5\rMSA|AR||message too large\r"
                else:
                    text = await asyncio.to_thread(self._receive, block, address)
                writer.writeblock(text.encode("utf-8"))
                await writer.drain()
        finally:
            writer.close()

    def _receive(self, block: bytes, address: str | None) -> str:
        try:
            raw = block.decode("utf-8")
        except UnicodeDecodeError:
            raw = block.decode("latin-1")  # HL7 v2 8859/1 senders (MSH-18)
        return self.ingest.receive(raw, address).ack

    def start(self) -> tuple[str, int]:
        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def serve() -> None:
                self._server = await start_hl7_server(
                    self._client, host=self.settings.host, port=self.settings.port, ssl=self._ssl()
                )
                sock = self._server.sockets[0].getsockname()
                self.address = (str(sock[0]), int(sock[1]))

            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # reported by start(), at once
                self._failure = exc
                self._loop = None  # nothing to stop
                loop.close()
                return
            finally:
                self._ready.set()
            loop.run_forever()
            # Stopped: end the open connections' handlers (each closes its connection) while
            # the loop still runs, instead of leaving them to the garbage collector, whose
            # close then failed on the closed loop ("Event loop is closed") and left the
            # senders' connections open. A message being ingested in its worker thread
            # finishes there: it was persisted or not, never acknowledged (the sender
            # resends; a repeated control id is idempotent).
            handlers = asyncio.all_tasks(loop)
            for task in handlers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*handlers, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="hl7-mllp", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("MLLP listener did not start")
        if self._failure is not None:  # its port taken, its certificate unreadable...
            where = f"{self.settings.host}:{self.settings.port}"
            raise RuntimeError(f"MLLP listener could not start on {where}: {self._failure}") from (
                self._failure
            )
        log.info("hl7.listening", host=self.address[0], port=self.address[1])
        return self.address

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            loop.stop()

        loop.call_soon_threadsafe(shutdown)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = None
