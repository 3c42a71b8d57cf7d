"""An emulated X-ray room for QC tests: a Victoreen kVp/dose meter and a DIAMENTOR DAP meter on real ptys, the real
agent (subprocess) with its DICOM listener and web server, dcmtk's storescu as the modality, and the agent's CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.config import load_config
from agent.web.credential import read_cli_token
from drivers.emulators.diamentor import DiamentorEmulator
from drivers.emulators.victoreen import VictoreenEmulator
from tests import dicom_factory as factory
from tests.realparts import REPO, Subscriber, wait_for

MODALITY_AET, AGENT_AET = "DR_ROOM3", "XRAYAGENT"
POLL_FAST = {"poll_interval_s": 0.05, "reply_timeout_s": 0.2, "read_timeout_s": 0.02}
TUBE_MA = 200.0
STORESCU = shutil.which("storescu")


class QcRoom:
    """Start with `start(agent_factory, broker_port)`; `expose()` makes one exposure seen by the meter(s) and the
    modality; `api()`/`cli()` talk to the agent like the page and a biomed would."""

    def __init__(self, workdir: Path, dap_meter: bool = False) -> None:
        if STORESCU is None:
            raise AssertionError("dcmtk's storescu is not installed; scripts/setup.sh installs it")
        self.workdir = workdir
        # Filter wheel position 4 reads 70-120 kV, the range these tests expose at (a kVp outside the filter's range
        # is flagged by the driver, and a flagged reading is not a measurement).
        self.victoreen = VictoreenEmulator(link=str(workdir / "ttyV0"), arm_delay_s=0.05, filter_position=4)
        self.diamentor = DiamentorEmulator(link=str(workdir / "ttyD0")) if dap_meter else None
        self.agent = None
        self.images = 0
        self._entries: list[dict] = []

    def instruments(self) -> list[dict]:
        """The [[instruments]] entries, emulators started (once: a restarted agent opens the same ports)."""
        if self._entries:
            return self._entries
        self._entries = [{"id": "kvp-1", "driver": "victoreen_4000m", "port": self.victoreen.start(),
                          "settings": POLL_FAST}]
        if self.diamentor is not None:
            self._entries.append({"id": "dap-1", "driver": "ptw_diamentor", "port": self.diamentor.start(),
                                  "settings": POLL_FAST})
        return self._entries

    def start(self, agent_factory, broker_port: int, **sections):
        """Start the agent; returns once its web API answers and every meter's port is open."""
        self.agent = agent_factory(broker_port, workdir=self.workdir / "agent", instruments=self.instruments(),
                                   dicom={"ae_title": AGENT_AET, "allowed_calling_aets": [MODALITY_AET]}, **sections)
        return self.wait_ready()

    def wait_ready(self):
        """Wait for the web API and for every instrument to be ok."""
        cfg = tomllib.loads(self.agent.config.read_text())
        self.web, self.dicom_port = f"http://127.0.0.1:{cfg['web']['port']}", cfg["dicom"]["port"]
        wait_for(lambda: self._instruments_ok(), 20, "the agent's QC API with every instrument ok", interval=0.1)
        return self.agent

    def _instruments_ok(self) -> bool:
        try:
            return all(i["state"] == "ok" for i in self.api("/api/qc/instruments")["instruments"])
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the emulators (the agent_factory stops the agent)."""
        for emulator in (self.victoreen, self.diamentor):
            if emulator is not None:
                emulator.stop()

    # ---- the agent's interfaces --------------------------------------------------------------------------------------
    def api(self, path: str, body: dict | None = None) -> dict:
        """GET (or POST a JSON body to) the agent's API, as a script on the room PC: with the local CLI credential
        the agent wrote (writes without a credential must come from the page, with its CSRF token)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        token = read_cli_token(load_config(self.agent.config))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.web + path, data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`python -m agent qc ARGS --config <the agent's config>`."""
        return subprocess.run([sys.executable, "-m", "agent", "qc", *args, "--config", str(self.agent.config)],
                              cwd=REPO, capture_output=True, text=True, timeout=30)

    def session(self, ref: str) -> dict:
        return self.api(f"/api/qc/sessions/{ref}")

    def confirm(self, ref: str) -> dict:
        """The technologist confirms every DICOM-proposed technique (one action)."""
        return self.api(f"/api/qc/sessions/{ref}/confirm", {})

    # ---- exposures ---------------------------------------------------------------------------------------------------
    def expose(self, ref: str, *, kvp: float, mas: float, kerma_ugy: float, measured_kvp: float | None = None,
               dap_gy_m2: float | None = None, dicom_dap_gy_m2: float | None = None,
               **image: str) -> dict:
        """One exposure: the meter(s) measure it and the modality sends its DX image (acquired now, with kVp, µAs,
        µs and DAP in the header); returns the exposure once the session shows it with its DICOM technique."""
        count = len(self.session(ref)["exposures"])
        acquired = datetime.now(timezone.utc)
        time_ms = mas / TUBE_MA * 1000
        if dap_gy_m2 is None:
            self.victoreen.expose(kvp=measured_kvp or kvp, air_kerma_ugy=kerma_ugy, exposure_time_ms=time_ms)
        else:
            self.diamentor.expose(dap_gy_m2=dap_gy_m2, exposure_time_ms=time_ms)
        self.send_image(acquired, kvp=kvp, mas=mas, time_ms=time_ms, dap_gy_m2=dicom_dap_gy_m2, **image)
        return wait_for(lambda: self._exposure_with_technique(ref, count + 1), 15, f"exposure {count + 1} of {ref} "
                        "with its DICOM technique", interval=0.05)

    def _exposure_with_technique(self, ref: str, number: int) -> dict | None:
        exposures = self.session(ref)["exposures"]
        if len(exposures) >= number and exposures[number - 1]["technique"]["source"] == "dicom":
            return exposures[number - 1]
        return None

    def send_image(self, acquired: datetime, *, kvp: float, mas: float, time_ms: float,
                   dap_gy_m2: float | None = None, **image: str) -> None:
        """storescu a DX image whose header carries this technique (DAP in dGy·cm²: 1 Gy·m² = 1e5 dGy·cm²); `image`:
        more header values by dicom_factory name (exposure_index ...)."""
        technique = {"kvp": f"{kvp:g}", "exposure_uas": round(mas * 1000), "exposure_mas": round(mas),
                     "exposure_time_us": f"{time_ms * 1000:.1f}", "exposure_time_ms": round(time_ms),
                     "tube_current_ua": f"{TUBE_MA * 1000:.0f}", "tube_current_ma": round(TUBE_MA)}
        if dap_gy_m2 is not None:
            technique["dap_dgy_cm2"] = f"{dap_gy_m2 * 1e5:.4f}"
        ds = factory.make_dx(acquisition_dt=acquired.strftime("%Y%m%d%H%M%S.%f"), **technique, **image)
        self.images += 1
        path = self.workdir / f"image-{self.images}.dcm"
        path.write_bytes(factory.to_bytes(ds))
        result = subprocess.run([STORESCU, "-nh", "-aet", MODALITY_AET, "-aec", AGENT_AET, "127.0.0.1",
                                 str(self.dicom_port), str(path)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr


@pytest.fixture
def room(tmp_path):
    """A QcRoom with both meters, emulators stopped afterwards (import this fixture into the test module)."""
    (tmp_path / "room").mkdir()
    qc_room = QcRoom(tmp_path / "room", dap_meter=True)
    yield qc_room
    qc_room.stop()


def published(sub: Subscriber, kind: str) -> list[dict]:
    """Bodies on topics ending in /kind, first delivery of each msg_id only."""
    seen, out = set(), []
    for m in sub.snapshot(f"/{kind}"):
        body = m.json()
        if body["msg_id"] not in seen:
            seen.add(body["msg_id"])
            out.append(body)
    return out


def session_message(sub: Subscriber, ref: str) -> dict:
    """Wait for the qc/session message of a session."""
    return wait_for(lambda: next((b for b in published(sub, "qc/session") if b["session_ref"] == ref), None), 15,
                    f"qc/session of {ref}")
