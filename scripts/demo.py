#!/usr/bin/env python3
"""Run the agent's main job on this machine, as in a real room but with emulated hardware:

- a local mosquitto broker;
- three emulated instruments on pseudo-terminals: a Victoreen 4000M+ kVp meter and a PTW DIAMENTOR DAP meter that
  see every exposure, and a Ludlum 375 area monitor pushing a reading every 2 s;
- an emulated modality that, for each exposure, sends a DX image with the technique in its header to the agent's
  DICOM listener with dcmtk's storescu (as a real modality's extra C-STORE destination would);
- the agent itself (`xray-agent run`) with the example dose rules, and a subscriber that prints every message that
  arrives as one readable line (dose alerts and summaries: what, which exam, value against level);
- the second exposure (and every seventh after it) is a wrong-technique one: high mAs, so its DAP passes the chest
  notification level and its deviation index is excessive; after --report-after seconds the day's dose summary and
  the DRL audit of the month are asked for, as a physicist would.

Everything lives in .demo/ and stops cleanly on Ctrl-C (or after --duration seconds).
Usage: python scripts/demo.py [--duration SECONDS] [--every SECONDS] [--port PORT] [--report-after SECONDS]
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pydicom import Dataset  # noqa: E402
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from agent.dose.readable import alert_line, audit_lines, summary_line  # noqa: E402
from drivers.emulators import EMULATORS  # noqa: E402
from tests.realparts import AgentProcess, Mosquitto, Received, Subscriber, free_port, write_agent_config  # noqa: E402

DEMO = REPO / ".demo"
SITE, ROOM = "demo-site", "xr-01"
MODALITY_AET, AGENT_AET = "DEMO_DR", "XRAYAGENT"
DOSE_RULES = REPO / "config" / "dose-rules.example.toml"
# (body part, view, kVp, mAs, field area cm²): a few everyday projections
TECHNIQUES = [("CHEST", "PA", 120, 2.0, 1400), ("CHEST", "LL", 125, 4.0, 1400), ("HAND", "PA", 55, 1.6, 400),
              ("KNEE", "AP", 65, 5.0, 500), ("ABDOMEN", "AP", 80, 20.0, 1200)]
WRONG_TECHNIQUE = ("CHEST", "PA", 120, 12.0, 1400)  # 6x the mAs: DAP above the notification level, DI about +7.8
WRONG_EVERY = 7  # the 2nd, 9th, 16th ... exposure


def sample_dx(body: str, view: str, kvp: float, mas: float, dap_gy_m2: float, ei: float) -> Dataset:
    """A DX image header as a DR system writes it (tiny pixel data: the agent never reads pixels)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.Modality = DigitalXRayImageStorageForPresentation, "DX"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Demo^Patient", "DEMO-0001", "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.IrradiationEventUID = generate_uid(), generate_uid(), generate_uid()
    now = datetime.now()
    ds.StudyDate = ds.AcquisitionDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.AcquisitionTime = now.strftime("%H%M%S.%f")
    ds.Manufacturer, ds.ManufacturerModelName, ds.StationName = "DemoVendor", "DemoDR 1", "XR01"
    ds.PresentationIntentType, ds.BodyPartExamined, ds.ViewPosition = "FOR PRESENTATION", body, view
    ds.ProtocolName = f"{body} {view}"
    ds.KVP, ds.ExposureInuAs, ds.Exposure = f"{kvp:g}", round(mas * 1000), max(1, round(mas))
    ds.ExposureTime, ds.ImageAndFluoroscopyAreaDoseProduct = round(mas * 10), f"{dap_gy_m2 * 1e5:.5f}"  # dGy·cm²
    ds.ExposureIndex, ds.TargetExposureIndex, ds.DistanceSourceToDetector = f"{ei:.0f}", "400", "1800"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 4, 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes(32)
    return ds


class Room:
    """Takes an exposure now and then: the meters on the table see it and the modality sends its image."""

    def __init__(self, emulators: dict, dicom_port: int, every_s: float):
        self.emulators, self.dicom_port, self.every_s = emulators, dicom_port, every_s
        self.storescu = shutil.which("storescu")
        self.rng = random.Random()
        self.count = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.every_s):
            self.expose()

    def expose(self) -> None:
        self.count += 1
        wrong = self.count % WRONG_EVERY == 2
        body, view, kvp, mas, area_cm2 = WRONG_TECHNIQUE if wrong else self.rng.choice(TECHNIQUES)
        measured_kvp = kvp * self.rng.uniform(0.97, 1.03)
        air_kerma_ugy = 0.1 * kvp ** 2 / 100 * mas * self.rng.uniform(0.95, 1.05)  # ~ kVp² · mAs at 1 m
        dap_gy_m2 = air_kerma_ugy * 1e-6 * area_cm2 * 1e-4
        self.emulators["kvp-meter"].expose(kvp=measured_kvp, air_kerma_ugy=air_kerma_ugy, exposure_time_ms=mas * 10)
        self.emulators["dap-meter"].expose(dap_gy_m2=dap_gy_m2, exposure_time_ms=mas * 10)
        ei = 400 * (mas / 2.0 if wrong else self.rng.uniform(0.6, 1.6))  # EI follows the detector dose
        self.send(sample_dx(body, view, kvp, mas, dap_gy_m2, ei))

    def send(self, ds: Dataset) -> None:
        path = DEMO / "modality" / f"{ds.SOPInstanceUID}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        if self.storescu:
            subprocess.run([self.storescu, "-aet", MODALITY_AET, "-aec", AGENT_AET, "127.0.0.1", str(self.dicom_port),
                            str(path)], capture_output=True, timeout=30)
        path.unlink(missing_ok=True)


def show(message: Received) -> None:
    """One line per message, the way a dashboard developer wants to see them."""
    data = message.json()
    kind = message.topic.split(f"/{ROOM}/", 1)[-1]
    if kind == "exposure":
        detail = (f"{data['protocol']:<11} {data['kvp']:>4.0f} kV {data['exposure_mas']:>5.2f} mAs  "
                  f"DAP {data['dap_gy_m2']:.2e} Gy·m²  EI {data['exposure_index']:.0f}  DI {data['deviation_index']:+.1f}")
    elif kind == "qc/reading":
        values = ", ".join(f"{k} {v:.4g}" for k, v in data["quantities"].items())
        detail = f"{data['instrument_id']:<10} {values}" + (f"  flags {data['flags']}" if data["flags"] else "")
    elif kind.startswith("equipment/"):
        detail = f"{data['device_id']:<10} {data['state']} ({data.get('port') or '-'})"
    elif kind == "health":
        detail = (f"cpu {data['cpu_percent']:.0f}%  agent rss {data['agent_rss_bytes'] / 2**20:.0f} MB  "
                  f"outbox {data['outbox_depth']} undelivered  clock {data['clock_sync']}")
    elif kind == "dose-alert":
        detail = alert_line(data)
    elif kind == "summary":
        detail = summary_line(data)
    elif kind == "drl-audit":
        detail = "\n".join(audit_lines(data))
    elif kind == "status":
        detail = f"online={data['online']} reason={data['reason']} version={data['version']}"
    else:
        detail = message.payload.decode()[:110]
    print(f"{datetime.now():%H:%M:%S}  {kind:<22} {detail}", flush=True)


def ask_for_reports(config: Path) -> None:
    """The day's dose summary and the month's DRL audit, stored by the running agent's outbox and published."""
    print(f"{datetime.now():%H:%M:%S}  ==> asking for the dose summary and the DRL audit", flush=True)
    for args in (["-m", "agent.dose", "summary"], ["-m", "agent", "drl-audit"]):
        subprocess.run([sys.executable, *args, "--config", str(config)], cwd=REPO, capture_output=True, timeout=60)


def start_emulators() -> dict:
    """The room's instruments on ptys, each reachable through a stable link in .demo/dev (like /dev/serial/by-id)."""
    dev = DEMO / "dev"
    dev.mkdir(parents=True, exist_ok=True)
    emulators = {"kvp-meter": EMULATORS["victoreen_4000m"](link=str(dev / "victoreen"), arm_delay_s=0.2),
                 "dap-meter": EMULATORS["ptw_diamentor"](link=str(dev / "diamentor"), unit=3),  # µGy·m²
                 "area-monitor": EMULATORS["ludlum_375"](link=str(dev / "ludlum"), every_s=2.0, random_mode=True)}
    for emulator in emulators.values():
        emulator.start()
    return emulators


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)")
    parser.add_argument("--port", type=int, default=0, help="broker port (default: a free one)")
    parser.add_argument("--every", type=float, default=4.0, help="seconds between exposures")
    parser.add_argument("--report-after", type=float, default=40.0,
                        help="ask for the dose summary and the DRL audit after this many seconds (0: never)")
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    port = args.port or free_port()
    broker = Mosquitto(DEMO / "broker", port=port).start()
    print(f"==> mosquitto on 127.0.0.1:{port} (state in {DEMO})")
    emulators = start_emulators()
    print("==> emulated instruments: " + ", ".join(f"{k} ({e.link})" for k, e in emulators.items()))
    drivers = {"kvp-meter": "victoreen_4000m", "dap-meter": "ptw_diamentor", "area-monitor": "ludlum_375"}
    instruments = [{"id": k, "driver": drivers[k], "port": emulators[k].link} for k in drivers]
    config = write_agent_config(DEMO / "agent", port, instruments=instruments, site={"id": SITE, "room": ROOM},
                                dicom={"ae_title": AGENT_AET, "allowed_calling_aets": [MODALITY_AET]},
                                dose={"rules_file": str(DOSE_RULES)})
    agent = AgentProcess(config).start()
    print(f"==> agent: {config} (log: {agent.log_path})")
    subscriber = Subscriber(port, topic=f"xray/v1/{SITE}/{ROOM}/#", client_id="demo-subscriber")
    subscriber.client.on_message = lambda c, u, msg: show(Received.from_paho(msg))
    subscriber.start()
    settings = tomllib.loads(config.read_text())
    dicom_port = settings["dicom"]["port"]
    print(f"==> QC page: http://127.0.0.1:{settings['web']['port']}/qc   (or: xray-agent qc list --config {config})")
    room = Room(emulators, dicom_port, args.every)
    print(f"==> an exposure every {args.every:g} s: meters measure it, the modality sends its image. Ctrl-C stops.")
    threading.Thread(target=room.run, args=(stop,), daemon=True).start()
    started = time.monotonic()
    deadline = started + args.duration if args.duration else None
    report_at = started + args.report_after if args.report_after else None
    while not stop.wait(0.2):
        if deadline and time.monotonic() > deadline:
            stop.set()
        if report_at and time.monotonic() > report_at:
            report_at = None
            ask_for_reports(config)
        if agent.proc.poll() is not None:
            print(f"agent exited with status {agent.proc.returncode}; see {agent.log_path}", file=sys.stderr)
            stop.set()
    print("==> stopping")
    rc = agent.terminate() if agent.proc.poll() is None else agent.proc.returncode
    time.sleep(0.3)  # let the offline status arrive
    subscriber.stop()
    for emulator in emulators.values():
        emulator.stop()
    broker.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
