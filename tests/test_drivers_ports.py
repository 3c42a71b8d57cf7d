"""Port selectors resolved against a list of port infos (no hardware)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from drivers.ports import AmbiguousPort, PortNotFound, UsbSelector, parse_port_selector, resolve_port

FTDI_A = SimpleNamespace(device="/dev/ttyUSB0", vid=0x0403, pid=0x6001, serial_number="A1")
FTDI_B = SimpleNamespace(device="/dev/ttyUSB1", vid=0x0403, pid=0x6001, serial_number="B2")
PL2303 = SimpleNamespace(device="/dev/ttyUSB2", vid=0x067B, pid=0x2303, serial_number=None)
BUILTIN = SimpleNamespace(device="/dev/ttyS0", vid=None, pid=None, serial_number=None)
PORTS = [FTDI_A, FTDI_B, PL2303, BUILTIN]


def test_parse():
    assert parse_port_selector("usb:0403:6001") == UsbSelector(0x0403, 0x6001)
    assert parse_port_selector("usb:0403:6001:A1") == UsbSelector(0x0403, 0x6001, "A1")
    link = "/dev/serial/by-id/usb-FTDI_FT232R_A1-if00-port0"
    assert parse_port_selector(link) == link
    with pytest.raises(ValueError):
        parse_port_selector("ttyUSB0")
    with pytest.raises(ValueError):
        parse_port_selector("usb:403:6001")


def test_resolve_usb_selector():
    assert resolve_port("usb:067b:2303", PORTS) == "/dev/ttyUSB2"
    assert resolve_port("usb:0403:6001:B2", PORTS) == "/dev/ttyUSB1"


def test_resolve_path_is_returned_as_given():
    assert resolve_port("/dev/serial/by-id/x", PORTS) == "/dev/serial/by-id/x"


def test_ambiguous_and_missing():
    with pytest.raises(AmbiguousPort, match="ttyUSB0, /dev/ttyUSB1"):
        resolve_port("usb:0403:6001", PORTS)
    with pytest.raises(PortNotFound):
        resolve_port("usb:0403:6001:C3", PORTS)
