"""The reader service of one instrument: a thread that owns its port, runs the driver and stores every reading.

A reading is "taken" only once it is in the outbox: the thread stores it (Sink.emit returns after the commit) before
it pulls the next one from the driver, and a request/response driver sends its next command only when pulled.
When the outbox refuses (full, or a write failed), the reading stays in memory and storing it is retried with a
jittered backoff until it succeeds or the agent stops; meanwhile the instrument is not polled, so a meter keeps its
data (a pushing instrument's frames wait in the OS buffer until it overflows, as on any stalled serial line).
When the port fails (unplug: EOF / SerialException / EIO), the thread closes it, backs off (jittered, capped at
reconnect_max_s), resolves the selector again (a by-id link may point to a new ttyUSB, a usb:VID:PID selector is
looked up anew) and resumes. Outages and refusals are logged once each, not once per retry.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from contextlib import suppress

import serial
from pydantic import ValidationError
from tenacity import RetryError, Retrying, retry_if_exception_type, wait_random_exponential

from agent.instruments.config import InstrumentConfig
from agent.logs import log_repeated
from agent.instruments.mapping import escape_raw, qc_reading
from agent.instruments.status import EquipmentTracker
from agent.outbox import OutboxError
from agent.sink import Sink
from agent.supervisor import ThreadService
from drivers.ports import AmbiguousPort, PortNotFound, find_port
from drivers.reading import Reading
from drivers.registry import DRIVERS

log = logging.getLogger(__name__)

# serial.SerialException is an OSError; a hung-up pty or adapter fails ioctls with a bare OSError (EIO).
TRANSPORT_ERRORS = (OSError, PortNotFound, AmbiguousPort)
RECONNECT_MIN_S = 0.25
STORE_RETRY_MIN_S = 0.05
STORE_RETRY_MAX_S = 5.0


class InstrumentReader(ThreadService):
    """Service (start/stop/alive) reading one configured instrument in its own thread."""

    def __init__(self, inst: InstrumentConfig, sink: Sink) -> None:
        """Build the driver (no I/O) and its equipment tracker."""
        super().__init__()
        self.inst, self.sink = inst, sink
        self.thread_name = f"instrument-{inst.id}"
        # Stores one reading durably; QC sessions wrap it to record the reading in an open session first (and set
        # its session_ref), agent/qc/sessions.py. It raises OutboxError (or a subclass) when it cannot store.
        self.emit = sink.emit
        self.settings = inst.driver_settings()
        self.driver = DRIVERS[inst.driver](self.settings)
        self.tracker = EquipmentTracker(inst.id, self.driver, inst.port)
        self._outage_since: float | None = None
        self._refused_since: float | None = None

    # ---- the thread --------------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._retrying(self._port_failed, RECONNECT_MIN_S, self.inst.reconnect_max_s,
                               TRANSPORT_ERRORS)(self._session)
        except RetryError:
            pass  # stopped while backing off
        except Exception as exc:  # noqa: BLE001 - a driver bug: report it, the supervisor restarts the service
            log.exception("instrument %s: reader failed", self.inst.id)
            self.tracker.disconnected(f"reader failed: {exc}")
            return
        self.tracker.disconnected("agent stopped")

    def _retrying(self, before_sleep, min_s: float, max_s: float, errors, reraise: bool = False) -> Retrying:
        """Jittered exponential backoff that ends when the service stops (RetryError, or the error if reraise)."""
        return Retrying(wait=wait_random_exponential(multiplier=min_s, max=max_s),
                        retry=retry_if_exception_type(errors), stop=lambda _state: self._stop.is_set(),
                        sleep=self._stop.wait, before_sleep=before_sleep, reraise=reraise)

    def _session(self) -> None:
        """Open the port and read until stopped; a transport error before any good frame is a failed attempt."""
        device = find_port(self.inst.port)
        port = serial.serial_for_url(device, exclusive=True, **self.settings.serial_kwargs())
        try:
            self._connected(device if "://" in device else os.path.realpath(device))  # by-id link -> /dev/ttyUSBn
            frames_before = self.driver.counters.frames_ok
            try:
                for reading in self.driver.readings(port, self._stop):
                    self._store(reading)
            except TRANSPORT_ERRORS as exc:
                if self.driver.counters.frames_ok == frames_before:
                    raise  # it never worked: back off further
                self._lost(device, exc)  # a working link broke: reconnect at once, then back off afresh
        finally:
            with suppress(OSError):
                port.close()

    # ---- port events (logged once per outage) -------------------------------------------------------------------
    def _connected(self, device: str) -> None:
        self.tracker.connected(device)
        if self._outage_since is not None:
            log.warning("instrument %s: port %s open again after %.1f s", self.inst.id, device,
                        time.monotonic() - self._outage_since)
            self._outage_since = None
        else:
            log.info("instrument %s (%s) reading %s", self.inst.id, self.inst.driver, device)

    def _lost(self, device: str, exc: BaseException) -> None:
        self.tracker.disconnected(f"port {device} lost: {exc}")
        self._outage_since = time.monotonic()
        log.warning("instrument %s: lost port %s (%s); reconnecting with backoff (logged once per outage)",
                    self.inst.id, device, exc)

    def _port_failed(self, retry_state) -> None:
        exc = retry_state.outcome.exception()
        error = str(exc)
        if getattr(exc, "errno", None) == errno.EPERM:
            # File permissions give EACCES; EPERM on open is the unit's device filter (DeviceAllow=char-ttyUSB is
            # resolved at start, and this adapter's driver was loaded after it).
            error += ("; the service's device policy refused it: its USB serial driver was loaded after the agent "
                      "started (restart the agent; `xray-agent doctor` shows how to avoid it)")
        self.tracker.disconnected(error)
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("instrument %s: %s; retrying with backoff (logged once per outage)", self.inst.id, error)
        else:
            log.debug("instrument %s: attempt %d: %s", self.inst.id, retry_state.attempt_number, error)

    # ---- storing ----------------------------------------------------------------------------------------------
    def _store(self, reading: Reading) -> None:
        """Store one reading durably, retrying while the outbox refuses; only a stop can leave it unstored."""
        try:
            payload = qc_reading(reading, driver=self.inst.driver, site=self.sink.site, room=self.sink.room)
        except ValidationError as exc:  # e.g. a profile field that is not a finite number: not publishable
            # Per frame on a meter that keeps sending such values: one line, then a count each minute.
            log_repeated(log, logging.ERROR, ("invalid reading", self.inst.id),
                         "instrument %s: reading dropped, not a valid payload (%s): raw %s", self.inst.id,
                         exc.errors()[0]["msg"], escape_raw(reading.raw[:200]))
            return
        retrying = self._retrying(self._store_refused, STORE_RETRY_MIN_S, STORE_RETRY_MAX_S, OutboxError, reraise=True)
        try:
            retrying(self.emit, payload)
        except OutboxError as exc:
            # Stopping with the outbox still refusing: the journal is the last place this reading can go.
            log.error("instrument %s: stopping with a reading not stored (%s): %s flags %s raw %s", self.inst.id, exc,
                      payload.quantities, payload.flags, payload.raw_frame)
            return
        if self._refused_since is not None:
            log.warning("instrument %s: outbox takes readings again after %.1f s", self.inst.id,
                        time.monotonic() - self._refused_since)
            self._refused_since = None
            self.tracker.storage_refused(None)
        self.tracker.reading_stored(reading)

    def _store_refused(self, retry_state) -> None:
        error = str(retry_state.outcome.exception())
        self.tracker.storage_refused(error)
        if self._refused_since is None:
            self._refused_since = time.monotonic()
            log.error("instrument %s: outbox refused a reading (%s); holding it and retrying, the meter is not "
                      "polled meanwhile (logged once)", self.inst.id, error)
