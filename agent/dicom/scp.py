"""The C-STORE SCP (with C-ECHO) the modality sends a copy of every object to.

Handlers are plain functions with their dependencies bound explicitly (pynetdicom's evt_handlers arguments); the
server runs in pynetdicom's threads (`start_server(block=False)`) and `stop()` shuts it down.
"""

from __future__ import annotations

import ipaddress
import logging
import zlib
from dataclasses import dataclass
from io import BytesIO

from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from agent.config import DicomConfig
from agent.dicom.intake import DicomIntake
from agent.dicom.reading import read_data_set
from agent.dicom.statuses import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SUCCESS

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ fields (PS3.8 9.3.4): rejected-permanent, by the DICOM UL service user.
REJECT_PERMANENT, SOURCE_SERVICE_USER = 0x01, 0x01
DIAG_NO_REASON = 0x01
MAX_PDU_BYTES = 1024 * 1024  # larger PDUs cut per-PDU overhead for 18 MB images; peers may still send smaller ones


@dataclass(frozen=True)
class PeerPolicy:
    """Which callers may associate: calling AE titles and peer networks (empty = any)."""

    calling_aets: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def from_config(cls, cfg: DicomConfig) -> "PeerPolicy":
        return cls(frozenset(cfg.allowed_calling_aets),
                   tuple(ipaddress.ip_network(n, strict=False) for n in cfg.allowed_peers))

    def refusal(self, address: str) -> str | None:
        """None when the peer address is allowed, else the reason for the log."""
        if self.networks:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                return f"peer address {address!r} is not an IP address"
            if not any(ip in net for net in self.networks):
                return f"peer {address} is not in dicom.allowed_peers"
        return None


def handle_requested(event, policy: PeerPolicy, intake: DicomIntake) -> None:
    """EVT_REQUESTED: reject peers outside dicom.allowed_peers before any data is exchanged.

    The calling AE title allow-list is pynetdicom's own `require_calling_aet` check (A-ASSOCIATE-RJ with
    "calling AE title not recognised"); handle_rejected logs those."""
    requestor = event.assoc.requestor
    reason = policy.refusal(requestor.address)
    if reason is not None:
        intake.counters.add(associations_rejected=1)
        # At EVT_REQUESTED the calling AE title is only in the request primitive, not yet in requestor.ae_title.
        log.warning("rejected association from %s@%s: %s", requestor.primitive.calling_ae_title,
                    requestor.address, reason)
        event.assoc.acse.send_reject(REJECT_PERMANENT, SOURCE_SERVICE_USER, DIAG_NO_REASON)


def handle_rejected(event, intake: DicomIntake) -> None:
    """EVT_REJECTED: log and count associations pynetdicom rejected (unknown calling or called AE title)."""
    requestor = event.assoc.requestor
    if event.assoc.acceptor.primitive is not None and event.assoc.acceptor.primitive.diagnostic == DIAG_NO_REASON:
        return  # our own peer-address rejection, already logged
    intake.counters.add(associations_rejected=1)
    log.warning("rejected association from %s@%s to AE title %s: not in dicom.allowed_calling_aets, or the "
                "modality calls another AE title", requestor.ae_title, requestor.address,
                requestor.primitive.called_ae_title if requestor.primitive else "?")


def handle_echo(event) -> int:
    """EVT_C_ECHO: the modality's connectivity test."""
    return SUCCESS


def read_headers(stream: BytesIO, transfer_syntax: UID) -> Dataset:
    """The received data set up to its pixel data, as extraction needs it (parsing stays lazy, as pydicom's).

    pynetdicom's `event.dataset` would read everything, copying the pixel data (18 MB for a large DX image) only for
    extraction to ignore it; the received bytes themselves stay available for quarantine and retention."""
    if transfer_syntax.is_deflated:
        stream = BytesIO(zlib.decompress(stream.getvalue(), -zlib.MAX_WBITS))
    stream.seek(0)
    # A dose report's Content Sequence stays raw bytes for extraction's single-pass reader (reading.py).
    return read_data_set(stream.read(), transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian)


def handle_store(event, intake: DicomIntake) -> int:
    """EVT_C_STORE: answer Success only once the object's events are durable; never raise."""
    requestor = event.assoc.requestor
    origin = f"{requestor.ae_title}@{requestor.address}"
    intake.counters.seen(requestor.ae_title)
    raw = lambda: event.encoded_dataset(include_meta=True)  # noqa: E731 - only read for quarantine/retention
    try:
        ds = read_headers(event.request.DataSet, event.context.transfer_syntax)
        ds.file_meta = event.file_meta
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
        self._server = None

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.cfg.ae_title)
        ae.require_called_aet = True  # a modality configured for another node's AE title is a wiring mistake
        ae.require_calling_aet = sorted(self.policy.calling_aets)
        ae.maximum_pdu_size = MAX_PDU_BYTES
        ae.maximum_associations = 16
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        return ae

    def start(self) -> None:
        handlers = [(evt.EVT_REQUESTED, handle_requested, [self.policy, self.intake]),
                    (evt.EVT_REJECTED, handle_rejected, [self.intake]),
                    (evt.EVT_C_ECHO, handle_echo),
                    (evt.EVT_C_STORE, handle_store, [self.intake])]
        self._server = self._make_ae().start_server((self.cfg.bind, self.cfg.port), block=False,
                                                    evt_handlers=handlers)
        log.info("DICOM listener %s on %s:%d (calling AE titles: %s)", self.cfg.ae_title, self.cfg.bind,
                 self.cfg.port, ", ".join(sorted(self.policy.calling_aets)) or "any")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def alive(self) -> bool:
        """True while the listening socket is open (pynetdicom keeps its accept thread for the socket's life)."""
        return self._server is not None and self._server.socket.fileno() != -1


__all__ = ["StorageSCP", "PeerPolicy", "read_headers", "handle_store", "handle_echo", "handle_requested",
           "CANNOT_UNDERSTAND"]
