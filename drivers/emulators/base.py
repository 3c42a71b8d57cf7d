"""Emulator base: an instrument speaking its bytes on a pseudo-terminal, run in a thread.

The emulator owns the pty master; a driver opens the slave (or the `link` symlink to it) with pyserial, as it would
open /dev/serial/by-id/... . Faults are injected here, the same way for every instrument: garbage bursts, error
replies (instrument-specific, see error_frame), replies written in small pieces with pauses, slow replies, and unplug:
the pty is closed and the link removed, then a new pty appears under the same link, as a by-id link does after a
USB adapter is replugged. Like a real device, output nobody can take (pty buffer full) is dropped.
All fd operations happen under one lock, and fds are closed only by the emulator thread (or stop()).
"""

from __future__ import annotations

import os
import pty
import random
import select
import threading
import time
import tty
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass
class Faults:
    """Fault injection settings (0 / False = off)."""

    garbage_every_s: float = 0.0
    garbage_bytes: int = 32
    error_rate: float = 0.0  # probability that a reply / pushed frame is replaced by error_frame()
    split_writes: bool = False  # write each reply in 1..4-byte pieces with split_delay_s pauses
    split_delay_s: float = 0.005
    reply_delay_s: float = 0.0  # slow instrument
    unplug_after_s: float = 0.0  # unplug once, this long after start
    unplug_for_s: float = 2.0


class Emulator:
    """Base emulator. Subclasses implement on_bytes (requests) and/or tick (timers, pushes) and error_frame."""

    name: ClassVar[str] = ""

    def __init__(self, *, link: str | None = None, faults: Faults | None = None, seed: int = 0,
                 random_mode: bool = False, script: Iterable[dict[str, Any]] = (), paused: bool = False) -> None:
        """No I/O: the pty is created by start()."""
        self.link = link
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.random_mode = random_mode
        self.script = deque(script)
        self.plugged, self.unplugged = threading.Event(), threading.Event()
        self.running = threading.Event()  # cleared = switched off: tick() is not called
        if not paused:
            self.running.set()
        self.device = ""
        self.replugs = 0
        self._master = self._slave = -1
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._later: list[tuple[float, bytes]] = []
        self._unplug_request: float | None = None
        self._replug_at: float | None = None
        self._power_cycle = False

    @property
    def path(self) -> str:
        """What a driver opens: the link if any, else the current pty slave."""
        return self.link or self.device

    def start(self) -> str:
        """Create the pty (and link) and start the thread; returns path."""
        with self._lock:
            self._plug()
        self._thread = threading.Thread(target=self._run, name=f"emulator-{self.name}", daemon=True)
        self._thread.start()
        return self.path

    def stop(self) -> None:
        """Stop the thread, close the pty, remove the link."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._close()

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pause(self) -> None:
        """Stop timed behaviour (pushes, auto exposures); replies still work."""
        self.running.clear()

    def resume(self) -> None:
        """Resume timed behaviour."""
        self.running.set()

    def unplug(self, seconds: float, wait_s: float = 2.0, power_cycle: bool = False) -> None:
        """Close the pty and remove the link now; a new pty appears at the link after `seconds`. power_cycle: the
        instrument comes back in its power-on state (power_on()), as after switching it off and on; otherwise it
        keeps its state, as when only the cable was pulled."""
        self.unplugged.clear()
        self._power_cycle = power_cycle
        self._unplug_request = seconds
        if self._thread is None or not self._thread.is_alive():
            self._service_unplug(time.monotonic())
        self.unplugged.wait(wait_s)

    def garbage(self, n: int | None = None) -> None:
        """Write a burst of random bytes."""
        self.write(self.rng.randbytes(n or self.faults.garbage_bytes), split=False)

    def reply(self, data: bytes, can_fail: bool = True) -> None:
        """Send a reply after the slow-reply delay; if can_fail, maybe replaced by error_frame() (error_rate)."""
        if can_fail and self.faults.error_rate and self.rng.random() < self.faults.error_rate:
            data = self.error_frame()
        self.send_later(data, self.faults.reply_delay_s)

    def send_later(self, data: bytes, delay_s: float) -> None:
        """Queue bytes to send after delay_s (0: now)."""
        with self._lock:
            if delay_s <= 0:
                self.write(data)
            else:
                self._later.append((time.monotonic() + delay_s, data))

    def write(self, data: bytes, split: bool | None = None) -> None:
        """Write to the pty master now (split into pieces if the split_writes fault is on); dropped if unplugged."""
        pieces = [data]
        if self.faults.split_writes if split is None else split:
            pieces = self._pieces(data)
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(self.faults.split_delay_s)
            with self._lock:
                if self._master >= 0:
                    try:
                        os.write(self._master, piece)
                    except (BlockingIOError, OSError):
                        pass  # nobody reading and the buffer is full: a real device drops it too

    def next_values(self) -> dict[str, Any] | None:
        """The next scripted values; random ones in random mode; None when the script is used up."""
        if self.script:
            return self.script.popleft()
        return self.random_values() if self.random_mode else None

    # --- hooks -----------------------------------------------------------------------------------------------
    def on_bytes(self, data: bytes) -> None:
        """Bytes from the driver. Default: ignore (a push-only instrument)."""

    def tick(self, now: float) -> None:
        """Called every loop turn (~20 ms) while running: timed pushes and exposures."""

    def power_on(self) -> None:
        """Return to the power-on state (unplug with power_cycle). Default: nothing kept."""

    def error_frame(self) -> bytes:
        """The instrument's error reply, for the error_rate fault."""
        return b""

    def random_values(self) -> dict[str, Any]:
        """Plausible random values for --random demos."""
        return {}

    # --- machinery ---------------------------------------------------------------------------------------------
    def _pieces(self, data: bytes) -> list[bytes]:
        pieces, i = [], 0
        while i < len(data):
            n = self.rng.randint(1, 4)
            pieces.append(data[i:i + n])
            i += n
        return pieces

    def _plug(self) -> None:
        master, slave = pty.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: bytes pass exactly as sent
        os.set_blocking(master, False)
        self._master, self._slave, self.device = master, slave, os.ttyname(slave)
        if self.link:
            tmp = f"{self.link}.tmp{os.getpid()}"
            os.symlink(self.device, tmp)
            os.replace(tmp, self.link)  # atomic: the link never points nowhere while plugged
        self.unplugged.clear()
        self.plugged.set()

    def _close(self) -> None:
        self.plugged.clear()
        if self.link and os.path.islink(self.link):
            os.unlink(self.link)
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
        self._later.clear()
        self.unplugged.set()

    def _service_unplug(self, now: float) -> None:
        with self._lock:
            if self._unplug_request is not None:
                self._close()
                self._replug_at, self._unplug_request = now + self._unplug_request, None
            elif self._replug_at is not None and now >= self._replug_at:
                self._replug_at = None
                self.replugs += 1
                if self._power_cycle:
                    self.power_on()
                self._plug()

    def _run(self) -> None:
        started = time.monotonic()
        next_garbage = started + self.faults.garbage_every_s if self.faults.garbage_every_s else None
        unplug_at = started + self.faults.unplug_after_s if self.faults.unplug_after_s else None
        while not self._stop.is_set():
            now = time.monotonic()
            if unplug_at is not None and now >= unplug_at:
                unplug_at, self._unplug_request = None, self.faults.unplug_for_s
            self._service_unplug(now)
            if next_garbage is not None and now >= next_garbage:
                next_garbage += self.faults.garbage_every_s
                self.garbage()
            data = self._read(0.02)
            with self._lock:
                if data:
                    self.on_bytes(data)
                self._send_due(time.monotonic())
                if self.running.is_set() and self._master >= 0:
                    self.tick(time.monotonic())

    def _read(self, timeout: float) -> bytes:
        master = self._master
        if master < 0:
            time.sleep(timeout)
            return b""
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(master, 4096)
        except OSError:
            return b""

    def _send_due(self, now: float) -> None:
        due = [item for item in self._later if item[0] <= now]
        self._later = [item for item in self._later if item[0] > now]
        for _, data in due:
            self.write(data)
