"""PTW DIAMENTOR emulator: CR-terminated commands, accumulated DAP, unit selection, E-codes."""

from __future__ import annotations

import time
from typing import Any

from drivers.diamentor import DAP_UNITS
from drivers.emulators.base import Emulator
from drivers.units import convert

MAX_COMMAND = 64


class DiamentorEmulator(Emulator):
    """Answers PTW, SER, U, U1..U4, M, RES, G, CRC; anything else -> E1 (syntax error)."""

    name = "ptw_diamentor"

    def __init__(self, *, unit: int = 2, identity: str = "CRS 1.2.4", serial_number: int = 345678,
                 every_s: float | None = None, **kwargs: Any) -> None:
        """unit: 1 cGy*cm2, 2 Gy*cm2, 3 uGy*m2, 4 R*cm2. every_s: add the next scripted/random exposure this often."""
        super().__init__(**kwargs)
        self.unit, self.identity, self.serial_number, self.every_s = unit, identity, serial_number, every_s
        self.dap_gy_m2 = self.dap_rate_gy_m2_s = 0.0
        self.time_s = 0
        self._buf = b""
        self._next_auto = time.monotonic() + (every_s or 0)

    def expose(self, dap_gy_m2: float, dap_rate_gy_m2_s: float = 0.0, exposure_time_ms: float = 0.0) -> None:
        """Add an exposure to the accumulated DAP and time; the rate is the last one."""
        with self._lock:
            self.dap_gy_m2 += dap_gy_m2
            self.dap_rate_gy_m2_s = dap_rate_gy_m2_s
            self.time_s += round(exposure_time_ms / 1000)

    def measurement(self) -> bytes:
        """The M reply in the selected unit; the trailing check field is invented (the real algorithm is unknown)."""
        unit = DAP_UNITS[f"U{self.unit}"]
        dap = convert(self.dap_gy_m2, "Gy*m2", unit)
        rate = convert(self.dap_rate_gy_m2_s, "Gy*m2/s", f"{unit}/s")
        minutes, seconds = divmod(self.time_s, 60)
        body = f"M{dap:.2f},{rate:.2f},{minutes},{seconds:02d},0.00,0.00,0,00"
        return f"{body},{sum(body.encode()) % 100000:05d}\r".encode()

    def power_on(self) -> None:
        """The accumulated DAP and time start from zero, the unit is kept (it is stored in the meter)."""
        self.dap_gy_m2 = self.dap_rate_gy_m2_s = 0.0
        self.time_s = 0
        self._buf = b""

    def on_bytes(self, data: bytes) -> None:
        """Collect bytes up to CR; one reply per command."""
        self._buf = (self._buf + data)[-MAX_COMMAND:]
        while b"\r" in self._buf:
            line, self._buf = self._buf.split(b"\r", 1)
            self.reply(self.answer(line.strip().decode("latin-1")) + b"\r")

    def answer(self, command: str) -> bytes:
        """The reply to one command, without CR."""
        if command in ("U1", "U2", "U3", "U4"):
            self.unit = int(command[1])
            return command.encode()
        if command == "RES":
            self.dap_gy_m2 = self.dap_rate_gy_m2_s = 0.0
            self.time_s = 0
        replies = {"PTW": self.identity, "SER": f"SER{self.serial_number}", "U": f"U{self.unit}",
                   "M": self.measurement().decode().rstrip("\r"), "RES": "RES", "G": "GP", "CRC": "CRC0,0"}
        return replies.get(command, "E1").encode()

    def tick(self, now: float) -> None:
        """Timed exposures (every_s)."""
        if self.every_s and now >= self._next_auto:
            self._next_auto = now + self.every_s
            values = self.next_values()
            if values:
                self.expose(**values)

    def error_frame(self) -> bytes:
        """Charge overflow."""
        return b"E4\r"

    def random_values(self) -> dict[str, Any]:
        """A plausible exposure."""
        return {"dap_gy_m2": round(self.rng.uniform(1e-5, 5e-4), 7), "dap_rate_gy_m2_s": round(
            self.rng.uniform(1e-5, 1e-3), 7), "exposure_time_ms": float(self.rng.choice([1000, 2000, 5000]))}
