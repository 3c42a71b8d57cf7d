"""Checksum functions against published check values."""

from __future__ import annotations

import pytest

from drivers.checksums import CHECKSUMS, crc16_modbus, decode_check, sum8, xor8


def test_crc16_modbus_check_value():
    assert crc16_modbus(b"123456789") == 0x4B37  # the CRC catalogue's check value for CRC-16/MODBUS


def test_crc16_modbus_request_frame():
    # Modbus RTU "read 1 holding register at 0 from slave 1": 01 03 00 00 00 01, CRC sent as 84 0A (low byte first)
    assert crc16_modbus(bytes.fromhex("010300000001")).to_bytes(2, "little") == bytes.fromhex("840A")


def test_sum8_and_xor8():
    assert sum8(b"123456789") == 0xDD  # 477 = 0x1DD
    assert xor8(b"123456789") == 0x31
    assert xor8(b"GPGLL,4916.45,N,12311.12,W,225444,A") == 0x31  # an NMEA sentence, checksum *31


def test_table_is_complete():
    assert set(CHECKSUMS) == {"sum8", "xor8", "crc16_modbus"}


@pytest.mark.parametrize(("text", "encoding", "kind", "value"), [
    (b"3F", "hex", "xor8", 0x3F), (b"063", "decimal", "sum8", 63),
    (b"\x84\x0a", "binary_le", "crc16_modbus", 0x0A84), (b"\x0a\x84", "binary_be", "crc16_modbus", 0x0A84),
])
def test_decode_check(text, encoding, kind, value):
    assert decode_check(text, encoding, kind) == value


def test_decode_check_wrong_length():
    with pytest.raises(ValueError):
        decode_check(b"\x01", "binary_le", "crc16_modbus")
