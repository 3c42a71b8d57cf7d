"""Fair shares of the outbox, end to end: a meter streaming frames on a real pty during a broker outage fills only the
readings share, and the modality's C-STOREs (real storescu) still get Success; once the broker is back everything
stored is delivered and the meter's readings are accepted again."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib

import pytest

from drivers.emulators.ludlum import Ludlum375Emulator
from tests.realparts import REPO, Mosquitto, free_port, wait_for
from tests.test_dicom_backpressure import AGENT_AET, EVENTS_PER_OBJECT, MODALITY_AET, dose_reports, \
    published_objects, storescu

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTBOX_BYTES = 1024 * 1024  # shares (defaults): dicom 55%, readings 25%


def counters(config) -> dict:
    out = subprocess.run([sys.executable, "-m", "agent", "outbox", "stats", "--json", "--config", str(config)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)["counters"] if out.returncode == 0 else {}


def test_streaming_meter_during_an_outage_cannot_starve_dicom(tmp_path, agent_factory):
    if shutil.which("storescu") is None:
        pytest.fail("dcmtk's storescu is not installed; scripts/test.sh installs it (apt-get install dcmtk)")
    files = dose_reports(tmp_path / "objects", 6)  # about 52 KB of payloads each: 6 fit the DICOM share easily
    meter = Ludlum375Emulator(link=str(tmp_path / "ttyL0"), every_s=0.002)
    port = free_port()  # nothing listens here yet: the broker is "down"
    try:
        agent = agent_factory(port, outbox={"max_bytes": OUTBOX_BYTES},
                              dicom={"ae_title": AGENT_AET, "allowed_calling_aets": [MODALITY_AET]},
                              instruments=[{"id": "area-1", "driver": "ludlum_375", "port": meter.start(),
                                            "settings": {"read_timeout_s": 0.02}}])
        wait_for(lambda: counters(agent.config).get("refusing:readings") == 1, 120,
                 "the readings share full (the meter keeps sending)", interval=0.5)
        assert not counters(agent.config).get("refusing:dicom")

        dicom_port = tomllib.loads(agent.config.read_text())["dicom"]["port"]
        outcome = storescu(dicom_port, files)
        assert set(outcome.values()) == {"0x0000"}, outcome  # Success, not 0xA700, while readings are refused

        broker = Mosquitto(tmp_path / "late-broker", port=port)
        subscriber = broker.start_with_subscriber()
        try:
            every_event = set(range(EVENTS_PER_OBJECT))
            wait_for(lambda: all(published_objects(subscriber).get(i) == every_event for i in range(len(files))), 60,
                     "every event of every report")
            wait_for(lambda: not counters(agent.config).get("refusing:readings"), 60, "readings accepted again",
                     interval=0.5)
            count = len(subscriber.snapshot("/qc/reading"))
            wait_for(lambda: len(subscriber.snapshot("/qc/reading")) > count + 10, 30, "new readings flowing")
            assert agent.terminate() == 0
        finally:
            subscriber.stop()
            broker.kill()
    finally:
        meter.stop()
