"""Pure-logic guards: rate-limited repeated log lines, dose-rule patterns that cannot stall matching, the quarantine
folder that trims only its own copies, and doctor's serial hot-plug check."""

from __future__ import annotations

import logging
import time

import pytest

from agent.dicom.quarantine import INDEX_NAME, BoundedFolder
from agent.doctor.hotplug import check_hotplug
from agent.dose.rules import DoseRules, compile_pattern
from agent.logs import RepeatLimiter


# ---- repeated log lines ------------------------------------------------------------------------------------------
def test_a_flood_of_one_cause_gives_a_line_then_a_count_per_minute(caplog):
    now = [0.0]
    limiter = RepeatLimiter(window_s=60, clock=lambda: now[0])
    log = logging.getLogger("flood")
    with caplog.at_level(logging.ERROR, "flood"):
        for i in range(250_000):  # 250,000 bad frames in 15 s
            now[0] = i * 15 / 250_000
            limiter.log(log, logging.ERROR, ("invalid reading", "area-1"), "reading dropped: frame %d", i)
        now[0] = 60.0
        limiter.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("reading dropped: frame 0")
    assert lines[1].startswith("249999 more in the last 60 s") and "frame 249999" in lines[1]


def test_causes_are_limited_separately_and_a_quiet_cause_starts_afresh(caplog):
    now = [0.0]
    limiter = RepeatLimiter(window_s=60, clock=lambda: now[0])
    log = logging.getLogger("causes")
    with caplog.at_level(logging.WARNING, "causes"):
        assert limiter.log(log, logging.WARNING, "a", "first a")
        assert limiter.log(log, logging.WARNING, "b", "first b")
        assert not limiter.log(log, logging.WARNING, "a", "second a")
        now[0] = 61
        limiter.flush()  # reports a's count; b had no repeat and is forgotten
        now[0] = 200
        limiter.flush()  # a had no further repeat: forgotten
        assert limiter.log(log, logging.WARNING, "a", "a again")
        assert limiter.log(log, logging.WARNING, "b", "b again")
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "first a", "first b", "1 more in the last 60 s, latest: second a", "a again", "b again"]


# ---- dose-rule patterns ------------------------------------------------------------------------------------------
def test_a_catastrophic_backtracking_regex_matches_in_linear_time():
    pattern = compile_pattern(r"(a+)+b", "regex")
    t0 = time.perf_counter()
    assert not pattern.match("a" * 100_000 + "c")  # Python's re would not finish this in a human lifetime
    assert time.perf_counter() - t0 < 0.5
    assert pattern.match("AAAB")  # case-insensitive, whole value


def test_regex_features_without_a_linear_time_match_are_refused_at_load():
    with pytest.raises(ValueError, match=r"bad pattern .*\\1.*RE2"):
        DoseRules.model_validate({"match": "regex", "drl": [
            {"id": "r1", "protocol": [r"(chest)\1"], "dap_gy_cm2": 0.1}]})


@pytest.mark.parametrize("mode, text, value, expected", [
    ("exact", "Chest PA", "chest pa", True), ("exact", "Chest PA", "Chest PA lat", False),
    ("glob", "chest*", "CHEST AP", True), ("glob", "*a*a*a*a*a*b", "a" * 5000, False),
    ("regex", "chest (pa|ap)", "Chest AP", True), ("regex", "chest", "chest x", False),
])
def test_every_mode_matches_whole_values_case_insensitively(mode, text, value, expected):
    t0 = time.perf_counter()
    assert bool(compile_pattern(text, mode).match(value)) is expected
    assert time.perf_counter() - t0 < 0.5


# ---- quarantine and retention folders ----------------------------------------------------------------------------
def test_trimming_deletes_only_the_agents_own_copies(tmp_path):
    exported = [tmp_path / f"export-{i}.dcm" for i in range(6)]  # the modality's own files in a mistaken folder
    for path in exported:
        path.write_bytes(b"x" * 1000)
    lookalike = tmp_path / "20240101T000000-1-00001-object.dcm"  # our naming, but not in our index
    lookalike.write_bytes(b"y" * 1000)
    folder = BoundedFolder(tmp_path, max_bytes=10_000, max_files=2)
    kept = [folder.put(b"z" * 100, f"copy {i}") for i in range(5)]
    assert all(path.exists() for path in exported) and lookalike.exists()
    assert [p.exists() for p in kept] == [False, False, False, True, True]
    assert (tmp_path / INDEX_NAME).read_text().split() == [kept[3].name, kept[4].name]


def test_a_file_is_copied_without_reading_it_whole(tmp_path):
    source = tmp_path / "received.dcm"
    source.write_bytes(b"d" * 50_000)
    folder = BoundedFolder(tmp_path / "retained", max_bytes=100_000, max_files=10)
    copy = folder.put(source, "received")
    assert copy.read_bytes() == source.read_bytes()
    assert folder.put(source, "too big for the bound") is not None
    assert BoundedFolder(tmp_path / "small", max_bytes=1000, max_files=10).put(source, "x") is None


# ---- doctor: meters plugged in after the agent started -----------------------------------------------------------
PROC_WITH = "Character devices:\n  4 ttyS\n166 ttyACM\n188 ttyUSB\n\nBlock devices:\n  8 sd\n"
PROC_WITHOUT = "Character devices:\n  4 ttyS\n\nBlock devices:\n  8 sd\n"


def test_doctor_warns_when_usb_serial_drivers_are_not_loaded():
    result = check_hotplug(PROC_WITHOUT, None)
    assert result.level == "warn" and "ttyUSB" in result.message and "refused until a restart" in result.message
    assert "modules-load.d/xray-agent.conf" in result.fix


def test_doctor_warns_when_drivers_are_loaded_now_but_not_at_boot():
    assert check_hotplug(PROC_WITH, None).level == "warn"
    assert check_hotplug(PROC_WITH, "# x\nusbserial\ncdc_acm\n").level == "ok"


def test_library_log_floods_are_limited_by_a_filter(caplog):
    from agent.logs import RepeatFilter

    now = [0.0]
    limiter = RepeatLimiter(window_s=60, clock=lambda: now[0])
    log = logging.getLogger("pynetdicom.test")
    caplog.handler.addFilter(RepeatFilter(limiter, ("pynetdicom",)))
    with caplog.at_level(logging.ERROR, "pynetdicom.test"):
        for i in range(500):
            log.error("The received PDU is shorter than expected (%d of %d bytes received)", i, 100)
        now[0] = 61
        limiter.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["The received PDU is shorter than expected (0 of 100 bytes received)",
                     "499 more in the last 60 s, latest: The received PDU is shorter than expected (499 of 100 bytes "
                     "received)"]


def test_many_distinct_causes_share_one_bucket_beyond_the_cap(caplog):
    from agent.logs import MAX_CAUSES

    now = [0.0]
    limiter = RepeatLimiter(window_s=60, clock=lambda: now[0])
    log = logging.getLogger("distinct")
    with caplog.at_level(logging.WARNING, "distinct"):
        for i in range(MAX_CAUSES + 5000):
            limiter.log(log, logging.WARNING, ("junk file", i), "cannot interpret file %d", i)
    assert len(caplog.records) == MAX_CAUSES + 1  # each tracked cause once, then one line for all the rest
