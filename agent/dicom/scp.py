"""The C-STORE SCP (with C-ECHO) the modality sends a copy of every object to.

Handlers are plain functions with their dependencies bound explicitly (pynetdicom's evt_handlers arguments); the
server runs in pynetdicom's threads (`start_server(block=False)`) and `stop()` shuts it down. Objects are received to
a temporary file (pynetdicom's STORE_RECV_CHUNKED_DATASET: `event.dataset_path`, a Part 10 file pynetdicom deletes
after the handler returns) and only their headers are read (agent/dicom/receive.py); the guard
(agent/dicom/guard.py) bounds who holds connections, for how long and how much they send.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification

from agent.config import DicomConfig
from agent.dicom.guard import ConnectionGuard, Limits, close_now, peer_address
from agent.dicom.intake import DicomIntake
from agent.dicom.reading import IncompleteObject, read_received, read_received_path
from agent.dicom.receive import PIXEL_DATA_FIRST_TAG, ObjectTooLarge
from agent.dicom.statuses import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SUCCESS
from agent.logs import log_repeated

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ fields (PS3.8 9.3.4): result 1 rejected-permanent / 2 rejected-transient; source 1 DICOM UL
# service-user, 3 DICOM UL service-provider (presentation related function).
REJECT_PERMANENT, REJECT_TRANSIENT = 0x01, 0x02
SOURCE_SERVICE_USER, SOURCE_PROVIDER_PRESENTATION = 0x01, 0x03
DIAG_NO_REASON = 0x01
DIAG_LOCAL_LIMIT_EXCEEDED = 0x02  # with source 3
# Service-user diagnostics pynetdicom sends for its own AE title checks.
DIAG_CALLING_AET, DIAG_CALLED_AET = 0x03, 0x07
MAX_PDU_BYTES = 1024 * 1024  # larger PDUs cut per-PDU overhead for 18 MB images; peers may still send smaller ones
DIMSE_TIMEOUT_S = 30.0  # pynetdicom's default, stated: the wait for a DIMSE message once one has begun


@dataclass(frozen=True)
class PeerPolicy:
    """Which callers may associate: calling AE titles and peer networks (empty = any)."""

    calling_aets: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def from_config(cls, cfg: DicomConfig) -> "PeerPolicy":
        return cls(frozenset(cfg.allowed_calling_aets),
                   tuple(ipaddress.ip_network(n, strict=False) for n in cfg.allowed_peers))


def limits_from_config(cfg: DicomConfig) -> Limits:
    networks = PeerPolicy.from_config(cfg).networks
    hosts = frozenset(str(n.network_address) for n in networks if n.num_addresses == 1)
    return Limits(max_associations=cfg.max_associations, max_associations_per_peer=cfg.max_associations_per_peer,
                  associate_timeout_s=cfg.associate_timeout_s, pdu_timeout_s=cfg.pdu_timeout_s,
                  max_object_bytes=cfg.max_object_bytes, networks=networks, hosts=hosts)


def handle_conn_open(event, guard: ConnectionGuard, intake: DicomIntake) -> None:
    """EVT_CONN_OPEN: refuse a connection the guard's rules do not allow, before any PDU is read from it."""
    address = peer_address(event.address[0])
    reason = guard.opened(event.assoc, address)
    if reason is not None:
        intake.counters.add(associations_rejected=1)
        log_repeated(log, logging.WARNING, ("refused", reason.split(" ", 1)[0], address),
                     "refused DICOM connection from %s: %s", address, reason)
        close_now(event.assoc)


def handle_conn_close(event, guard: ConnectionGuard) -> None:
    guard.closed(event.assoc)
    discard_partial_object(event.assoc)


def discard_partial_object(assoc) -> None:
    """Delete the receive file of an object whose transfer never completed.

    pynetdicom (STORE_RECV_CHUNKED_DATASET) deletes its temporary receive file only after the C-STORE handler ran:
    an object whose sender aborted, whose connection dropped or which the guard cut mid-transfer stayed in $TMPDIR,
    one file per attempt, until the disk was full. At connection close the DIMSE message still being decoded is
    such an object: pynetdicom detaches a complete message before its handler runs (dimse.receive_primitive), so
    this never touches an object being handled."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return
    try:
        partial.close()
    except Exception:  # noqa: BLE001 - a half-written file may fail to flush; it is deleted anyway
        pass
    try:
        os.unlink(partial.name)
    except OSError:
        pass
    message._data_set_file = message._data_set_path = None


def handle_pdu_recv(event, guard: ConnectionGuard) -> None:
    guard.pdu_received(event.assoc, event.pdu)


def handle_accepted(event, guard: ConnectionGuard) -> None:
    guard.accepted(event.assoc)


def handle_requested(event, guard: ConnectionGuard, intake: DicomIntake) -> None:
    """EVT_REQUESTED: reject with local-limit-exceeded when every association slot is taken (PS3.8 9.3.4).

    The AE title allow-lists are pynetdicom's own checks (require_calling_aet / require_called_aet), logged by
    handle_rejected with the reason pynetdicom gave."""
    reason = guard.requested(event.assoc)
    if reason is not None:
        requestor = event.assoc.requestor
        intake.counters.add(associations_rejected=1)
        # At EVT_REQUESTED the calling AE title is only in the request primitive, not yet in requestor.ae_title.
        log_repeated(log, logging.WARNING, ("slots", requestor.address),
                     "rejected association from %s@%s: %s", requestor.primitive.calling_ae_title,
                     requestor.address, reason)
        event.assoc.acse.send_reject(REJECT_TRANSIENT, SOURCE_PROVIDER_PRESENTATION, DIAG_LOCAL_LIMIT_EXCEEDED)


def rejection_reason(result: int | None, source: int | None, diagnostic: int | None, calling: str, called: str,
                     our_aet: str) -> str:
    """The real reason of an A-ASSOCIATE-RJ, for the log."""
    if source == SOURCE_SERVICE_USER and diagnostic == DIAG_CALLING_AET:
        return f"calling AE title {calling!r} is not in dicom.allowed_calling_aets"
    if source == SOURCE_SERVICE_USER and diagnostic == DIAG_CALLED_AET:
        return f"the sender calls AE title {called!r}; ours is {our_aet!r} (dicom.ae_title)"
    if source == SOURCE_PROVIDER_PRESENTATION and diagnostic == DIAG_LOCAL_LIMIT_EXCEEDED:
        return "all association slots in use (dicom.max_associations)"
    return f"result {result}, source {source}, reason {diagnostic} (PS3.8 table 9-21)"


def handle_rejected(event, intake: DicomIntake, our_aet: str) -> None:
    """EVT_REJECTED: log and count associations pynetdicom rejected, with the reason it rejected them for."""
    requestor, answer = event.assoc.requestor, event.assoc.acceptor.primitive
    if answer is not None and (answer.result_source, answer.diagnostic) == (SOURCE_PROVIDER_PRESENTATION,
                                                                            DIAG_LOCAL_LIMIT_EXCEEDED):
        return  # our own slot rejection, already logged
    intake.counters.add(associations_rejected=1)
    called = requestor.primitive.called_ae_title if requestor.primitive else "?"
    reason = rejection_reason(getattr(answer, "result", None), getattr(answer, "result_source", None),
                              getattr(answer, "diagnostic", None), requestor.ae_title, called, our_aet)
    log_repeated(log, logging.WARNING, ("rejected", requestor.address, reason),
                 "rejected association from %s@%s: %s", requestor.ae_title, requestor.address, reason)


def handle_echo(event) -> int:
    """EVT_C_ECHO: the modality's connectivity test."""
    return SUCCESS


def handle_store(event, intake: DicomIntake, guard: ConnectionGuard | None = None,
                 max_object_bytes: int = 1 << 62) -> int:
    """EVT_C_STORE: answer Success only once the object's events are durable; never raise.

    The received object is the Part 10 file at `event.dataset_path` (chunked receive); without chunked receive
    (pynetdicom's default) the data set bytes in `event.request.DataSet`."""
    requestor = event.assoc.requestor
    origin = f"{requestor.ae_title}@{requestor.address}"
    intake.counters.seen(requestor.ae_title)
    if guard is None:
        return _store(event, intake, origin, max_object_bytes)
    with guard.working(event.assoc):
        return _store(event, intake, origin, max_object_bytes)


def received_path(event) -> Path | None:
    """The received object as a Part 10 file (preamble, file meta, data set as received), when chunked."""
    try:
        return Path(event.dataset_path)
    except AttributeError:
        return None


def _store(event, intake: DicomIntake, origin: str, max_object_bytes: int) -> int:
    path = received_path(event)
    if path is not None:
        raw = lambda: path  # noqa: E731 - quarantine/retention copy the file without reading it into memory
    else:
        raw = lambda: event.encoded_dataset(include_meta=True)  # noqa: E731
    try:
        sop_class = event.request.AffectedSOPClassUID
        if path is not None:
            ds = read_received_path(path, max_object_bytes, sop_class)
        else:
            ds = read_received(event.request.DataSet, event.context.transfer_syntax, sop_class, max_object_bytes)
            ds.file_meta = event.file_meta
    except IncompleteObject as exc:  # cut part-way: nothing from it is interpreted, a complete re-send is accepted
        return intake.handle_incomplete(raw, exc.reason, origin)
    except ObjectTooLarge as exc:
        # Out of Resources (PS3.4 Table B.2-1): the sender keeps the object; raising the bound admits it on retry.
        intake.counters.add(received=1, refused=1)
        log_repeated(log, logging.WARNING, ("too large", origin), "object from %s refused with Out of Resources: %s",
                     origin, exc)
        return OUT_OF_RESOURCES
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed bytes
        return intake.handle_undecodable(raw, f"cannot decode data set: {type(exc).__name__}", origin)
    try:
        return intake.handle(ds, raw, origin)
    except Exception:  # noqa: BLE001 - a bug here must not acknowledge: the sender keeps the object and retries
        log.exception("unexpected error storing object from %s; answered Out of Resources", origin)
        return OUT_OF_RESOURCES


class StorageSCP:
    """The listener as a supervised service."""

    def __init__(self, cfg: DicomConfig, intake: DicomIntake):
        self.cfg = cfg
        self.intake = intake
        self.policy = PeerPolicy.from_config(cfg)
        self.guard: ConnectionGuard | None = None
        self._server = None

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.cfg.ae_title)
        ae.require_called_aet = True  # a modality configured for another node's AE title is a wiring mistake
        ae.require_calling_aet = sorted(self.policy.calling_aets)
        ae.maximum_pdu_size = MAX_PDU_BYTES
        # pynetdicom counts every connection, requested or not, against its own limit; the guard keeps the real
        # books (associations and waiting connections apart), so pynetdicom's is the sum of both.
        ae.maximum_associations = 2 * self.cfg.max_associations
        ae.acse_timeout = self.cfg.associate_timeout_s
        ae.dimse_timeout = DIMSE_TIMEOUT_S
        ae.network_timeout = self.cfg.pdu_timeout_s  # idle associations end after this, as in the guard
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        return ae

    def start(self) -> None:
        # Objects go to a temporary file as they arrive (memory does not grow with object size); a process-wide
        # pynetdicom switch, and this listener is the process's only SCP.
        _config.STORE_RECV_CHUNKED_DATASET = True
        self.guard = ConnectionGuard(limits_from_config(self.cfg))
        handlers = [(evt.EVT_CONN_OPEN, handle_conn_open, [self.guard, self.intake]),
                    (evt.EVT_CONN_CLOSE, handle_conn_close, [self.guard]),
                    (evt.EVT_PDU_RECV, handle_pdu_recv, [self.guard]),
                    (evt.EVT_REQUESTED, handle_requested, [self.guard, self.intake]),
                    (evt.EVT_ACCEPTED, handle_accepted, [self.guard]),
                    (evt.EVT_REJECTED, handle_rejected, [self.intake, self.cfg.ae_title]),
                    (evt.EVT_C_ECHO, handle_echo),
                    (evt.EVT_C_STORE, handle_store, [self.intake, self.guard, self.cfg.max_object_bytes])]
        self._server = self._make_ae().start_server((self.cfg.bind, self.cfg.port), block=False,
                                                    evt_handlers=handlers)
        self.guard.start()
        log.info("DICOM listener %s on %s:%d (calling AE titles: %s)", self.cfg.ae_title, self.cfg.bind,
                 self.cfg.port, ", ".join(sorted(self.policy.calling_aets)) or "any")

    def stop(self) -> None:
        if self.guard is not None:
            self.guard.cut_all()  # else a silent peer's connection keeps the process alive after stop
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self.guard is not None:
            self.guard.stop()

    def alive(self) -> bool:
        """True while the listening socket is open (pynetdicom keeps its accept thread for the socket's life)."""
        return self._server is not None and self._server.socket.fileno() != -1


read_headers = read_received  # the name the fuzz tests import: the checked read the handler uses

__all__ = ["StorageSCP", "PeerPolicy", "read_headers", "handle_store", "handle_echo", "handle_requested",
           "CANNOT_UNDERSTAND", "PIXEL_DATA_FIRST_TAG"]
