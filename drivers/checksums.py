"""Block checks as a table of pure functions: name -> f(data) -> int."""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce


def sum8(data: bytes) -> int:
    """Sum of all bytes modulo 256."""
    return sum(data) & 0xFF


def xor8(data: bytes) -> int:
    """XOR of all bytes (the NMEA-style check)."""
    return reduce(lambda acc, b: acc ^ b, data, 0)


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS: reflected polynomial 0xA001, init 0xFFFF; sent low byte first on the wire."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


CHECKSUMS: dict[str, Callable[[bytes], int]] = {"sum8": sum8, "xor8": xor8, "crc16_modbus": crc16_modbus}
CHECKSUM_BYTES = {"sum8": 1, "xor8": 1, "crc16_modbus": 2}


def decode_check(text: bytes, encoding: str, kind: str) -> int:
    """Read a transmitted check value: 'hex' / 'decimal' ASCII digits, or raw 'binary_le' / 'binary_be' bytes."""
    if encoding == "hex":
        return int(text, 16)
    if encoding == "decimal":
        return int(text)
    if len(text) != CHECKSUM_BYTES[kind]:
        raise ValueError(f"{kind} check needs {CHECKSUM_BYTES[kind]} bytes, got {len(text)}")
    return int.from_bytes(text, "little" if encoding == "binary_le" else "big")
