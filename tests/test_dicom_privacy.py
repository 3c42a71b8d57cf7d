"""The privacy promise: no patient identifier, accession number or UID leaves the room in clear: not in structured
fields, not in free text typed at the modality, and no payload field carries text that has not been classified."""

import json
import re
import logging
import shutil
import stat
import subprocess
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom import uid as sop

from agent.dicom import extract
from agent.dicom.intake import DicomIntake
from agent.dicom.statuses import SUCCESS
from agent.payloads.exposure import ExposureEvent
from agent.privacy import redact
from agent.privacy.policy import FREE_TEXT_FIELDS, TextPolicy
from agent.schemas import render_schemas
from agent.pseudonym import make_ref
from tests.dicom_factory import (
    Patient, acquisition_event, fluoro_event, identifying_values, make_context, make_cr, make_dx, make_dx_pair,
    TEST_SECRET, make_mg, make_rdsr, make_rf, make_xa, roundtrip, to_bytes,
)
from tests.mqtt_requester import Requester
from tests.test_health_agent import metric
from tests.realparts import wait_for
from tests.privacy_corpus import corpus, leaks_in, planted_values

CTX = make_context()
PATIENT = Patient()


def leaks(ds: Dataset, ctx=CTX) -> list[str]:
    """Planted identifying values (and UIDs) found in the wire JSON of any payload extracted from `ds`."""
    payloads = extract(roundtrip(ds), ctx).payloads()
    assert payloads, "nothing extracted: the scan would prove nothing"
    wire = "\n".join(payload.to_json_bytes().decode() for payload in payloads)
    return sorted(value for value in identifying_values(ds, PATIENT) if value in wire)


OBJECTS = {
    "cr": lambda: make_cr(patient=PATIENT),
    "dx": lambda: make_dx(patient=PATIENT, private_tags=True),
    "dx-processing": lambda: make_dx_pair(patient=PATIENT)[0],
    "dx-without-event-uid": lambda: make_dx(patient=PATIENT, irradiation_event_uid=None),
    "dx-without-dates": lambda: make_dx(patient=PATIENT, irradiation_event_uid=None, acquisition_dt=None),
    "mg": lambda: make_mg(patient=PATIENT),
    "xa": lambda: make_xa(patient=PATIENT),
    "rf": lambda: make_rf(patient=PATIENT),
    "rdsr": lambda: make_rdsr([acquisition_event(), fluoro_event()], patient=PATIENT, private_tags=True),
    "rdsr-without-event-uids": lambda: make_rdsr([acquisition_event(uid=None), fluoro_event(uid=None, started=None)],
                                                 patient=PATIENT),
    "enhanced-sr": lambda: make_rdsr([acquisition_event()], patient=PATIENT, sop_class_uid=sop.EnhancedSRStorage),
}


@pytest.mark.parametrize("build", OBJECTS.values(), ids=OBJECTS.keys())
def test_no_identifier_in_any_payload(build):
    assert leaks(build()) == []


def test_the_scan_sees_every_planted_value():
    ds = make_dx(patient=PATIENT)
    planted = identifying_values(ds, PATIENT)
    for expected in (PATIENT.name, "Zebedee", PATIENT.patient_id, PATIENT.birth_date, PATIENT.accession,
                     PATIENT.institution_address, PATIENT.operator, PATIENT.comments, ds.StudyInstanceUID,
                     ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.IrradiationEventUID, ds.SOPClassUID):
        assert expected in planted


def test_the_scan_catches_a_leak():
    # A protocol name typed with the patient's name, published verbatim, must be reported: proves the scan can fail.
    verbatim = make_context(free_text=TextPolicy("verbatim"))
    assert PATIENT.name in leaks(make_dx(patient=PATIENT, protocol=PATIENT.name), verbatim)


def test_age_and_sex_can_be_switched_off():
    ctx = make_context(include_age_sex=False)
    payloads = extract(make_rdsr([acquisition_event()], patient=PATIENT), ctx).payloads()
    payloads += extract(make_dx(patient=PATIENT), ctx).payloads()
    assert {(p.patient_age_years, p.patient_sex) for p in payloads} == {(None, None)}


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # the malformed values are planted on purpose
@pytest.mark.parametrize("age, birth_date, years", [
    ("065Y", "19580317", 65), ("018M", "19580317", 1), ("003D", "19580317", 0), ("095Y", "19580317", 90),
    (None, "19580317", 65), (None, "19200101", 90), (None, "bogus", None), ("bogus", "", None),
])
def test_age_in_whole_years_capped_at_90(age, birth_date, years):
    patient = Patient(age=age, birth_date=birth_date)
    assert extract(make_dx(patient=patient), CTX).events[0].patient_age_years == years


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
@pytest.mark.parametrize("sex, expected", [("F", "F"), ("M", "M"), ("O", "O"), ("m", "M"), ("X", None), ("", None)])
def test_sex_is_m_f_o_or_null(sex, expected):
    assert extract(make_dx(patient=Patient(sex=sex)), CTX).events[0].patient_sex == expected


def test_study_ref_is_keyed_not_a_plain_hash():
    ds = make_dx(patient=PATIENT)
    event = extract(ds, CTX).events[0]
    other_site = extract(ds, make_context(secret=b"another-site-secret-0123456789")).events[0]
    assert event.study_ref == make_ref(CTX.secret, "study", ds.StudyInstanceUID)
    assert other_site.study_ref != event.study_ref and other_site.event_ref != event.event_ref


# --- free text: the privacy corpus through extraction and intake ----------------------------------------------------

def _wire(payloads) -> str:
    return "\n".join(payload.to_json_bytes().decode() for payload in payloads)


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # the malformed UID is planted on purpose
@pytest.mark.parametrize("name", list(corpus()))
def test_no_planted_value_in_any_payload_of_the_free_text_corpus(name):
    ds = corpus()[name]
    payloads = extract(roundtrip(ds), CTX).payloads()
    assert payloads
    assert leaks_in(_wire(payloads), planted_values([ds])) == []
    for payload in payloads:  # every screened field is listed, without its text
        screened = {w.field for w in payload.warnings if w.reason == "screened"}
        assert {"station_name", "manufacturer", "model", "device_serial"} <= screened
        assert all(w.raw is None for w in payload.warnings)
        if isinstance(payload, ExposureEvent):  # each event's protocol is planted (body part and view: see below)
            assert "protocol" in screened
        assert leaks_in(payload.model_dump_json(), planted_values([ds])) == []


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_clinical_words_of_the_corpus_survive_the_screen():
    objects = corpus()
    typed = extract(roundtrip(objects["typed"]), CTX).events[0]
    assert (typed.protocol, typed.body_part, typed.view) == ("Thorax PA", "CHEST", "PA")
    assert (typed.station_name, typed.manufacturer, typed.model, typed.device_serial) == ("XR3", "ACME", "RadMaster",
                                                                                          "SN-42")
    coded = extract(roundtrip(objects["coded"]), CTX).events[0]
    assert (coded.protocol, coded.body_part, coded.view) == ("Thorax", "Chest of", "PA")
    assert extract(roundtrip(objects["series"]), CTX).events[0].protocol == "Knee"
    report = extract(roundtrip(objects["report"]), CTX)
    assert [(e.protocol, e.body_part, e.view) for e in report.events] == [
        ("Abdomen AP", "Abdomen", "AP"), ("Pelvis", "Abdomen", "antero-posterior"), ("Fluoro", "Abdomen",
                                                                                      "antero-posterior")]
    assert report.summary.station_name == "DR"


def test_untouched_labels_carry_no_warning():
    event = extract(make_dx(patient=PATIENT), CTX).events[0]
    assert (event.protocol, event.body_part, event.view, event.station_name) == ("Thorax PA", "CHEST", "PA",
                                                                                 "XR-ROOM-3")
    assert event.warnings == []


def test_catalog_mode_publishes_known_names_only():
    ctx = make_context(free_text=TextPolicy.of("catalog", known_protocols=["THORAX PA"], known_stations=["xr-room-3"]))
    known = extract(make_dx(patient=PATIENT), ctx).events[0]
    assert (known.protocol, known.station_name, known.warnings) == ("Thorax PA", "XR-ROOM-3", [])
    unknown = extract(make_dx(patient=PATIENT, protocol="Thorax PA Zebedee", station_name="XR9"), ctx).events[0]
    assert (unknown.protocol, unknown.station_name) == ("other", "other")
    assert {(w.field, w.reason) for w in unknown.warnings} == {("protocol", "not-in-catalog"),
                                                               ("station_name", "not-in-catalog")}


def test_verbatim_mode_publishes_as_sent():
    ctx = make_context(free_text=TextPolicy("verbatim"))
    event = extract(make_dx(patient=PATIENT, protocol="Thorax Zebedee"), ctx).events[0]
    assert event.protocol == "Thorax Zebedee" and event.warnings == []


@pytest.fixture
def redacting():
    """Third-party log values redacted as in the running agent (agent.logs.setup_logging)."""
    redact.install()
    yield
    redact.uninstall()


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_intake_counts_screened_values_coarsens_times_and_logs_no_text(sink, box, caplog, redacting):
    intake = DicomIntake(sink, TEST_SECRET, timezone="Europe/Berlin", time_resolution="hour")
    observed = []
    intake.observers.append(observed.extend)
    caplog.set_level(logging.DEBUG)
    ds = corpus()["typed"]
    assert intake.handle(roundtrip(ds), lambda: b"", "MODALITY@127.0.0.1") == SUCCESS
    assert intake.counters.values_screened == 7  # protocol, body part, view, station, manufacturer, model, serial
    assert "free text screened in 7 value(s) of body_part, device_serial, manufacturer, model, protocol, " \
           "station_name, view from MODALITY@127.0.0.1" in caplog.text
    assert "Invalid value for VR UI: …" in caplog.text, "pydicom's warning is kept, without its value"
    assert leaks_in(caplog.text, planted_values([ds])) == []
    stored = [json.loads(m.payload) for m in box.fetch_after(0, 10)]
    event = next(m for m in stored if m["schema"] == "xray.exposure/1")
    assert event["acquired_at"] == "2024-01-05T10:00:00+01:00"  # 10:15:30 local, to the hour
    assert event["received_at"].endswith(":00:00Z") and event["ts"].endswith(":00:00Z")
    exact = next(p for p in observed if isinstance(p, ExposureEvent))  # QC matches readings by the exact time
    assert exact.acquired_at.isoformat() == "2024-01-05T10:15:30+01:00"


# --- a new payload field carrying text must be classified -------------------------------------------------------

# Every string field of every published schema that is not an enumeration, a const or a date-time, by class:
#   screened: free text from the object, passed through agent.privacy.policy (name in FREE_TEXT_FIELDS), or copied
#             from such a field (dose alerts, the summary's protocols);
#   ref:      a keyed hash or random id; config: from the agent's config or rules file; agent: written by the agent
#             (names, codes, its own messages, instrument frames); staff: typed by staff on the QC page;
#   copied:   copied from the screened equipment fields of exposure events (agent.qc.matching.event_device: the
#             QC record's X-ray unit), checked below to stay so.
SCREENED, REF, CONFIG, AGENT, STAFF, COPIED = "screened", "ref", "config", "agent", "staff", "copied"
ENVELOPE = {"msg_id": REF, "site": CONFIG, "room": CONFIG, "ts": AGENT}
EQUIPMENT_TEXT = {"station_name": SCREENED, "manufacturer": SCREENED, "model": SCREENED, "device_serial": SCREENED,
                  "modality": SCREENED}
WARNINGS = {"warnings[].field": AGENT, "warnings[].reason": AGENT, "warnings[].raw": AGENT}
READING = {"driver": CONFIG, "flags[]": AGENT, "instrument_id": CONFIG, "msg_id": REF, "raw_frame": AGENT}
STRING_FIELDS = {
    "xray.exposure.v1.json": {**ENVELOPE, **EQUIPMENT_TEXT, **WARNINGS, "protocol": SCREENED, "body_part": SCREENED,
                              "view": SCREENED, "study_ref": REF, "event_ref": REF, "repeat_of": REF,
                              "supersedes": REF, "patient_ref": REF, "anode_target_material": SCREENED,
                              "filter_material": SCREENED},
    "xray.dose-summary.v1.json": {**ENVELOPE, **EQUIPMENT_TEXT, **WARNINGS, "study_ref": REF, "patient_ref": REF},
    "xray.dose-alert.v1.json": {**ENVELOPE, "protocol": SCREENED, "body_part": SCREENED, "view": SCREENED,
                                "modality": SCREENED, "event_ref": REF, "study_ref": REF, "rule": CONFIG,
                                "rule_description": CONFIG, "unit": AGENT, "patient_ref": REF, "studies[]": REF},
    "xray.summary.v1.json": {**ENVELOPE, "protocols[].protocol": SCREENED, "timezone": CONFIG,
                             "units_with_uniform_target_ei[]": COPIED},
    "xray.drl-audit.v1.json": {**ENVELOPE, "timezone": CONFIG, "exams[].exam": COPIED, "exams[].band": CONFIG,
                               "exams[].rule": CONFIG},
    "xray.cmd-reply.v1.json": {**ENVELOPE, "boot_id": REF, "command": AGENT, "error": AGENT},
    "xray.health.v1.json": {**ENVELOPE, "boot_id": REF, "config_hash": AGENT, "version": AGENT,
                            "qc_overdue_tests[]": CONFIG},
    "xray.qc-due.v1.json": {**ENVELOPE, "tests[].last_passed_ref": REF, "tests[].last_verdict": AGENT},
    "xray.status.v1.json": {**ENVELOPE, "boot_id": REF, "config_hash": AGENT, "version": AGENT},
    "xray.equipment.v1.json": {**ENVELOPE, "device_id": CONFIG, "driver": CONFIG, "endpoint": CONFIG,
                               "last_error": AGENT, "port": AGENT, "port_selector": CONFIG},
    "xray.qc-reading.v1.json": {**ENVELOPE, **READING, "session_ref": REF},
    "xray.qc-session.v1.json": {
        **ENVELOPE, **{f"exposures[].readings[].{k}": v for k, v in READING.items()},
        "exposures[].technique.event_ref": REF, "instruments[]": CONFIG, "operator": STAFF, "session_ref": REF,
        "result.criteria[].inputs.*": AGENT, "result.criteria[].name": AGENT, "result.criteria[].reason": AGENT,
        "result.criteria[].rule": AGENT, "result.criteria[].subject": AGENT, "result.criteria[].unit": AGENT,
        "result.jurisdiction": CONFIG, "result.reason": AGENT, "result.criteria[].citation": AGENT,
        "exposures[].flags[]": AGENT, "time_zone": CONFIG, "review.comment": STAFF, "review.reviewed_by": STAFF,
        **{f"instrument_records[].{k}": CONFIG for k in (
            "air_density_correction", "calibration_date", "calibration_due", "calibration_factor_unit", "detector",
            "driver", "id", "model", "serial_number")},
        "unit.unit_id": CONFIG, "unit.manufacturer": COPIED, "unit.model": COPIED, "unit.serial_number": COPIED,
        "unit.station_name": COPIED, "unit.conflicts[]": COPIED, "exposures[].technique.target_filter": COPIED},
}


def test_the_qc_records_unit_is_copied_from_screened_exposure_fields():
    """The `copied` fields come from an exposure event's screened equipment fields, and only from them."""
    import inspect

    from agent.qc import matching

    source = inspect.getsource(matching.event_device)
    assert {"event.manufacturer", "event.model", "event.device_serial", "event.station_name"} <= set(
        re.findall(r"event\.\w+", source)) == {"event.manufacturer", "event.model", "event.device_serial",
                                                "event.station_name"}
    assert {"manufacturer", "model", "device_serial", "station_name"} <= set(FREE_TEXT_FIELDS)


def _text_fields(schema: dict, node: dict, path: str = "") -> set[str]:
    """Paths of the string fields of `node` that may carry any text (not enum, const or a date-time)."""
    if "$ref" in node:
        return _text_fields(schema, schema["$defs"][node["$ref"].rsplit("/", 1)[-1]], path)
    found = set()
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in node.get(key, []):
            found |= _text_fields(schema, sub, path)
    kind = node.get("type")
    if kind == "string" and not ({"enum", "const", "format"} & set(node)):
        found.add(path.lstrip("."))
    elif kind == "object":
        for name, sub in node.get("properties", {}).items():
            found |= _text_fields(schema, sub, f"{path}.{name}")
        if isinstance(node.get("additionalProperties"), dict):
            found |= _text_fields(schema, node["additionalProperties"], f"{path}.*")
    elif kind == "array":
        found |= _text_fields(schema, node.get("items", {}), f"{path}[]")
    return found


@pytest.mark.parametrize("filename", sorted(render_schemas()))
def test_every_text_field_of_every_payload_is_classified(filename):
    schema = json.loads(render_schemas()[filename])
    fields = _text_fields(schema, schema)
    classified = STRING_FIELDS.get(filename, {})
    assert fields - set(classified) == set(), (
        f"{filename}: new text field(s) {sorted(fields - set(classified))}: screen free text from the object through "
        "agent.privacy.policy (FREE_TEXT_FIELDS) and classify the field in STRING_FIELDS")
    assert set(classified) - fields == set(), f"{filename}: stale entries {sorted(set(classified) - fields)}"
    for path, kind in classified.items():
        if kind == SCREENED:
            assert path.rsplit(".", 1)[-1] in FREE_TEXT_FIELDS, f"{filename}: {path} is not screened by the policy"


# --- end to end: C-STORE (dcmtk's storescu) and the watched folder, a real broker and subscriber -------------------

STORESCU = shutil.which("storescu")
MODALITY_AET, AGENT_AET = "DR_ROOM3", "XRAYAGENT"
EXPORT_NAME = "ZEBEDEE^QUIXOTICA PID-7Q4471150"  # exporters name folders and files after the patient


STATE_FILES = ("outbox.db", "dose.db", "qc.db", "folder-intake.db")  # and their -wal, -shm, -journal
OBJECT_FOLDERS = ("quarantine", "retained")


def _private_modes(workdir: Path) -> list[str]:
    """The state files (with their SQLite side files) and object folders (with their files) that are not 0600 /
    0700; fails when one of them is missing, so the check cannot pass by looking at nothing."""
    state = [p for p in workdir.iterdir() if p.name.startswith(STATE_FILES)]
    folders = [workdir / name for name in OBJECT_FOLDERS]
    assert {p.name for p in state} >= set(STATE_FILES) and all(f.is_dir() for f in folders)
    wrong = []
    for path in [*state, *folders, *(p for f in folders for p in f.iterdir())]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != (0o700 if path.is_dir() else 0o600):
            wrong.append(f"{path.relative_to(workdir.parent)} {mode:04o}")
    return wrong


def _state_leaks(workdir: Path, values: set[str]) -> dict[str, list[str]]:
    """Planted values in the bytes of every file in the state folder (SQLite files and their -wal/-shm included),
    except the quarantined and retained copies of the objects themselves."""
    found = {}
    for path in workdir.rglob("*"):
        if not path.is_file() or (path.suffix == ".dcm" and path.parent.name in ("quarantine", "retained")):
            continue
        leaks = leaks_in(path.read_bytes(), values)
        if leaks:
            found[str(path.relative_to(workdir))] = leaks
    return found


@pytest.mark.integration
def test_privacy_corpus_end_to_end(broker, subscriber, agent_factory, tmp_path):
    if STORESCU is None:
        pytest.fail("dcmtk's storescu is not installed; scripts/test.sh installs it (apt-get install dcmtk)")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    export = tmp_path / "export"
    export.mkdir()
    workdir = tmp_path / "agent"
    agent = agent_factory(
        broker.port, workdir,
        dicom={"ae_title": AGENT_AET, "allowed_calling_aets": [MODALITY_AET], "retain_raw_dir": str(workdir /
               "retained")},
        **{"dicom.folder": {"path": str(export), "settle_s": 0.3, "poll_s": 0.2}},
        dose={"summary_at": (now - timedelta(hours=3)).strftime("%H:%M")})
    wait_for(lambda: "DICOM listener" in agent.log() and "watching" in agent.log(), 20, "intakes up")
    port = tomllib.loads(agent.config.read_text())["dicom"]["port"]

    # The corpus twice: over C-STORE, and (new UIDs, so new events) through the watched folder, named after the
    # patient, with an unreadable file of the same name that goes to quarantine.
    sent = corpus(now.strftime("%Y%m%d%H%M%S"))
    by_folder = corpus(now.strftime("%Y%m%d%H%M%S"))
    files = tmp_path / "send"
    files.mkdir()
    for name, ds in sent.items():
        (files / f"{name}.dcm").write_bytes(to_bytes(ds))
    result = subprocess.run([STORESCU, "-aet", MODALITY_AET, "-aec", AGENT_AET, "127.0.0.1", str(port),
                             *sorted(map(str, files.glob("*.dcm")))], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    (export / EXPORT_NAME).mkdir()
    for name, ds in by_folder.items():
        (export / EXPORT_NAME / f"{EXPORT_NAME} {name}.dcm").write_bytes(to_bytes(ds))
    (export / f"{EXPORT_NAME} junk.dcm").write_bytes(b"not a dicom file " + PATIENT.name.encode())

    # Per corpus three images and a report of three events; the "typed" image carries a fixed (malformed)
    # Irradiation Event UID, so its second copy is the same exposure and counted once.
    events = 2 * (3 + 3) - 1
    wait_for(lambda: len(subscriber.snapshot("/exposure")) >= events, 30, f"{events} exposure events")
    wait_for(lambda: len(subscriber.snapshot("/dose-summary")) >= 2, 10, "both dose summaries")
    wait_for(lambda: len(subscriber.snapshot("/dose-alert")) >= 3, 10, "the deviation-index alerts")
    wait_for(lambda: list((workdir / "quarantine").glob("*.dcm")), 10, "the unreadable file quarantined")
    wait_for(lambda: not list(export.rglob("*.dcm")), 10, "the folder emptied")
    requester = Requester(broker.port, "xray/v1/test-site/xr-01").start()
    try:
        summary = wait_for(lambda: _answered(requester, "dose-summary"), 15, "the dose-summary reply")
    finally:
        requester.stop()
    wait_for(lambda: subscriber.snapshot("/summary"), 10, "the summary published")
    protocols = {p["protocol"] for p in summary["result"]["summary"]["protocols"]}
    assert {"Thorax PA", "Thorax", "Knee", "Abdomen AP", "Pelvis", "Fluoro"} <= protocols, protocols

    values = planted_values([*sent.values(), *by_folder.values()]) | {EXPORT_NAME}
    messages = subscriber.snapshot()
    assert {m.topic.rsplit("/", 1)[-1] for m in messages} >= {"exposure", "dose-summary", "dose-alert", "summary"}
    assert [(m.topic, leaks_in(m.payload, values)) for m in messages if leaks_in(m.payload, values)] == []
    screened_warnings = [w for m in subscriber.snapshot("/exposure") for w in m.json()["warnings"]]
    assert {w["field"] for w in screened_warnings} >= {"protocol", "body_part", "view", "station_name"}

    # every screened value is counted (the exposure warnings alone are a lower bound: duplicates add counts)
    screened = metric(agent, "xray_dicom_values_screened_total")
    assert screened is not None and screened >= len(screened_warnings), screened
    assert agent.terminate() == 0
    log = agent.log()
    assert "free text screened in" in log and "Invalid value for VR UI: …" in log
    assert leaks_in(log, values) == [], "the journal carries no patient data"
    assert _state_leaks(workdir, values) == {}
    assert list((workdir / "retained").glob("*.dcm")), "retained copies kept (they are the objects themselves)"
    assert _private_modes(workdir) == []


def _answered(requester: Requester, command: str) -> dict | None:
    """The first request may race the agent's SUBSCRIBE right after it connects: send again until answered."""
    try:
        reply = requester.reply(requester.send(command), timeout=1)
    except AssertionError:
        return None
    return reply if reply.get("ok") else None


def test_identifiers_come_from_every_identifying_attribute():
    other, request = Dataset(), Dataset()
    other.PatientID, request.AccessionNumber = "OTHX-4471", "REQX-5566"
    ds = make_dx(patient=PATIENT, extra={"OtherPatientIDsSequence": [other], "RequestAttributesSequence": [request],
                                         "OtherPatientNames": "Aliasova^Petra", "PatientBirthName": "Oldnamer",
                                         "PatientMotherBirthName": "Mumford"},
                 protocol="Knee OTHX-4471 REQX-5566 Aliasova Petra Oldnamer Mumford Alicja Bartholomew")
    assert extract(ds, CTX).events[0].protocol == "Knee"
