"""Fluke Biomedical / Victoreen 4000M+ multi-function X-ray meter (User Manual, Appendix B, pp. B-1..B-3).

One-character commands, no terminator, valid only in the READY state; replies end CRLF. Per exposure:
  F -> filter-wheel position (1..5), which the PC must check against the kVp (the meter does not);
  S (tungsten) / O (molybdenum) -> after slightly more than 1 s, a status 0..63 (0 = ready, else Table B-2 bits);
  D -> `<KVEFF> <KVAVG> <MR> <TIME> <NP>` CRLF, then `<KVP1> ... <KVPN>` CRLF.
The manual does not say how the PC learns that the exposure is over. This driver asks D every poll_interval_s
and treats silence as "not yet" (an armed meter is not READY, so it does not answer); this is an assumption.
Units: MR is taken as mR and TIME as seconds (the manual's sample program); both are settings because neither is
confirmed.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Literal

from pydantic import Field

from drivers.base import PollingDriver, Transport
from drivers.framing import FunctionFramer, TerminatorFramer
from drivers.reading import ErrorReply, FrameError, Reading
from drivers.settings import PollSettings
from drivers.units import convert

CMD_FILTER = b"F"
CMD_ARM = {"W": b"S", "Mo": b"O"}
CMD_DATA = b"D"
CRLF = b"\r\n"

# Table B-2: status bits returned after S/O.
ARM_STATUS_BITS = (
    "integrator_offset_high", "channel_a_offset_high", "channel_b_offset_high",
    "integrator_failure", "channel_a_amplifier_failure", "channel_b_amplifier_failure",
)
# Table B-1: kV range of each filter-wheel position (position 1 reads 21-50 kV with a Mo/Mo tube).
FILTER_RANGES_KV = {1: (27.0, 42.0), 2: (35.0, 60.0), 3: (50.0, 85.0), 4: (70.0, 120.0), 5: (100.0, 155.0)}
FILTER_RANGES_KV_MO = {**FILTER_RANGES_KV, 1: (21.0, 50.0)}


class VictoreenSettings(PollSettings):
    """9600 8N1 straight-through cable (B-1); D is asked every poll_interval_s while armed."""

    target: Literal["W", "Mo"] = Field("W", description="Anode: W arms with S, Mo with O.")
    exposure_unit: Literal["mR", "R", "uGy", "mGy"] = "mR"
    time_unit: Literal["s", "ms"] = "s"
    arm_timeout_s: float = Field(3.0, gt=0, description="Arming takes slightly more than 1 s (B-2).")
    poll_interval_s: float = Field(0.5, ge=0)
    status_check_interval_s: float = Field(
        10.0, gt=0, description="While armed and silent, ask F this often: an answer means the meter was reset.")


def exposure_reply_end(buf: bytes) -> int | None:
    """Length of a complete D reply at the start of buf, or None while incomplete.

    Complete = at least two CRLF-ended lines holding 5 + NP whitespace-separated fields (fields may be split by a
    space or a CRLF, B-1). A reply whose NP field is not an integer ends at its first line, to be rejected.
    """
    text = buf.decode("latin-1")
    tokens: list[str] = []
    pos, lines = 0, 0
    while (end := text.find("\r\n", pos)) >= 0:
        tokens += text[pos:end].split()
        pos, lines = end + 2, lines + 1
        if len(tokens) >= 5 and not tokens[4].isdigit():
            return pos
        if len(tokens) >= 5 and lines >= 2 and len(tokens) >= 5 + int(tokens[4]):
            return pos
    return None


def _number(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise FrameError(f"not a finite number: {token!r}")
    return value


def parse_exposure(frame: bytes, exposure_unit: str = "mR", time_unit: str = "s") -> tuple[dict[str, float], tuple]:
    """D reply -> (quantities in canonical units, kV peaks). Raises FrameError/ValueError on a malformed reply."""
    tokens = frame.decode("ascii").split()
    if len(tokens) < 5 or not tokens[4].isdigit():
        raise FrameError("expected KVEFF KVAVG MR TIME NP")
    kv_eff, kv_avg, dose, duration = (_number(t) for t in tokens[:4])
    peaks = tuple(_number(t) for t in tokens[5:])
    if len(peaks) != int(tokens[4]):
        raise FrameError(f"{tokens[4]} peaks announced, {len(peaks)} received")
    quantities = {
        "kvp": kv_eff,  # the meter's effective kVp
        "kvp_avg": kv_avg,
        "air_kerma_ugy": convert(dose, exposure_unit, "uGy"),
        "exposure_time_ms": convert(duration, time_unit, "ms"),
        "pulses": float(len(peaks)),
    }
    if peaks:
        quantities["kvp_max"] = max(peaks)
    return quantities, peaks


def parse_int_line(frame: bytes, low: int, high: int) -> int:
    """An integer reply (F, S/O) in [low, high]."""
    text = frame.decode("ascii").strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise FrameError(f"expected an integer {low}..{high}, got {text!r}")
    return int(text)


def status_names(status: int) -> list[str]:
    """Names of the Table B-2 bits set in an arm status."""
    return [name for bit, name in enumerate(ARM_STATUS_BITS) if status & (1 << bit)]


def filter_flags(kvp: float, position: int, target: str) -> set[str]:
    """Flag a kVp outside the range of the filter in place (the meter leaves this check to the PC, B-2)."""
    ranges = FILTER_RANGES_KV_MO if target == "Mo" else FILTER_RANGES_KV
    if position not in ranges:
        return {"filter_position_unknown"}
    low, high = ranges[position]
    return set() if low <= kvp <= high else {"kvp_outside_filter_range"}


class Victoreen4000M(PollingDriver):
    """F -> S/O -> D... per exposure; one Reading per exposure.

    Protocol state (`state`). The meter answers only when READY, keeps the last exposure's data until it is armed
    again, and holds none after power-on; so a D answer is a new exposure only if the meter was seen not READY
    (armed) since the data was last read:
      unknown  nothing known (start, after a reading, a failed arm): ask F. An answer means READY, and the data it may
               hold was read already or predates a power-cycle: arm, never ask D. Silence -> busy.
      armed    S/O answered 0: ask D, silence is "no exposure yet". Every status_check_interval_s of silence check as
               in busy, which catches a meter power-cycled behind a working link.
      busy     armed by us and then out of sight (a reconnect, an unanswered S/O), or seen not READY (armed by a
               previous run of the agent, or from the front panel): ask F until it answers; then the meter went from
               armed to READY, so data is an exposure made since: ask D and read it; no data (power-cycled): arm.
    """

    name = "victoreen_4000m"
    Settings = VictoreenSettings
    settings: VictoreenSettings

    def __init__(self, settings: VictoreenSettings | None = None) -> None:
        super().__init__(settings)
        self.state = "unknown"
        self.filter_position = 0
        self._status_checked_at = 0.0

    @property
    def armed(self) -> bool:
        """Armed with a confirmed 0 status: the next D answer is this exposure's data."""
        return self.state == "armed"

    @armed.setter
    def armed(self, value: bool) -> None:
        self.state = "armed" if value else "unknown"
        self._status_checked_at = time.monotonic()

    def reset(self) -> None:
        """A new link: the meter may have been power-cycled, re-cabled or armed from its panel; ask before D."""
        super().reset()
        self.state = "busy" if self.state in ("armed", "busy") else "unknown"

    def awaiting_reply(self) -> bool:
        """An armed meter is silent until the exposure; any other state expects answers."""
        return self.state != "armed"

    def not_responding(self, now: float | None = None) -> str | None:
        """As the base, and when the meter is `busy` say that it may be armed (it answers only when READY)."""
        message = super().not_responding(now)
        if message and self.state == "busy":
            message += " (no answer to F: armed and waiting for an exposure, or off)"
        return message

    def poll(self, transport: Transport, stop: threading.Event) -> Reading | None:
        """One step of the state machine above; a Reading when D answered with an exposure."""
        if self.state == "armed":
            reading = self._data(transport, stop)
            if reading is not None:
                self.state = "unknown"  # READY again with this exposure read: arm for the next one
                return reading
            if time.monotonic() - self._status_checked_at < self.settings.status_check_interval_s:
                return None
            return self._check_armed(transport, stop, count_timeout=False)
        if self.state == "busy":
            return self._check_armed(transport, stop, count_timeout=True)
        position = self._filter(transport, stop, count_timeout=True)
        if position is None:
            return None
        self._arm(transport, stop, position)
        return None

    def _filter(self, transport: Transport, stop: threading.Event, count_timeout: bool) -> int | None:
        """F: the filter position if the meter is READY; silence makes an unknown meter `busy`."""
        self._status_checked_at = time.monotonic()
        frame = self.transact(transport, CMD_FILTER, TerminatorFramer(CRLF), self.settings.reply_timeout_s, stop,
                              count_timeout=count_timeout)
        if frame is None:
            if self.state == "unknown":
                self.state = "busy"
            return None
        position = self.parse(lambda f: parse_int_line(f, 1, 5), frame)
        if position is not None:
            self.filter_position = position
        return position

    def _check_armed(self, transport: Transport, stop: threading.Event, count_timeout: bool) -> Reading | None:
        """A meter seen armed: still busy (F silent), READY with a new exposure (D answers), or reset (no data)."""
        position = self._filter(transport, stop, count_timeout)
        if position is None:
            return None
        reading = self._data(transport, stop)
        if reading is not None:
            self.state = "unknown"
            return reading
        self.episode.problem("meter READY without data although armed (power-cycled or reset?): arming again")
        self._arm(transport, stop, position)
        return None

    def _data(self, transport: Transport, stop: threading.Event) -> Reading | None:
        frame = self.transact(transport, CMD_DATA, FunctionFramer(exposure_reply_end), self.settings.reply_timeout_s,
                              stop, count_timeout=False)
        return None if frame is None else self.parse(self._reading, frame)

    def _arm(self, transport: Transport, stop: threading.Event, position: int) -> None:
        arm = CMD_ARM[self.settings.target]
        frame = self.transact(transport, arm, TerminatorFramer(CRLF), self.settings.arm_timeout_s, stop)
        if frame is None:
            self.state = "busy"  # it may have armed: find out by F / D
            return
        status = self.parse(lambda f: parse_int_line(f, 0, 63), frame)
        if status:  # non-zero: the meter could not prepare (offsets, amplifiers)
            self.error_reply(ErrorReply(str(status), "+".join(status_names(status))))
        self.state = "armed" if status == 0 else "unknown"
        self._status_checked_at = time.monotonic()

    def _reading(self, frame: bytes) -> Reading:
        quantities, peaks = parse_exposure(frame, self.settings.exposure_unit, self.settings.time_unit)
        quantities["filter_position"] = float(self.filter_position)
        flags = filter_flags(quantities["kvp"], self.filter_position, self.settings.target)
        return self.reading(quantities, frame, flags, {"kvp_peaks": peaks})
