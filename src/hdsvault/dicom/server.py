"""The DIMSE listener: one pynetdicom AE, handlers calling the imaging service.

Status conventions (PS3.4): C-STORE answers 0x0000 for a stored or already-stored instance,
0xC000 when the file cannot be understood (no UIDs...), 0xA900 when its series belongs to
another study, 0x0124 when the peer is not authorised, 0xA700 when storage failed (nothing
was acknowledged: the peer retries). C-FIND/C-MOVE/C-GET failures use 0xC000-0xCFFF
(unable to process) and 0xA801 for an unknown move destination.

Processes: with ``[dicom] workers = 1`` (or on one CPU core) this process listens and serves
every association in its threads. With more (by default one per core) it only accepts, and
worker processes serve (:mod:`hdsvault.dicom.handoff`): each runs a :class:`DimseServer` of
its own, set up by :meth:`DimseServer.serve_handed` and given each connection by
:meth:`DimseServer.take`; the ImagingStudy syncs stay in the listening process.

Sockets: TCP_NODELAY is set on every socket we accept or open (C-MOVE sub-associations), so
that small DIMSE responses are not held back by Nagle's algorithm (~40 ms each otherwise).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    AllStoragePresentationContexts,
    build_context,
    evt,
)
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import AssociationServer

from hdsvault.dicom import reactor, receive, store_response, uids
from hdsvault.dicom.handoff import ConnectionHandOff, StudiesAdded
from hdsvault.dicom.peers import Peer, Peers
from hdsvault.dicom.study_syncs import StudySyncs
from hdsvault.imaging import dicomfile, queries, retrieve
from hdsvault.imaging.attributes import QR_LEVEL, Level, parse_attribute
from hdsvault.imaging.errors import ImagingError, Kind
from hdsvault.imaging.fhir import load_models, sync_pending, sync_study
from hdsvault.imaging.store import ImagingStore
from hdsvault.records.model import Caller

log = structlog.get_logger("hdsvault.dicom")

_STORE_STATUS = {
    Kind.INVALID: 0xC000,
    Kind.CONFLICT: 0xA900,
    Kind.FORBIDDEN: 0x0124,
    Kind.UNAVAILABLE: 0xA700,
    Kind.TOO_LARGE: 0xA700,
    Kind.NOT_FOUND: 0xC000,
}
_SKIP = {QR_LEVEL, "00080005"}
_UID_TAGS = {
    parse_attribute("StudyInstanceUID"): "study",
    parse_attribute("SeriesInstanceUID"): "series",
    parse_attribute("SOPInstanceUID"): "sop",
}
_MAX_SUB_CONTEXTS = 120
_IMPLEMENTATION = (str(PYNETDICOM_IMPLEMENTATION_UID), PYNETDICOM_IMPLEMENTATION_VERSION)
"""File meta of a received instance: what pynetdicom's ``encoded_dataset`` writes."""


@dataclass
class _Association:
    """Per-association state of the C-STORE handler: who the peer acts as (built once, not
    per instance: its journal entries share one request id, the association's) and the
    studies it added to (handed to the ImagingStudy syncs at its end)."""

    assoc: Any  # held so that its id(), the key of this state, is not reused meanwhile
    peer: Peer
    address: str | None
    caller: Caller
    source: str
    studies: set[str] = field(default_factory=set)


def quiet_standard_handlers() -> None:
    """Leave pynetdicom's standard event handlers unbound unless its logs would show.

    They format every PDU and DIMSE message for pynetdicom's info and debug logs, whatever
    the level: ~0.2 ms per C-STORE (no-op SCP, 591 -> 663 instances/s). hdsvault journals every
    store itself; an operator who sets the ``pynetdicom`` logger to INFO or DEBUG gets them
    back. Process-wide, read when an association or a listener is created.
    """
    shown = logging.getLogger("pynetdicom").isEnabledFor(logging.INFO)
    pynetdicom_config.LOG_HANDLER_LEVEL = "standard" if shown else "none"


def read_without_validation() -> None:
    """Let pydicom read values without checking them against their VR.

    pydicom checks every value it reads (regexes for UIDs, dates...) and, in its default
    WARN mode, only warns on a mismatch: it never refuses one. pynetdicom reads every command
    set through it: ~0.15 ms per C-STORE (no-op SCP, 691 -> 758 instances/s). What hdsvault
    accepts is decided by its own checks (``imaging.dicomfile``, the store), so only those
    warnings are dropped. Process-wide.
    """
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE


def tune_pynetdicom() -> None:
    """pynetdicom as hdsvault runs it (each module says why), for this process."""
    reactor.install()
    receive.install()
    uids.install()
    store_response.install()
    quiet_standard_handlers()
    read_without_validation()


def nodelay(event: Any) -> None:
    """EVT_CONN_OPEN: disable Nagle on the association's socket."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HandedConnections(AssociationServer):
    """pynetdicom's association server in a worker process: it never binds nor listens (the
    listening process accepts); :meth:`DimseServer.take` gives it each connection."""

    def server_bind(self) -> None:  # the address is the listening process's
        pass

    def server_activate(self) -> None:
        pass


STOP_GRACE = 10.0
"""Seconds a stopping worker process lets its open associations finish."""


def _text(elem: Any) -> str:
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace")
    return str(value)


class DimseServer:
    """Start with :meth:`start` (non-blocking), stop with :meth:`stop`."""

    def __init__(self, store: ImagingStore, *, ended: StudiesAdded | None = None) -> None:
        """``ended``, in a worker process: called at each association's end (the listening
        process counts them and syncs the studies); by default they are synced here."""
        self.store = store
        self.settings = store.settings.dicom
        self.peers = Peers(self.settings)
        self._server: Any = None
        self._handoff: ConnectionHandOff | None = None
        self._handed: _HandedConnections | None = None
        self._ended = ended
        self._associations: dict[int, _Association] = {}
        self._lock = threading.Lock()
        self._open = 0  # connections open now (the study syncs wait for none)
        self._closed = threading.Condition(self._lock)
        self._syncs: StudySyncs | None = None
        self.ae = self._build_ae()

    # -- set-up -------------------------------------------------------------------------------

    def _build_ae(self) -> AE:
        ae = AE(ae_title=self.settings.ae_title)
        ae.maximum_pdu_size = self.settings.max_pdu
        ae.network_timeout = self.settings.network_timeout
        ae.acse_timeout = 30
        ae.dimse_timeout = self.settings.network_timeout
        ae.maximum_associations = 32
        ae.require_called_aet = True
        ae.require_calling_aet = self.peers.titles() or ["\x00no-peer-configured"]
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(
                str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
            )
        ae.add_supported_context(Verification)
        for qr in (
            PatientRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelFind,
            PatientRootQueryRetrieveInformationModelMove,
            StudyRootQueryRetrieveInformationModelMove,
            PatientRootQueryRetrieveInformationModelGet,
            StudyRootQueryRetrieveInformationModelGet,
        ):
            ae.add_supported_context(qr)
        return ae

    def handlers(self) -> list[Any]:
        return [
            (evt.EVT_CONN_OPEN, nodelay),
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_CONN_OPEN, reactor.wake_on_events),
            (evt.EVT_CONN_CLOSE, self._on_close),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_MOVE, self._on_move),
            (evt.EVT_C_GET, self._on_get),
        ]

    def start(self) -> tuple[str, int]:
        """Listen (in background threads, or worker processes when ``workers`` > 1); catches
        up lagging ImagingStudy resources first."""
        tune_pynetdicom()
        load_models()  # this process runs the ImagingStudy syncs
        self.store.prepare(self.peers.tenants())  # before any association, not in the first
        try:
            sync_pending(self.store, self._service_caller)
        except Exception as exc:  # derived data: never block the listener on it
            log.warning("imagingstudy.sync-pending-failed", error=str(exc)[:200])
        address = (self.settings.host, self.settings.port)
        workers = self.settings.worker_processes()
        if workers > 1:
            self._handoff = ConnectionHandOff(
                address, workers, self.store.settings.with_secrets(), self._added
            )
            self._syncs = StudySyncs(self._sync, self._handoff.open_associations)
            self._handoff.start()
            host, port = self._handoff.address
        else:
            self._syncs = StudySyncs(self._sync, lambda: self._open)
            self._server = self.ae.start_server(address, block=False, evt_handlers=self.handlers())
            host, port = self._server.server_address[:2]
        log.info(
            "dicom.listening",
            host=host,
            port=port,
            ae_title=self.settings.ae_title,
            workers=workers,
        )
        return str(host), int(port)

    def serve_handed(self) -> None:
        """Serve the connections :meth:`take` is given (in a worker process)."""
        tune_pynetdicom()
        self.store.prepare(self.peers.tenants())
        self._handed = _HandedConnections(
            self.ae,
            (self.settings.host, self.settings.port),  # the listening process's address
            self.settings.ae_title,
            self.ae.supported_contexts,
            evt_handlers=self.handlers(),
        )
        self._handed.server_close()  # its socket, made by socketserver, is never bound

    def take(self, conn: socket.socket) -> None:
        """Serve an association on ``conn``, accepted by the listening process."""
        handed = self._handed
        try:
            if handed is None:
                raise RuntimeError("not serving handed connections")
            conn.setblocking(True)
            handed.finish_request(conn, conn.getpeername())  # starts the association's thread
        except Exception as exc:
            log.error("dicom.take-failed", error=type(exc).__name__)
            conn.close()
            if self._ended is not None:
                self._ended("", None, [])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._handoff is not None:
            self._handoff.stop()
            self._handoff = None
        if self._handed is not None:  # a worker: let the open associations end, briefly
            with self._closed:
                self._closed.wait_for(lambda: self._open == 0, timeout=STOP_GRACE)
            self._handed = None
        if self._syncs is not None:  # what the last associations added, in step before we stop
            self._syncs.close()
            self._syncs = None

    def _sync(self, caller: Caller, study_id: str) -> object:
        return sync_study(self.store, caller, study_id)

    def _added(self, ae_title: str, address: str | None, studies: list[str]) -> None:
        """What an association served by a worker added to: synced here (one process)."""
        peer = self.peers.get(ae_title)
        if peer is not None and self._syncs is not None:
            self._syncs.add(peer.caller(address), studies)

    def _service_caller(self, tenant: str) -> Caller:
        from hdsvault.access.roles import Role
        from hdsvault.access.tokens import Principal

        return Caller(Principal("dicom:sync", tenant, Role.SERVICE, auth_method="dicom-ae"), tenant)

    # -- helpers ------------------------------------------------------------------------------

    def _peer(self, event: Any) -> tuple[Peer | None, str | None]:
        requestor = event.assoc.requestor
        peer = self.peers.get(str(requestor.ae_title))
        return peer, f"{requestor.address}:{requestor.port}"

    # -- services -----------------------------------------------------------------------------

    def _on_echo(self, event: Any) -> int:
        return 0x0000

    def _association(self, event: Any, peer: Peer, address: str | None) -> _Association:
        """The state kept for the length of an association: built at its first C-STORE."""
        key = id(event.assoc)
        state = self._associations.get(key)
        if state is None:
            with self._lock:
                state = self._associations.setdefault(
                    key,
                    _Association(
                        event.assoc,
                        peer,
                        address,
                        peer.caller(address),
                        f"dicom:{peer.ae_title}",
                    ),
                )
        return state

    def _on_store(self, event: Any) -> int:
        peer, address = self._peer(event)
        if peer is None:
            return 0x0124
        state = self._association(event, peer, address)
        try:
            request = event.request
            data = dicomfile.part10(
                request.DataSet.getvalue(),
                str(request.AffectedSOPClassUID),
                str(request.AffectedSOPInstanceUID),
                str(event.context.transfer_syntax),
                _IMPLEMENTATION,
            )
            outcome = self.store.store(state.caller, data, source=state.source)
        except ImagingError as exc:
            log.warning("dicom.store-refused", peer=peer.ae_title, kind=str(exc.kind))
            return _STORE_STATUS[exc.kind]
        except Exception as exc:
            log.error("dicom.store-failed", peer=peer.ae_title, error=type(exc).__name__)
            return 0xA700
        if outcome.status == "failed":
            kind = outcome.error.kind if outcome.error else Kind.INVALID
            return _STORE_STATUS[kind]
        if outcome.study_id:
            state.studies.add(outcome.study_id)
        return 0x0000

    def _on_open(self, _event: Any) -> None:
        with self._lock:
            self._open += 1

    def _on_close(self, event: Any) -> None:
        """Hand the studies the association added to to the ImagingStudy syncs.

        Derived data, so off the acknowledgement path: each C-STORE was acknowledged once its
        instance, index rows and journal entry were durable. Until its study is synced (once
        no association is open, at the latest 5 s later: :mod:`hdsvault.dicom.study_syncs`)
        the FHIR API shows the study as it was before; a crash in between is caught up by
        :func:`sync_pending` when the listener starts. In a worker process every end is
        reported to the listening process, which syncs.
        """
        with self._lock:
            self._open -= 1
            state = self._associations.pop(id(event.assoc), None)
            self._closed.notify_all()
        studies = sorted(state.studies) if state is not None else []
        if self._ended is not None:
            peer = state.peer.ae_title if state is not None else ""
            self._ended(peer, state.address if state is not None else None, studies)
        elif state is not None and studies and self._syncs is not None:
            self._syncs.add(state.caller, studies)

    def _identifier(self, ds: Dataset) -> tuple[str, dict[str, str], list[str]]:
        level = str(ds.get("QueryRetrieveLevel", "")).strip().upper()
        filters: dict[str, str] = {}
        requested: list[str] = []
        for elem in ds:
            tag = f"{int(elem.tag):08X}"
            if tag in _SKIP or elem.tag.group in (0x0000, 0x0002) or elem.tag.is_private:
                continue
            requested.append(tag)
            if elem.VR == "SQ":
                continue
            value = _text(elem).strip()
            if value:
                filters[tag] = value
        return level, filters, requested

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        peer, address = self._peer(event)
        if peer is None:
            yield 0x0124, None  # type: ignore[misc]
            return
        try:
            level, filters, requested = self._identifier(event.identifier)
        except Exception:
            yield 0xC000, None
            return
        patient_level = level == "PATIENT"
        try:
            qlevel = Level.STUDY if patient_level else Level(level)
        except ValueError:
            yield 0xC000, None
            return
        q = queries.Query(qlevel, filters, include=set(requested))
        q.limit = self.store.settings.dicom.max_query_results
        try:
            result = queries.run(self.store, peer.caller(address), q)
        except ImagingError as exc:
            yield (0x0124 if exc.kind is Kind.FORBIDDEN else 0xC000), None
            return
        seen: set[str] = set()
        pid_tag = parse_attribute("PatientID")
        for hit in result.hits:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            if patient_level:
                pid = str(hit.attrs.get(pid_tag, {}).get("Value", [""])[0])
                if pid in seen:
                    continue
                seen.add(pid)
            attrs = {t: hit.attrs.get(t, {"vr": _vr(t)}) for t in requested}
            attrs["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
            ds = dicomfile.to_dataset(attrs)
            ds.QueryRetrieveLevel = level
            yield 0xFF00, ds

    def _uids(self, ds: Dataset) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"study": [], "series": [], "sop": []}
        for elem in ds:
            tag = f"{int(elem.tag):08X}"
            if tag in _UID_TAGS:
                out[_UID_TAGS[tag]] = [u for u in _text(elem).split("\\") if u.strip()]
        return out

    def _locate(self, event: Any, what: str) -> tuple[Peer | None, list[retrieve.InstanceRef], int]:
        peer, address = self._peer(event)
        if peer is None:
            return None, [], 0x0124
        try:
            uids = self._uids(event.identifier)
            refs = retrieve.locate(
                self.store,
                peer.caller(address),
                uids["study"],
                uids["series"],
                uids["sop"],
                what=what,
            )
        except ImagingError as exc:
            if exc.kind is Kind.NOT_FOUND:
                return peer, [], 0x0000
            return peer, [], 0x0124 if exc.kind is Kind.FORBIDDEN else 0xC000
        return peer, refs, 0x0000

    def _datasets(
        self, event: Any, peer: Peer, refs: list[retrieve.InstanceRef]
    ) -> Iterator[tuple[int, Dataset | None]]:
        keys = retrieve.data_keys(self.store, peer.tenant)
        for ref in refs:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            try:
                ds = dicomfile.load(retrieve.read(self.store, peer.tenant, ref, keys))
            except ImagingError:
                yield 0xA702, None  # out of resources: unable to perform sub-operations
                continue
            yield 0xFF00, ds

    def _on_move(self, event: Any) -> Iterator[Any]:
        peer, _address = self._peer(event)
        dest = self.peers.destination(peer, str(event.move_destination)) if peer else None
        if peer is None or dest is None:
            yield None, None
            return
        peer, refs, status = self._locate(event, "c-move")
        if status != 0x0000 or peer is None:
            yield dest.host, dest.port, {"contexts": [build_context(Verification)]}
            yield 0
            return
        pairs = list(dict.fromkeys((r.sop_class_uid, r.transfer_syntax_uid) for r in refs))
        contexts = [build_context(sop, [ts]) for sop, ts in pairs[:_MAX_SUB_CONTEXTS]]
        yield (
            dest.host,
            dest.port,
            {
                "contexts": contexts,
                "evt_handlers": [(evt.EVT_CONN_OPEN, nodelay)],
            },
        )
        yield len(refs)
        yield from self._datasets(event, peer, refs)

    def _on_get(self, event: Any) -> Iterator[Any]:
        peer, refs, status = self._locate(event, "c-get")
        if status != 0x0000 or peer is None:
            yield 0
            return
        yield len(refs)
        yield from self._datasets(event, peer, refs)


def _vr(tag: str) -> str:
    from hdsvault.imaging.attributes import vr_of

    vr = vr_of(tag)
    return "LO" if vr in ("UN", "OB or OW", "US or SS") else vr.split(" ")[0]
