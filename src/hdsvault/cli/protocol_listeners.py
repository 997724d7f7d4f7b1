"""The DIMSE and MLLP listeners that ``hdsvault serve`` starts beside HTTP when enabled.

Why inside ``serve``: a hospital enables DICOM and HL7 in the configuration
(``[dicom] enabled = true``, ``[hl7] enabled = true``) and expects the one service it runs to
answer on every port; the dedicated ``hdsvault dicom serve`` / ``hl7 serve`` commands remain
for deployments that run each listener as its own unit. The listeners live in the process
that owns the ports (the only process, or the supervisor of the HTTP workers); their journal
entries are sequenced by the HTTP workers' sequencer like any other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from hdsvault.platform import Platform


class ListenerConfigError(Exception):
    """A listener is enabled but could never accept anything (no peer, no sender)."""


@contextmanager
def protocol_listeners(platform: Platform) -> Iterator[list[str]]:
    """Start the enabled listeners; yields what listens where; stops them on exit."""
    cfg = platform.settings
    if cfg.dicom.enabled and not cfg.dicom.peers:
        raise ListenerConfigError(
            "[dicom] enabled without [[dicom.peers]]: every association would be refused"
        )
    if cfg.hl7.enabled and not cfg.hl7.senders:
        raise ListenerConfigError(
            "[hl7] enabled without [[hl7.senders]]: every message would be rejected"
        )
    started: list[str] = []
    with ExitStack() as stack:
        if cfg.dicom.enabled:
            from hdsvault.dicom.server import DimseServer
            from hdsvault.imaging.store import ImagingStore

            store = ImagingStore(platform)
            stack.callback(store.close)
            dimse = DimseServer(store)
            host, port = dimse.start()
            stack.callback(dimse.stop)
            started.append(f"DICOM {cfg.dicom.ae_title} on {host}:{port}")
        if cfg.hl7.enabled:
            from hdsvault.hl7v2.server import MllpServer

            mllp = MllpServer(platform)
            host, port = mllp.start()
            stack.callback(mllp.stop)
            started.append(f"HL7 MLLP on {host}:{port}")
        yield started
