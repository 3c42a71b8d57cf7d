"""Port selectors: a device path, or `usb:VID:PID[:SERIAL]`, resolved against a list of port infos.

USB adapters renumber (ttyUSB0 -> ttyUSB1 after a replug), so config should name a port by its
/dev/serial/by-id/... link or by USB vendor/product id (and serial number when two identical adapters share a room).
`resolve_port` is pure given the port list; `find_port` asks serial.tools.list_ports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

_USB = re.compile(r"^usb:(?P<vid>[0-9A-Fa-f]{4}):(?P<pid>[0-9A-Fa-f]{4})(?::(?P<serial>.+))?$")


class PortNotFound(LookupError):
    """No connected port matches the selector."""


class AmbiguousPort(LookupError):
    """More than one connected port matches the selector: add the adapter's serial number."""


class PortInfo(Protocol):
    """The fields of serial.tools.list_ports_common.ListPortInfo used here."""

    device: str
    vid: int | None
    pid: int | None
    serial_number: str | None


@dataclass(frozen=True)
class UsbSelector:
    """A USB adapter named by vendor id, product id and optionally serial number."""

    vid: int
    pid: int
    serial: str | None = None

    def matches(self, info: PortInfo) -> bool:
        """True if the port info describes this adapter."""
        if info.vid != self.vid or info.pid != self.pid:
            return False
        return self.serial is None or info.serial_number == self.serial


def parse_port_selector(text: str) -> str | UsbSelector:
    """'usb:0403:6001[:SER]' -> UsbSelector; an absolute path or a pyserial URL ('socket://...') -> itself."""
    match = _USB.match(text)
    if match:
        return UsbSelector(int(match["vid"], 16), int(match["pid"], 16), match["serial"])
    if text.startswith("/") or "://" in text:
        return text
    raise ValueError(f"port must be a device path (/dev/serial/by-id/...) or usb:VID:PID[:SERIAL], got {text!r}")


def resolve_port(selector: str, ports: Iterable[PortInfo]) -> str:
    """The device path to open for a selector; raises PortNotFound or AmbiguousPort for a USB selector.

    A path is returned as given: a /dev/serial/by-id link resolves when opened, and a vanished path fails then.
    """
    parsed = parse_port_selector(selector)
    if isinstance(parsed, str):
        return parsed
    found = sorted(p.device for p in ports if parsed.matches(p))
    if not found:
        raise PortNotFound(f"no serial port matches {selector}")
    if len(found) > 1:
        raise AmbiguousPort(f"{selector} matches {', '.join(found)}; add the adapter serial number")
    return found[0]


def find_port(selector: str) -> str:
    """resolve_port against the ports connected now."""
    from serial.tools import list_ports  # imported here: only the service needs the live list

    return resolve_port(selector, list_ports.comports())
