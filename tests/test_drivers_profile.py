"""The profile driver: example profiles byte-exact, framing kinds, checksums, errors, scripts, validation."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.checksums import crc16_modbus, xor8
from drivers.profile import Profile, is_ignored, load_profile, record
from drivers.profile_driver import ProfileDriver
from tests.serial_fixtures import LUDLUM_2363_RR, UNIDOS_MV, chunks_of, collect, expected_protocol

PROFILES = Path(__file__).resolve().parent.parent / "config" / "profiles"
FAST = dict(poll_interval_s=0, retry_interval_s=0, reply_timeout_s=0.05)


def load(name: str, **overrides) -> Profile:
    return load_profile(PROFILES / f"{name}.toml", **{**FAST, **overrides})


def run(profile: Profile, pairs=(), stream=(), limit=None):
    stop = threading.Event()
    driver = ProfileDriver(profile)
    with expected_protocol(pairs, stream, stop if stream else None) as port:
        readings = collect(driver.readings(port, stop), stop, limit=limit)
    return driver, readings


def test_ludlum_2363_rr_byte_exact():
    driver, [reading] = run(load("ludlum_2363"), [(b"RR\r\n", LUDLUM_2363_RR)], limit=1)
    assert reading.quantities == {"neutron_cpm": 3.0, "gamma_dose_rate_usv_h": 23.05, "dose_usv": 1245.6}
    assert reading.raw == LUDLUM_2363_RR.rstrip() and driver.counters.frames_ok == 1
    assert reading.instrument_id == "ludlum_2363"


def test_ludlum_2363_error_reply_then_good():
    pairs = [(b"RR\r\n", b"ERROR-01\r\n"), (b"RR\r\n", LUDLUM_2363_RR)]
    driver, [reading] = run(load("ludlum_2363"), pairs, limit=1)
    assert driver.counters.error_replies == 1 and reading.quantities["neutron_cpm"] == 3.0


def test_ptw_unidos_init_then_mv_byte_exact():
    pairs = [(b"PTW\r\n", b"UNIDOS 1.0\r\n"), (b"MV\r\n", chunks_of(UNIDOS_MV, 9))]
    _, [reading] = run(load("ptw_unidos"), pairs, limit=1)
    assert reading.quantities == pytest.approx({"air_kerma_ugy": 2600.0, "dose_rate_ugy_s": 5.6e-3 / 60,
                                                "measurement_time_ms": 3000.0, "chamber_voltage_v": 300.0})
    assert reading.flags == frozenset()


def test_ptw_unidos_error_and_unexpected_reply():
    pairs = [(b"PTW\r\n", b"UNIDOS\r\n"), (b"MV\r\n", b"E03\r\n"), (b"MV\r\n", b"XX;1\r\n"),
             (b"MV\r\n", UNIDOS_MV.replace(b"0x0", b"0x4"))]
    driver, [reading] = run(load("ptw_unidos"), pairs, limit=1)
    assert (driver.counters.error_replies, driver.counters.frames_bad) == (1, 1)
    assert reading.flags == {"status_nonzero"}


def test_ptw_unidos_other_unit_is_bad_not_wrong():
    driver = ProfileDriver(load("ptw_unidos"))
    with expected_protocol([(b"MV\r\n", UNIDOS_MV.replace(b"Gy;min", b"Gy;s"))]) as port:
        assert driver.poll(port, threading.Event()) is None
    assert driver.counters.frames_bad == 1 and "dose_rate_ugy_s not found" in driver.counters.last_error


def test_vendor_csv_push_with_header_and_bad_line():
    lines = [b"kVp,mGy,ms,HVL\r\n", b"80.2,1.234,100.5,3.10\r\n", b"80.2,,100.5\r\n", b"70.1,0.912,80.0,2.85\n"]
    driver, readings = run(load("vendor_csv_export"), stream=chunks_of(b"".join(lines), 3))
    assert [dict(r.quantities) for r in readings] == [
        {"kvp": 80.2, "air_kerma_ugy": 1234.0, "exposure_time_ms": 100.5, "hvl_mm_al": 3.1},
        {"kvp": 70.1, "air_kerma_ugy": 912.0, "exposure_time_ms": 80.0, "hvl_mm_al": 2.85}]
    assert driver.counters.frames_bad == 1


NMEA_LIKE = dict(name="nmea_like", mode="push", framing={"start": "$", "terminator": "\r\n"},
                 checksum={"kind": "xor8", "pattern": r"^\$(?P<data>[^*]*)\*(?P<check>[0-9A-F]{2})$"},
                 fields=[{"name": "dose_rate_ugy_s", "regex": r"^DR,([\d.]+),uGy/h", "unit": "uGy/h"}])


def nmea(body: str) -> bytes:
    return f"${body}*{xor8(body.encode()):02X}\r\n".encode()


def test_xor8_checksum_push_with_noise():
    good, bad = nmea("DR,3600.0,uGy/h"), nmea("DR,7200.0,uGy/h").replace(b"7200", b"7201")
    driver, readings = run(Profile(**NMEA_LIKE), stream=[b"\xff\x00junk", bad, b"$DR,1", good])
    assert [r.quantities["dose_rate_ugy_s"] for r in readings] == [1.0]
    assert driver.counters.frames_bad == 1 and driver.counters.bytes_discarded > 0


def test_crc16_binary_fixed_length_frames():
    profile = Profile(name="binary", mode="push", framing={"kind": "fixed_length", "length": 7, "start": "\x02"},
                      checksum={"kind": "crc16_modbus", "pattern": r"(?s)^(?P<data>.{5})(?P<check>.{2})$",
                                "encoding": "binary_le"},
                      fields=[{"name": "kvp", "regex": r"^\x02(\d{4})", "implied_decimals": 1, "unit": "kV"}])
    body = b"\x020803"
    frame = body + crc16_modbus(body).to_bytes(2, "little")
    driver, readings = run(profile, stream=[b"\x00\x00", frame[:3], frame[3:], body + b"\x00\x00"])
    assert [r.quantities for r in readings] == [{"kvp": 80.3}]
    assert driver.counters.frames_bad == 1


def test_multi_line_records_with_flags_and_optional_field():
    profile = Profile(name="two_lines", mode="push",
                      framing={"kind": "lines", "lines": 2, "first_line": "^KV "},
                      fields=[{"name": "kvp", "regex": r"^KV (\S+)"},
                              {"name": "exposure_time_ms", "regex": r"T=(\S+)s", "unit": "s"},
                              {"name": "hvl_mm_al", "regex": r"HVL=(\S+)", "unit": "mmAl", "optional": True}],
                      flags=[{"name": "saturated", "regex": "SAT"}])
    _, readings = run(profile, stream=[b"T=9s\r\nKV 80\r\nT=0.1s SAT\r\n"])
    assert [(dict(r.quantities), r.flags) for r in readings] == [({"kvp": 80.0, "exposure_time_ms": 100.0},
                                                                  {"saturated"})]


def test_init_script_expect_no_reply_command_and_retry():
    profile = Profile(name="scripted", mode="request_response", **FAST,
                      init=[{"send": "ID?\r", "expect": "^METER"},
                            {"send": "REM\r", "reply": False, "timeout_s": 0.01}],
                      poll=[{"send": "MEAS?\r", "expect": r"^\d"}],
                      framing={"terminator": "\r"}, fields=[{"name": "kvp", "regex": r"^(\d+)", "type": "int"}])
    pairs = [(b"ID?\r", b"HELLO\r"), (b"ID?\r", b"METER 1\r"), (b"REM\r", b""), (b"MEAS?\r", b"81\r")]
    driver, [reading] = run(profile, pairs, limit=1)
    assert reading.quantities == {"kvp": 81.0} and driver.counters.frames_bad == 1


@pytest.mark.parametrize("bad", [
    {"colour": "red"},  # unknown key
    {"fields": []},
    {"fields": [{"name": "kvp", "regex": "(unclosed"}]},
    {"fields": [{"name": "kvp", "regex": "no group"}]},
    {"fields": [{"name": "hvl_mm_al", "regex": "(x)", "unit": "mGy"}]},  # unit does not fit the name
    {"fields": [{"name": "kvp", "regex": "(x)", "unit": "parsec"}]},
    {"mode": "request_response"},  # no poll script
    {"framing": {"kind": "fixed_length"}},
    {"checksum": {"kind": "xor8", "pattern": "(.*)"}},
    {"init": [{"send": "\u20ac"}]},  # not a single byte
    {"fields": [{"name": "kvp", "regex": "(x)", "scale": 1, "implied_decimal": 1}]},
])
def test_invalid_profiles_are_rejected(bad):
    base = {"name": "p", "fields": [{"name": "kvp", "regex": "(x)"}]}
    with pytest.raises(ValidationError):
        Profile(**{**base, **bad})


def test_unknown_key_in_toml_file(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text((PROFILES / "ludlum_2363.toml").read_text() + '\nbaud = 9600\n')
    with pytest.raises(ValidationError, match="baud"):
        load_profile(path)


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.toml")), ids=lambda p: p.stem)
def test_example_profiles_parse_their_own_emulator_frames(path):
    profile = load_profile(path)
    polled = {c.send for c in profile.poll if c.parse}
    frames = [f for r in profile.emulator.replies if r.command in polled for f in r.frames]
    frames += [f for f in profile.emulator.push if not is_ignored(profile, f)]
    assert frames
    for frame in frames:
        quantities, _ = record(profile, frame.rstrip("\r\n"))
        assert set(quantities) == {f.name for f in profile.fields if not f.optional}


def test_absurd_exponent_is_a_bad_frame_not_an_exception():
    driver = ProfileDriver(load("ptw_unidos"))
    with expected_protocol([(b"MV\r\n", UNIDOS_MV.replace(b"E-3", b"E999"))]) as port:
        assert driver.poll(port, threading.Event()) is None
    assert driver.counters.frames_bad == 1
