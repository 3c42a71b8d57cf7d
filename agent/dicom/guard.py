"""Who may hold the listener's connections, and for how long: slow or hostile peers cannot lock the modality out.

pynetdicom reads each PDU with blocking socket reads whose timeout restarts with every byte, so a peer sending one
byte every 20 s holds its connection (and an association slot) indefinitely; its own A-ASSOCIATE timeout cannot end
such a connection either (Association.kill() waits for the reading thread, which is blocked in recv()). The guard
keeps its own books from pynetdicom's events and cuts connections from outside by shutting their socket down, which
makes the blocked read return. Its rules:

- peer address: outside `dicom.allowed_peers` (when set) -> closed at connect, before any PDU is read;
- per peer: at most `dicom.max_associations_per_peer` connections from one address at once;
- slots: at most `dicom.max_associations` associations (A-ASSOCIATE-RQ received); further requests get
  A-ASSOCIATE-RJ rejected-transient / local-limit-exceeded (PS3.8 9.3.4). Connections that have not yet sent a
  complete A-ASSOCIATE-RQ count apart, at most `dicom.max_associations` of them, and one of those places is kept for
  a known peer (an address that has completed an association before, or one listed by itself in
  `dicom.allowed_peers`: the modality), so unknown peers cannot take them all. Likewise the last association slot
  (when there are two or more): peers that know an accepted calling AE title and idle on their associations
  cannot take it when the modality is listed by itself in `dicom.allowed_peers` (it is kept for such addresses).
  Without that listing the agent cannot tell the modality from a peer that uses an accepted AE title, and no slot
  is kept: list the modality's address;
- time: a complete A-ASSOCIATE-RQ within `dicom.associate_timeout_s` of connecting; on an association, the next
  complete PDU within `dicom.pdu_timeout_s` (except while the agent itself is working on a request);
- size: the P-DATA of one object at most `dicom.max_object_bytes` (plus PDU overhead) before the connection is cut,
  so a sender cannot fill the disk the objects are received to; a data set with any other message (received into
  memory by pynetdicom) at most IN_MEMORY_DATA_SET_MAX, cut at once.

Every refusal and cut is logged with its real reason (rate-limited per reason and peer address).
"""

from __future__ import annotations

import io
import ipaddress
import logging
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from agent.logs import log_repeated

log = logging.getLogger(__name__)

REAP_EVERY_S = 0.5
KNOWN_PEERS_MAX = 256  # addresses remembered as having completed an association (the room has one or two)
STOP_GRACE_S = 5.0  # at stop, how long a request being handled may take to be answered before its connection closes
PDU_OVERHEAD = 1.01
# Largest data set received into memory (with any message but C-STORE): the listener's services (Verification, and
# Storage, whose data sets go to disk) need none, so this is generous.
IN_MEMORY_DATA_SET_MAX = 4 * 2**20  # P-DATA headers and PDV item headers around the data set bytes, generously


@dataclass(frozen=True)
class Limits:
    """The guard's bounds (from DicomConfig)."""

    max_associations: int = 16
    max_associations_per_peer: int = 4
    associate_timeout_s: float = 10.0
    pdu_timeout_s: float = 60.0
    max_object_bytes: int = 1024 * 1024 * 1024
    networks: tuple = ()  # allowed peer networks; empty = any address
    hosts: frozenset[str] = frozenset()  # single addresses in dicom.allowed_peers: known peers from the start


@dataclass
class Connection:
    address: str
    opened: float
    last_pdu: float
    sock: socket.socket | None
    requested: bool = False
    busy: int = 0  # requests the agent is working on (the peer waits for us, not we for it)
    object_bytes: int = 0  # P-DATA bytes since the last request was handled
    cut: str | None = None


@dataclass
class ConnectionGuard:
    limits: Limits
    clock: object = time.monotonic
    _conns: dict[int, Connection] = field(default_factory=dict)
    _known: dict[str, None] = field(default_factory=dict)  # insertion-ordered set of proven peer addresses
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)  # set when a connection opens
    _thread: threading.Thread | None = None
    refused: int = 0  # connections closed at connect or cut later, for the counters

    # ---- pynetdicom events (each from its own thread) ---------------------------------------------------------
    def opened(self, assoc, address: str) -> str | None:
        """EVT_CONN_OPEN: register, or return why the connection is refused (the caller closes it)."""
        address = peer_address(address)
        now = self.clock()
        with self._lock:
            reason = self._refusal(address)
            if reason is None:
                self._conns[id(assoc)] = Connection(address, now, now, _raw_socket(assoc))
                self._wake.set()
                return None
        self.refused += 1
        return reason

    def _refusal(self, address: str) -> str | None:
        lim = self.limits
        if lim.networks:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                return f"peer address {address!r} is not an IP address"
            if not any(ip in net for net in lim.networks):
                return "not in dicom.allowed_peers"
        same_peer = sum(1 for c in self._conns.values() if c.address == address)
        if same_peer >= lim.max_associations_per_peer:
            return (f"{same_peer} connections from this address already open "
                    f"(dicom.max_associations_per_peer = {lim.max_associations_per_peer})")
        waiting = sum(1 for c in self._conns.values() if not c.requested)
        known = address in self._known or address in lim.hosts
        # One place kept for a peer that has associated before, or is listed by address; not with a single place,
        # which would then be kept for a known peer nobody could become.
        spare = 0 if known or lim.max_associations == 1 else 1
        if waiting >= lim.max_associations - spare:
            return (f"{waiting} connections have not yet completed an association request "
                    f"(dicom.max_associations = {lim.max_associations}"
                    f"{', one place kept for known peers' if spare else ''})")
        return None

    def requested(self, assoc) -> str | None:
        """EVT_REQUESTED: the A-ASSOCIATE-RQ arrived; returns why it must be rejected (all slots in use), or None."""
        with self._lock:
            conn = self._conns.get(id(assoc))
            if conn is None:
                return None
            lim = self.limits
            holding = [c.address for c in self._conns.values() if c.requested]
            if len(holding) >= lim.max_associations:
                return f"all {lim.max_associations} association slots in use (dicom.max_associations)"
            # The last slot is the modality's when it is listed by address: peers idling on accepted associations
            # (the calling AE title is no secret on the room network) must not hold them all.
            if lim.hosts and conn.address not in lim.hosts and len(holding) == lim.max_associations - 1 > 0:
                return (f"{len(holding)} of {lim.max_associations} association slots in use "
                        f"(dicom.max_associations), the last one kept for the peers listed in dicom.allowed_peers")
            conn.requested = True
            conn.last_pdu = self.clock()
            return None

    def accepted(self, assoc) -> None:
        """EVT_ACCEPTED: this peer address speaks DICOM with an accepted calling AE title: it is known from now on."""
        with self._lock:
            conn = self._conns.get(id(assoc))
            if conn is None:
                return
            self._known.pop(conn.address, None)
            self._known[conn.address] = None
            while len(self._known) > KNOWN_PEERS_MAX:
                self._known.pop(next(iter(self._known)))

    def pdu_received(self, assoc, pdu) -> None:
        """EVT_PDU_RECV: progress; P-DATA counts towards the object size bound."""
        conn = self._conns.get(id(assoc))
        if conn is None:
            return
        conn.last_pdu = self.clock()
        pdvs = getattr(pdu, "presentation_data_value_items", None)
        if pdvs:
            # Command fragments are tiny; counting them with the data set keeps this cheap and errs on the safe side.
            conn.object_bytes += sum(len(item.presentation_data_value) for item in pdvs)
            held = _in_memory_data_set_bytes(assoc)
            if held > IN_MEMORY_DATA_SET_MAX and conn.cut is None:
                # Cut at once, from this (the reading) thread: the reaper's half second is hundreds of MiB here.
                conn.cut = (f"more than {IN_MEMORY_DATA_SET_MAX // 2**20} MiB of a command set, or of a data set "
                            "with a message other than C-STORE (only C-STORE data sets are received to disk)")
                self.refused += 1
                log_repeated(log, logging.WARNING, ("cut", "in-memory", conn.address),
                             "DICOM connection from %s closed: %s", conn.address, conn.cut)
                _shutdown(conn.sock)

    def closed(self, assoc) -> None:
        """EVT_CONN_CLOSE."""
        with self._lock:
            self._conns.pop(id(assoc), None)

    @contextmanager
    def working(self, assoc):
        """While the agent handles a request the peer waits for us: no PDU deadline. The object's bytes reset."""
        conn = self._conns.get(id(assoc))
        if conn is not None:
            conn.busy += 1
        try:
            yield
        finally:
            if conn is not None:
                conn.busy -= 1
                conn.object_bytes = 0
                conn.last_pdu = self.clock()

    # ---- the reaper ----------------------------------------------------------------------------------------------
    def overdue(self) -> list[tuple[Connection, str]]:
        """Connections past a bound, with the reason; marks them cut."""
        now, lim = self.clock(), self.limits
        found = []
        with self._lock:
            for conn in self._conns.values():
                if conn.cut is not None:
                    continue
                if not conn.requested and now - conn.opened > lim.associate_timeout_s:
                    conn.cut = (f"no complete association request within {lim.associate_timeout_s:g} s "
                                "(dicom.associate_timeout_s)")
                elif conn.requested and not conn.busy and now - conn.last_pdu > lim.pdu_timeout_s:
                    conn.cut = f"no complete PDU within {lim.pdu_timeout_s:g} s (dicom.pdu_timeout_s)"
                elif conn.object_bytes > lim.max_object_bytes * PDU_OVERHEAD:
                    conn.cut = (f"object larger than dicom.max_object_bytes ({lim.max_object_bytes} bytes); "
                                "receiving stopped")
                if conn.cut is not None:
                    found.append((conn, conn.cut))
        return found

    def reap(self) -> int:
        """Cut every overdue connection: shutting the socket down wakes the thread blocked reading it."""
        cut = self.overdue()
        for conn, reason in cut:
            self.refused += 1
            log_repeated(log, logging.WARNING, ("cut", reason.split(" ", 1)[0], conn.address),
                         "DICOM connection from %s closed: %s", conn.address, reason)
            _shutdown(conn.sock)
        return len(cut)

    def cut_all(self, grace_s: float = STOP_GRACE_S) -> int:
        """At agent stop: close every connection. pynetdicom's reading (DUL) threads are not daemon threads, so one
        blocked on a silent or stalled peer kept the stopped agent's process alive until dicom.pdu_timeout_s. A
        connection whose request the agent is handling gets up to `grace_s` to answer it first."""
        deadline = time.monotonic() + grace_s  # wall time: the agent really waits
        while True:
            with self._lock:
                busy = sum(1 for c in self._conns.values() if c.busy and c.cut is None)
            if not busy or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        with self._lock:
            conns = [c for c in self._conns.values() if c.cut is None]
            for conn in conns:
                conn.cut = "the agent is stopping"
        for conn in conns:
            _shutdown(conn.sock)
        return len(conns)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dicom-guard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None

    def _run(self) -> None:
        """Every REAP_EVERY_S while connections are open; asleep (no wake-ups at all) while none are."""
        while not self._stop.is_set():
            if not self.open_connections():
                self._wake.wait()
                self._wake.clear()
                continue
            if self._stop.wait(REAP_EVERY_S):
                return
            try:
                self.reap()
            except Exception:  # noqa: BLE001 - the guard must keep guarding
                log.exception("DICOM connection guard failed a round")

    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)


def peer_address(address: str) -> str:
    """An IPv4 peer of a dual-stack listener (dicom.bind = "::") arrives as ::ffff:a.b.c.d: it is a.b.c.d, for the
    allow-list, the per-peer count and the known peers alike."""
    try:
        mapped = ipaddress.ip_address(address).ipv4_mapped if ":" in address else None
    except ValueError:
        return address
    return str(mapped) if mapped is not None else address


def _in_memory_data_set_bytes(assoc) -> int:
    """Bytes pynetdicom is receiving into memory on this association: the command set, and the data set of every
    message but a C-STORE
    (received to a file, STORE_RECV_CHUNKED_DATASET) keeps its data set in a BytesIO until complete, so a C-ECHO
    whose command says a data set follows could make it hold gigabytes (dimse_messages.DIMSEMessage.decode_msg)."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    if message is None:
        return 0
    # The command set too: its fragments are buffered until the last one, however many come.
    buffers = [getattr(message, "encoded_command_set", None)]
    if getattr(message, "_data_set_file", None) is None:
        buffers.append(getattr(message, "data_set", None))
    return sum(b.tell() for b in buffers if isinstance(b, io.BytesIO))


def _raw_socket(assoc) -> socket.socket | None:
    sock = getattr(getattr(assoc, "dul", None), "socket", None)
    return getattr(sock, "socket", None)


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the peer or pynetdicom


def close_now(assoc) -> None:
    """Close a connection refused at EVT_CONN_OPEN: its reading thread then sees the transport closed."""
    _shutdown(_raw_socket(assoc))
