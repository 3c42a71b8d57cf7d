#!/usr/bin/env python3
"""Benchmark reading large X-Ray Radiation Dose SRs against dcmtk's `dsrdump`, measured in the same run.

Prints one JSON object and exits non-zero when a target is missed. Synthetic angiography reports of 145, 1,000 and
5,000 irradiation events (written by tests/dicom_factory.py as a vendor writes them: undefined-length sequences;
per event a plane, event type, UID, start time, protocol, target region, DAP, Dose (RP), reference point, SID,
source-isocenter distance, positioner angles, table positions, field area, focal spot, copper and aluminium filters;
pulsed fluoroscopy events with pulses, pulse width and mean kV/mA; acquisition runs with per-pulse kV, mA and pulse
width lists of 20 pulses each):
- extraction: the agent reading the file as the intake does (reading.read_file) and extracting every payload
  (extract), best of `--runs`; against `dsrdump FILE > /dev/null` (parse and print), best of `--runs`.
  ratio_vs_dsrdump = agent / dsrdump, target <= 1.0 for 145 and 1,000 events. For information, the same extraction
  over pydicom's full reading (dcmread: the reference reader) at 145 and 1,000 events.
- linear growth: microseconds per event at each size; growth = per-event cost at 5,000 / at 145 (target <= 1.5).
- C-STORE: the real agent (`python -m agent run`, fresh outbox, dose monitoring with its default rules, no broker
  needed) receiving a 1,000-event report from a pynetdicom SCU over loopback that sends the file's bytes as they are;
  time from the request to the response, best of `--runs` (target < 1 s).

Usage: python scripts/bench_rdsr.py [--sizes 145,1000,5000] [--runs 3] [--no-cstore]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import dicom_factory as factory  # noqa: E402

RATIO_TARGET = 1.0
CSTORE_TARGET_S = 1.0
GROWTH_TARGET = 1.5
AGENT_AET, MODALITY_AET = "XRAYAGENT", "BENCHSCU"
GEOMETRY = {"primary_angle": ("112011", "DCM", "Positioner Primary Angle"),
            "secondary_angle": ("112012", "DCM", "Positioner Secondary Angle"),
            "isocenter": ("113748", "DCM", "Distance Source to Isocenter"),
            "table_long": ("113751", "DCM", "Table Longitudinal Position"),
            "table_lat": ("113752", "DCM", "Table Lateral Position"),
            "table_height": ("113753", "DCM", "Table Height Position"),
            "field_area": ("113790", "DCM", "Collimated Field Area"),
            "focal_spot": ("113766", "DCM", "Focal Spot Size")}
PULSES_PER_RUN = 20


def _event(n: int, rng: random.Random) -> factory.DoseEvent:
    geometry = ((GEOMETRY["primary_angle"], (f"{rng.uniform(-90, 90):.1f}", "deg")),
                (GEOMETRY["secondary_angle"], (f"{rng.uniform(-40, 40):.1f}", "deg")),
                (GEOMETRY["isocenter"], ("785", "mm")), (GEOMETRY["table_long"], (f"{rng.uniform(-500, 500):.0f}", "mm")),
                (GEOMETRY["table_lat"], (f"{rng.uniform(-50, 50):.0f}", "mm")),
                (GEOMETRY["table_height"], (f"{rng.uniform(-200, 0):.0f}", "mm")),
                (GEOMETRY["field_area"], (f"{rng.uniform(0.01, 0.09):.4f}", "m2")),
                (GEOMETRY["focal_spot"], ("0.6", "mm")))
    common = dict(started=f"20240105{10 + n // 3600 % 10:02d}{n // 60 % 60:02d}{n % 60:02d}",
                  plane=factory.PLANE_A if n % 2 else factory.PLANE_B, sid=(f"{rng.uniform(950, 1200):.0f}", "mm"),
                  dap=(f"{rng.uniform(1e-6, 1e-3):.6g}", "Gy.m2"), dose_rp=(f"{rng.uniform(1e-5, 1e-2):.6g}", "Gy"),
                  filters=(factory.MATERIALS["COPPER"], factory.MATERIALS["ALUMINUM"]), extra_nums=geometry,
                  target_region=("80891009", "SCT", "Heart"))
    if n % 5 < 3:  # pulsed fluoroscopy: mean values, pulses and one pulse width
        return factory.fluoro_event(**common, kvp=(f"{rng.uniform(65, 90):.1f}", "kV"),
                                    tube_current=(f"{rng.uniform(5, 40):.1f}", "mA"), exposure_time=None,
                                    pulses=rng.randint(50, 400), pulse_width=(f"{rng.uniform(4, 10):.1f}", "ms"))
    return factory.acquisition_event(  # an acquisition run: per-pulse kV, mA and pulse width
        **common, kind="acquisition", protocol="Coro 15 f/s",
        kvp=([f"{rng.uniform(70, 95):.1f}" for _ in range(PULSES_PER_RUN)], "kV"),
        tube_current=([f"{rng.uniform(200, 800):.0f}" for _ in range(PULSES_PER_RUN)], "mA"),
        pulse_width=([f"{rng.uniform(4, 8):.1f}" for _ in range(PULSES_PER_RUN)], "ms"),
        exposure_time=None, exposure=None, pulses=PULSES_PER_RUN)


def make_report(events: int, seed: int = 1) -> bytes:
    """A synthetic biplane angiography dose report with `events` irradiation events, as file bytes."""
    rng = random.Random(seed)
    items = [_event(n, rng) for n in range(events)]
    return factory.to_bytes(factory.make_rdsr(items, model="AngioMaster 9"))


def best_of(runs: int, work) -> float:
    """The shortest wall time of `runs` calls, seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def agent_extract(path: Path):
    from agent.dicom.extract import extract
    from agent.dicom.reading import read_file

    return extract(read_file(path), factory.make_context())


def reference_extract(path: Path):
    from pydicom import dcmread

    from agent.dicom.extract import extract

    return extract(dcmread(path, force=True, stop_before_pixels=True), factory.make_context())


def dsrdump(path: Path) -> None:
    subprocess.run(["dsrdump", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def measure_size(folder: Path, events: int, runs: int, with_reference: bool) -> dict:
    path = folder / f"rdsr-{events}.dcm"
    path.write_bytes(make_report(events))
    extraction = agent_extract(path)
    assert len(extraction.events) == events, "every irradiation event must be extracted"
    agent_s, dsrdump_s = best_of(runs, lambda: agent_extract(path)), best_of(runs, lambda: dsrdump(path))
    result = {"events": events, "file_bytes": path.stat().st_size, "agent_s": round(agent_s, 4),
              "dsrdump_s": round(dsrdump_s, 4), "ratio_vs_dsrdump": round(agent_s / dsrdump_s, 3),
              "agent_us_per_event": round(agent_s / events * 1e6, 1)}
    if with_reference:
        reference = reference_extract(path)
        assert [e.model_dump() for e in reference.events] == [e.model_dump() for e in extraction.events], \
            "the raw-bytes reader and pydicom must give identical events"
        result["pydicom_reference_s"] = round(best_of(1, lambda: reference_extract(path)), 4)
    return result


def cstore_time(folder: Path, events: int, runs: int) -> dict:
    """Response time of the real agent to one C-STORE of the report (best of runs), and whether it answered Success."""
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import XRayRadiationDoseSRStorage

    # This process is the modality: send the file's bytes as they are. pynetdicom's default decodes the file with
    # pydicom and encodes it again before sending, which is the SCU's cost, not the agent's.
    _config.STORE_SEND_CHUNKED_DATASET = True

    from tests.realparts import AgentProcess, free_port, write_agent_config

    paths = []
    for run in range(runs):  # a new report each time (new UIDs), written before the clock starts
        paths.append(folder / f"cstore-{events}-{run}.dcm")
        paths[-1].write_bytes(make_report(events, seed=run + 7))
    work = folder / "agent"
    config = write_agent_config(work, free_port(), dicom={"ae_title": AGENT_AET,
                                                          "allowed_calling_aets": [MODALITY_AET]})
    port = tomllib.loads(config.read_text())["dicom"]["port"]
    agent = AgentProcess(config).start()
    times, statuses = [], []
    try:
        ae = AE(ae_title=MODALITY_AET)
        ae.add_requested_context(XRayRadiationDoseSRStorage, ExplicitVRLittleEndian)  # as the files are written
        deadline = time.monotonic() + 30
        assoc = None
        while assoc is None or not assoc.is_established:
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent did not start: {agent.log()[-2000:]}")
            time.sleep(0.2)
            assoc = ae.associate("127.0.0.1", port, ae_title=AGENT_AET)
        try:
            for path in paths:
                start = time.perf_counter()
                status = assoc.send_c_store(path)
                times.append(time.perf_counter() - start)
                statuses.append(int(getattr(status, "Status", -1)))
        finally:
            assoc.release() if assoc.is_established else assoc.abort()
    finally:
        agent.terminate()
    return {"events": events, "cstore_response_s": round(min(times), 4), "all_runs_s": [round(t, 4) for t in times],
            "statuses": sorted(set(statuses))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="145,1000,5000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-cstore", action="store_true")
    args = parser.parse_args()
    if not shutil.which("dsrdump"):
        print("dsrdump (dcmtk) is not installed", file=sys.stderr)
        return 2
    sizes = [int(size) for size in args.sizes.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="bench-rdsr-"))
    try:
        results = [measure_size(folder, size, args.runs, with_reference=size <= 1000) for size in sizes]
        cstore = None if args.no_cstore else cstore_time(folder, 1000, args.runs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    smallest, largest = results[0], results[-1]
    growth = round(largest["agent_us_per_event"] / smallest["agent_us_per_event"], 3)
    checks = {"ratio_vs_dsrdump": all(r["ratio_vs_dsrdump"] <= RATIO_TARGET for r in results if r["events"] <= 1000),
              "linear_growth": growth <= GROWTH_TARGET}
    if cstore is not None:
        checks["cstore_under_1s"] = cstore["cstore_response_s"] < CSTORE_TARGET_S and cstore["statuses"] == [0]
    print(json.dumps({"sizes": results, "growth_per_event_largest_vs_smallest": growth, "cstore": cstore,
                      "targets": {"ratio_vs_dsrdump": RATIO_TARGET, "cstore_response_s": CSTORE_TARGET_S,
                                  "growth": GROWTH_TARGET}, "met": checks}, indent=2))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
