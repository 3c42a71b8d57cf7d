"""Victoreen 4000M+ emulator: F, S/O (status after arm_delay_s), D; exposures on demand or every every_s; and a
fluoroscopy rate mode: while the beam is on, each arming integrates the air kerma over sample_s and reports it as
an exposure of that duration (the rate is air kerma / time), the output ramping up while the brightness control
settles."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from drivers.emulators.base import Emulator
from drivers.units import convert


def format_exposure(kvp: float, air_kerma_ugy: float, exposure_time_ms: float, kvp_avg: float | None = None,
                    peaks: tuple[float, ...] | None = None) -> bytes:
    """The D reply for an exposure given in canonical units (reals as the manual's `+8.034E+01`)."""
    peaks = tuple(peaks) if peaks is not None else (kvp,)
    head = [kvp, kvp if kvp_avg is None else kvp_avg, convert(air_kerma_ugy, "uGy", "mR"),
            convert(exposure_time_ms, "ms", "s")]
    line1 = " ".join(f"{v:+.3E}" for v in head) + f" {len(peaks)}"
    line2 = " ".join(f"{p:+.3E}" for p in peaks)
    return f"{line1}\r\n{line2}\r\n".encode("ascii")


class VictoreenEmulator(Emulator):
    """READY -> (S/O) arming -> armed -> (an exposure) -> READY with data. D is ignored unless READY."""

    name = "victoreen_4000m"

    def __init__(self, *, arm_delay_s: float = 1.0, every_s: float | None = None, filter_position: int = 3,
                 **kwargs: Any) -> None:
        """every_s: make the next scripted (or random) exposure this often while armed; None = expose() only."""
        super().__init__(**kwargs)
        self.arm_delay_s, self.every_s, self.filter_position = arm_delay_s, every_s, filter_position
        self.state = "ready"
        self.data = b""
        self.exposures: deque[dict[str, Any]] = deque()
        self.arm_status = 0  # set non-zero to simulate an offset/amplifier fault (Table B-2)
        self._armed_at = 0.0
        self._next_auto = 0.0
        self.fluoro: dict[str, float] | None = None  # the beam of fluoroscopy(), while on
        self._sample_from = 0.0

    def fluoroscopy(self, rate_mgy_per_min: float, kvp: float, duration_s: float, sample_s: float = 0.5,
                    ramp_s: float = 0.0, ramp_from: float = 0.5) -> None:
        """Continuous fluoroscopy from now for duration_s at rate_mgy_per_min (after a linear ramp from ramp_from x
        the rate over ramp_s, the automatic brightness control settling). Each armed interval of sample_s of beam
        is one D record: its air kerma (the rate integrated over the interval) and the interval as exposure time."""
        with self._lock:
            now = time.monotonic()
            self.fluoro = {"rate": rate_mgy_per_min, "kvp": kvp, "start": now, "end": now + duration_s,
                           "sample_s": sample_s, "ramp_s": ramp_s, "ramp_from": ramp_from}
            self._sample_from = now

    @staticmethod
    def _fluoro_rate(beam: dict[str, float], t: float) -> float:
        """The beam's rate (mGy/min) at monotonic time t."""
        since = t - beam["start"]
        if beam["ramp_s"] > 0 and since < beam["ramp_s"]:
            return beam["rate"] * (beam["ramp_from"] + (1 - beam["ramp_from"]) * since / beam["ramp_s"])
        return beam["rate"]

    def _fluoro_sample(self, now: float) -> dict[str, Any] | None:
        """The next D record of the beam when a sample interval has passed while armed; None otherwise."""
        beam = self.fluoro
        start = max(self._sample_from, beam["start"])
        end = min(now, beam["end"])
        if end - start < beam["sample_s"] and now < beam["end"]:
            return None
        if now >= beam["end"]:
            self.fluoro = None  # the beam is off after this last (maybe shorter) interval
        if end - start <= 0:
            return None
        steps = 20  # midpoint rule over the interval: the ramp is linear, so this is exact enough
        width = (end - start) / steps
        mgy = sum(self._fluoro_rate(beam, start + (i + 0.5) * width) for i in range(steps)) * width / 60.0
        self._sample_from = now
        return dict(kvp=beam["kvp"], air_kerma_ugy=mgy * 1000.0, exposure_time_ms=(end - start) * 1000.0)

    def expose(self, kvp: float, air_kerma_ugy: float, exposure_time_ms: float, kvp_avg: float | None = None,
               peaks: tuple[float, ...] | None = None) -> None:
        """Queue an exposure; it happens as soon as the meter is armed."""
        with self._lock:
            self.exposures.append(dict(kvp=kvp, air_kerma_ugy=air_kerma_ugy, exposure_time_ms=exposure_time_ms,
                                       kvp_avg=kvp_avg, peaks=peaks))

    def power_on(self) -> None:
        """READY with no exposure data (queued exposures stay queued: they are the test's, not the meter's)."""
        self.state, self.data = "ready", b""

    def on_bytes(self, data: bytes) -> None:
        """One-character commands, no terminator; unknown bytes are ignored."""
        for char in data.decode("latin-1"):
            if char == "F" and self.state == "ready":
                self.reply(f"{self.filter_position}\r\n".encode(), can_fail=False)  # errors show in the arm status
            elif char in "SO" and self.state == "ready":
                self.state, self._armed_at = "arming", time.monotonic()
            elif char == "D" and self.state == "ready" and self.data:
                self.reply(self.data, can_fail=False)

    def tick(self, now: float) -> None:
        """Finish arming after arm_delay_s; while armed, run the next queued (or timed) exposure."""
        if self.state == "arming" and now - self._armed_at >= self.arm_delay_s:
            self.reply(f"{self.arm_status}\r\n".encode())
            self.state = "armed" if self.arm_status == 0 else "ready"
            self._next_auto = now + (self.every_s or 0)
            self._sample_from = now  # the meter integrates only while armed
        elif self.state == "armed" and self.fluoro is not None:
            values = self._fluoro_sample(now)
            if values:
                self.data = format_exposure(**values)
                self.state = "ready"
        elif self.state == "armed":
            if not self.exposures and self.every_s and now >= self._next_auto:
                values = self.next_values()
                if values:
                    self.exposures.append(values)
            if self.exposures:
                self.data = format_exposure(**self.exposures.popleft())
                self.state = "ready"

    def error_frame(self) -> bytes:
        """A status with the integrator-offset bit set."""
        return b"1\r\n"

    def random_values(self) -> dict[str, Any]:
        """A plausible radiographic exposure."""
        kvp = round(self.rng.uniform(60, 80), 1)
        return {"kvp": kvp, "kvp_avg": round(kvp * 0.98, 1), "air_kerma_ugy": round(self.rng.uniform(50, 2000), 1),
                "exposure_time_ms": float(self.rng.choice([10, 20, 50, 100, 200])),
                "peaks": tuple(round(kvp + self.rng.uniform(-1, 1), 1) for _ in range(3))}
