"""Reading (from a driver) -> QcReading (the published payload): units, raw-frame text and the reading's msg_id.

msg_id and "replay". A reading's msg_id is a hash of (site, room, instrument id, the reading's wall time to the
microsecond, its raw bytes), computed once per Reading. Every re-send of that reading repeats it: a store retried after
an outbox error or stall (the first attempt may have committed after all), the publisher re-sending after a reconnect,
a copy of the outbox replayed into the agent. All of those are the same reading and collapse to one row / one id for
subscribers. A new measurement is a new Reading with a later wall time, so it never collides, even when the meter
sends identical bytes (a steady area monitor, a DAP meter asked again with nothing new). A frame the agent never stored
(it died between receiving and storing) was never taken; if the meter sends it again, that is a new reading.
No secret is needed: a meter reading carries nothing about a patient.
"""

from __future__ import annotations

import hashlib

from agent.payloads.qc import QcReading
from drivers.reading import Reading
from drivers.units import canonical_unit

RAW_MAX_BYTES = 4096
_ESCAPES = {ord("\\"): "\\\\", ord("\r"): "\\r", ord("\n"): "\\n", ord("\t"): "\\t"}


def escape_raw(data: bytes) -> str:
    """Bytes -> readable text: printable ASCII as is, \\\\ \\r \\n \\t, other bytes \\xNN (reversible)."""
    return "".join(_ESCAPES.get(b) or (chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}") for b in data)


def unescape_raw(text: str) -> bytes:
    """The inverse of escape_raw."""
    out, i = bytearray(), 0
    simple = {"\\": 0x5C, "r": 0x0D, "n": 0x0A, "t": 0x09}
    while i < len(text):
        char = text[i]
        if char != "\\":
            out.append(ord(char))
            i += 1
        elif text[i + 1] == "x":
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            out.append(simple[text[i + 1]])
            i += 2
    return bytes(out)


def reading_msg_id(site: str, room: str, reading: Reading) -> str:
    """Deterministic per reading, distinct between readings (see the module docstring)."""
    h = hashlib.sha256()
    for part in (site, room, reading.instrument_id, reading.wall_utc.isoformat(timespec="microseconds")):
        h.update(part.encode())
        h.update(b"\0")  # separators: ("ab", "c") and ("a", "bc") must not hash alike
    h.update(reading.raw)
    return f"qc-{h.hexdigest()[:40]}"


def qc_reading(reading: Reading, *, driver: str, site: str, room: str) -> QcReading:
    """The payload for one reading, its quantities as the driver produced them."""
    quantities = dict(reading.quantities)
    units = {key: unit for key in quantities if (unit := canonical_unit(key))}
    return QcReading(
        msg_id=reading_msg_id(site, room, reading), site=site, room=room,
        instrument_id=reading.instrument_id, driver=driver, measured_at=reading.wall_utc,
        quantities=quantities, units=units,
        flags=sorted(reading.flags), series={key: list(values) for key, values in reading.series.items()},
        raw_frame=escape_raw(reading.raw[:RAW_MAX_BYTES]), raw_frame_bytes=len(reading.raw),
    )
