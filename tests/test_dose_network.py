"""Dose monitoring end to end: dcmtk's storescu sends a day of synthetic exposures to the real agent (shipped example
rules); mosquitto delivers exactly the expected alerts, each once, also after objects are sent again; a summary asked
for through `python -m agent.dose summary` matches figures computed here, independently, from what was sent."""

from __future__ import annotations

import math
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from agent.dicom.extract import ExtractContext, extract
from tests import dicom_factory as factory
from tests.realparts import REPO, Subscriber, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODALITY_AET, AGENT_AET = "DR_ROOM3", "XRAYAGENT"
STORESCU = shutil.which("storescu")
RULES_FILE = REPO / "config" / "dose-rules.example.toml"
# (protocol, body part, view, DAP range in dGy·cm² well below the shipped adult level)
EXAMS = {
    "chest": [("Thorax PA", "CHEST", "PA", (0.3, 0.9)), ("Thorax LAT", "CHEST", "LL", (1.0, 2.5))],
    "abdomen": [("Abdomen AP", "ABDOMEN", "AP", (8, 20))],
    "lspine": [("LWS AP", "LSPINE", "AP", (5, 12)), ("LWS LAT", "LSPINE", "LL", (8, 20))],
    "pelvis": [("Becken AP", "PELVIS", "AP", (6, 18))],
    "knee": [("Knie AP", "KNEE", "AP", (0.1, 0.3))],
}
FLUORO_PROTOCOL = "Fluoro 7.5 p/s"


@dataclass
class Sent:
    """One object of the day and what this test expects of it."""

    ds: object
    protocol: str
    events: list[dict] = field(default_factory=list)  # per exposure: dap_gy_m2, di, repeat
    alerts: list[tuple[str, str]] = field(default_factory=list)  # (rule, quantity) expected from this object
    path: Path | None = None


def di_of(ei: str | None, ei_t: str | None) -> float | None:
    return None if not ei or not ei_t else round(10 * math.log10(float(ei) / float(ei_t)), 2)


def band_of(di: float | None) -> str:
    """TG-116 bands as the shipped rules state them, all limits strict."""
    if di is None:
        return "unknown"
    return ("excessive" if di > 3 else "over" if di > 1 else "excessively-under" if di < -3
            else "under" if di < -1 else "normal")


def gy_m2(dgy_cm2: str) -> float:
    return float(Decimal(dgy_cm2) * Decimal("1e-5"))


def build_day(now: datetime) -> list[Sent]:
    """About 70 objects over the last 2.5 hours: routine exams with normal doses, planted DRL and DI excursions,
    paediatric chests, two repeats, DI unknown (no EI_T), and one escalating fluoroscopy study as cumulative RDSRs."""
    rng = random.Random(7)
    start = now - timedelta(minutes=150)
    clock = iter(start + timedelta(seconds=80 * i) for i in range(200))
    day: list[Sent] = []

    def dx(protocol, body_part, view, dap, *, study, ei="250", ei_t="250", age="045Y", esd=None, alerts=(),
           repeat=False):
        at = next(clock).strftime("%Y%m%d%H%M%S")
        ds = factory.make_dx(study_uid=study, protocol=protocol, body_part=body_part, view=view, dap_dgy_cm2=dap,
                             exposure_index=ei, target_exposure_index=ei_t, deviation_index=None,
                             entrance_dose_mgy=esd, acquisition_dt=at, patient=factory.Patient(age=age))
        day.append(Sent(ds, protocol, [{"dap": gy_m2(dap), "di": di_of(ei, ei_t), "repeat": repeat}], list(alerts)))
        return ds

    for i in range(30):
        exam = list(EXAMS)[i % len(EXAMS)]
        study = generate_uid()
        for protocol, body_part, view, (low, high) in EXAMS[exam]:
            ei = str(rng.randint(205, 305))  # DI within about -0.9 .. +0.9: normal
            dx(protocol, body_part, view, f"{rng.uniform(low, high):.3f}", study=study, ei=ei,
               age=f"0{rng.randint(20, 85):02d}Y")
    # Planted DRL excursions (adult levels: chest PA 0.1 Gy·cm² and 0.4 mGy, abdomen 2.5, lumbar LAT 2.5 Gy·cm²)
    dx("Thorax PA", "CHEST", "PA", "2.000", study=generate_uid(), alerts=[("chest-pa", "dap_gy_m2")])
    dx("Thorax PA", "CHEST", "PA", "0.600", study=generate_uid(), esd="0.65",
       alerts=[("chest-pa", "entrance_dose_mgy")])
    dx("Abdomen AP", "ABDOMEN", "AP", "31.000", study=generate_uid(), alerts=[("abdomen-ap", "dap_gy_m2")])
    dx("LWS LAT", "LSPINE", "LL", "28.500", study=generate_uid(), alerts=[("lumbar-spine-lat", "dap_gy_m2")])
    # Paediatric chests (3 years: level 0.025 Gy·cm²): one above, one below; the same DAP is fine for an adult
    dx("Thorax PA", "CHEST", "PA", "0.300", study=generate_uid(), age="003Y",
       alerts=[("paed-chest-ap-pa-1-5y", "dap_gy_m2")])
    dx("Thorax PA", "CHEST", "PA", "0.200", study=generate_uid(), age="003Y")
    # Deviation index: excessive and excessively under alert; over and under are only counted; no EI_T: unknown
    dx("Thorax PA", "CHEST", "PA", "0.500", study=generate_uid(), ei="560",
       alerts=[("deviation-index:excessive", "deviation_index")])
    dx("Becken AP", "PELVIS", "AP", "9.000", study=generate_uid(), ei="100",
       alerts=[("deviation-index:excessively-under", "deviation_index")])
    dx("Knie AP", "KNEE", "AP", "0.200", study=generate_uid(), ei="400")
    dx("Abdomen AP", "ABDOMEN", "AP", "12.000", study=generate_uid(), ei="150")
    dx("LWS AP", "LSPINE", "AP", "7.000", study=generate_uid(), ei="300", ei_t=None)
    dx("Knie AP", "KNEE", "AP", "0.150", study=generate_uid(), ei=None)
    # Two repeats: the same study, body part and view again 80 s later
    for protocol, body_part, view, dap in (("Thorax PA", "CHEST", "PA", "0.450"), ("Becken AP", "PELVIS", "AP", "9.5")):
        study = generate_uid()
        dx(protocol, body_part, view, dap, study=study)
        dx(protocol, body_part, view, dap, study=study, repeat=True)
    # An escalating fluoroscopy study, 0.8 Gy and 80 Gy·cm² per run, reported cumulatively after 2, 4, 6, 8 runs:
    # 1.6 / 3.2 / 4.8 / 6.4 Gy and 160 / 320 / 480 / 640 Gy·cm² cross 3 Gy + 300, then 4 Gy, then 5 Gy + 500.
    runs = [factory.fluoro_event(protocol=FLUORO_PROTOCOL, dose_rp=("0.8", "Gy"), dap=("0.008", "Gy.m2"),
                                 started=(start + timedelta(minutes=5 + 10 * i)).strftime("%Y%m%d%H%M%S"))
            for i in range(8)]
    # NCRP 168 steps (Ka,r 3 Gy then every 1; KAP 300 Gy·cm² then every 100) and SRDLs, at 1.6, 3.2, 4.8 and 6.4 Gy
    # (160, 320, 480, 640 Gy·cm²); at 6.4 Gy the patient's 12-month total passes the example's 5 Gy too
    crossing = {2: [],
                4: [("ncrp168-notify-kar", "study_dose_rp_gy"), ("ncrp168-notify-kap", "study_dap_gy_m2")],
                6: [("ncrp168-notify-kar", "study_dose_rp_gy"), ("ncrp168-notify-kap", "study_dap_gy_m2")],
                8: [("ncrp168-notify-kar", "study_dose_rp_gy"), ("ncrp168-srdl-kar", "study_dose_rp_gy"),
                    ("ncrp168-notify-kap", "study_dap_gy_m2"), ("ncrp168-srdl-kap", "study_dap_gy_m2"),
                    ("patient-kar-5gy-12-months", "patient_dose_rp_gy")]}
    reports = factory.make_cumulative_rdsrs(runs, counts=(2, 4, 6, 8), study_uid=generate_uid())
    for n, (report, count) in enumerate(zip(reports, (2, 4, 6, 8))):
        new_runs = [{"dap": 0.008, "di": None, "repeat": False}] * 2
        day.insert(10 + 15 * n, Sent(report, FLUORO_PROTOCOL, new_runs, crossing[count]))
    return day


ALERT_KINDS = ("notification-level", "deviation-index", "cumulative", "patient-cumulative")


def expected_summary(day: list[Sent]) -> dict:
    """The summary's figures, computed here from what was sent."""
    per: dict[str, list[dict]] = {}
    for sent in day:
        per.setdefault(sent.protocol, []).extend(sent.events)
    alerts_per: dict[str, dict[str, int]] = {}
    for sent in day:
        for rule, quantity in sent.alerts:
            kind = ("deviation-index" if quantity == "deviation_index"
                    else "cumulative" if quantity.startswith("study_")
                    else "patient-cumulative" if quantity.startswith("patient_") else "notification-level")
            alerts_per.setdefault(sent.protocol, dict.fromkeys(ALERT_KINDS, 0))[kind] += 1
    protocols = {}
    for protocol, events in per.items():
        daps = [e["dap"] for e in events]
        bands = [band_of(e["di"]) for e in events]
        protocols[protocol] = {
            "exposures": len(events), "median": statistics.median(daps),
            "p75": statistics.quantiles(daps, n=4, method="inclusive")[2] if len(daps) > 1 else daps[0],
            "repeats": sum(e["repeat"] for e in events),
            "bands": {b: bands.count(b) / len(bands) for b in set(bands)},
            "alerts": alerts_per.get(protocol, dict.fromkeys(ALERT_KINDS, 0)),
        }
    return protocols


def storescu(port: int, files: list[Path]) -> None:
    result = subprocess.run([STORESCU, "-nh", "-aet", MODALITY_AET, "-aec", AGENT_AET, "127.0.0.1", str(port),
                             *map(str, files)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_day_of_exposures_gives_exactly_the_expected_alerts_and_summary(broker, subscriber: Subscriber,
                                                                          agent_factory, tmp_path):
    if STORESCU is None:
        pytest.fail("dcmtk's storescu is not installed; scripts/test.sh installs it (apt-get install dcmtk)")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    summary_at = (now - timedelta(hours=3)).strftime("%H:%M")  # the day so far starts 3 h ago, before every object
    agent = agent_factory(broker.port, dicom={"ae_title": AGENT_AET, "allowed_calling_aets": [MODALITY_AET]},
                          dose={"rules_file": str(RULES_FILE), "summary_at": summary_at})
    wait_for(lambda: "DICOM listener" in agent.log(), 15, "DICOM listener up")
    port = tomllib.loads(agent.config.read_text())["dicom"]["port"]
    secret = (agent.config.parent / "site.key").read_text().strip().encode()
    ctx = ExtractContext(site="test-site", room="xr-01", secret=secret)

    day = build_day(now)
    folder = tmp_path / "day"
    folder.mkdir()
    for i, sent in enumerate(day):
        sent.path = folder / f"{i:03d}.dcm"
        sent.path.write_bytes(factory.to_bytes(sent.ds))
    storescu(port, [s.path for s in day])

    # exactly the expected alerts, each once, each from the object that should raise it
    expected = sorted((rule, quantity, _anchor(sent, rule, ctx)) for sent in day for rule, quantity in sent.alerts)
    wait_for(lambda: len(subscriber.snapshot("/dose-alert")) >= len(expected), 30, f"{len(expected)} dose alerts")
    exposure_count = sum(len(s.events) for s in day)
    wait_for(lambda: len(subscriber.snapshot("/exposure")) >= exposure_count, 30, "every exposure event")

    # the same objects again: a notification-level excursion and the report that crossed 3 Gy add nothing
    resend = [next(s for s in day if s.alerts[:1] == [("chest-pa", "dap_gy_m2")]),
              next(s for s in day if ("ncrp168-notify-kar", "study_dose_rp_gy") in s.alerts)]
    storescu(port, [s.path for s in resend])
    wait_for(lambda: "stored 0 new event(s) (2 already known)" in agent.log()
             and "stored 0 new event(s) (7 already known)" in agent.log(), 15, "re-sent objects deduplicated")

    # the tool reads the history file, which the agent commits about once a second
    wait_for(lambda: _history_rows(agent.config.parent / "dose.db") == exposure_count, 10, "history committed")
    subprocess.run([sys.executable, "-m", "agent.dose", "summary", "--config", str(agent.config)], cwd=REPO,
                   check=True, capture_output=True, timeout=60)
    summary = wait_for(lambda: subscriber.snapshot("/summary"), 15, "the summary")[0].json()

    received = [m.json() for m in subscriber.snapshot("/dose-alert")]
    assert len({a["msg_id"] for a in received}) == len(received), "an alert arrived twice"
    assert sorted((a["rule"], a["quantity"], a["study_ref"] if "cumulative" in a["alert"] else a["event_ref"])
                  for a in received) == expected
    assert len(subscriber.snapshot("/exposure")) == exposure_count
    _check_repeats(subscriber, day, ctx)
    _check_summary(summary, day)


def _history_rows(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM exposures").fetchone()[0]


def _anchor(sent: Sent, rule: str, ctx: ExtractContext) -> str:
    payloads = extract(factory.roundtrip(sent.ds), ctx)
    return payloads.events[0].study_ref if rule.startswith(("ncrp", "patient")) else payloads.events[0].event_ref


def _check_repeats(subscriber: Subscriber, day: list[Sent], ctx: ExtractContext) -> None:
    by_ref = {m.json()["event_ref"]: m.json() for m in subscriber.snapshot("/exposure")}
    repeats = [i for i, s in enumerate(day) if any(e["repeat"] for e in s.events)]
    assert len(repeats) == 2
    for i in repeats:
        earlier = extract(factory.roundtrip(day[i - 1].ds), ctx).events[0].event_ref
        this = extract(factory.roundtrip(day[i].ds), ctx).events[0].event_ref
        assert by_ref[this]["repeat_of"] == earlier
    assert sum(1 for e in by_ref.values() if e.get("repeat_of")) == 2


def _check_summary(summary: dict, day: list[Sent]) -> None:
    want = expected_summary(day)
    total = sum(p["exposures"] for p in want.values())
    assert summary["schema"] == "xray.summary/1" and summary["trigger"] == "request"
    assert summary["exposures"] == total and summary["repeats"] == 2
    assert summary["repeat_rate"] == pytest.approx(2 / total)
    assert summary["alerts"] == {kind: sum(p["alerts"][kind] for p in want.values())
                                 for kind in ALERT_KINDS}
    got = {p["protocol"]: p for p in summary["protocols"]}
    assert set(got) == set(want)
    for protocol, figures in want.items():
        p = got[protocol]
        assert p["exposures"] == figures["exposures"] and p["with_dap"] == figures["exposures"], protocol
        assert p["dap_median_gy_m2"] == pytest.approx(figures["median"]), protocol
        assert p["dap_p75_gy_m2"] == pytest.approx(figures["p75"]), protocol
        assert p["repeats"] == figures["repeats"], protocol
        assert p["repeat_rate"] == pytest.approx(figures["repeats"] / figures["exposures"]), protocol
        assert {b: s for b, s in p["deviation_index_bands"].items() if s} == pytest.approx(figures["bands"]), protocol
        assert p["alerts"] == figures["alerts"], protocol
    shares = summary["deviation_index_bands"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["unknown"] == pytest.approx((8 + 2) / total)  # fluoroscopy runs and the two without EI / EI_T
