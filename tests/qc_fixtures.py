"""Shared pieces of the in-process QC tests: a real outbox and qc.db in tmp_path, readings and DICOM events."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from agent.instruments.mapping import qc_reading
from agent.outbox import Outbox
from agent.payloads.exposure import ExposureEvent
from agent.qc.config import QcConfig
from agent.qc.sessions import QcSessions
from agent.qc.store import QcStore
from drivers.reading import Reading

INSTRUMENTS = {"kvp-1": "victoreen_4000m", "dap-1": "ptw_diamentor"}
T0 = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def make_qc(tmp_path, sink):
    """QcSessions on tmp_path/qc.db; several calls are restarts of the agent on the same files."""
    started = []

    def make(**cfg) -> QcSessions:
        qc = QcSessions(QcConfig(**cfg), QcStore(tmp_path / "qc.db"), sink, INSTRUMENTS)
        qc.start()
        started.append(qc)
        return qc
    yield make
    for qc in started:
        qc.stop()


def reading(seconds: float, instrument: str = "kvp-1", **quantities):
    quantities = quantities or {"kvp": 80.2, "air_kerma_ugy": 876.0, "exposure_time_ms": 100.0}
    raw = json.dumps(quantities).encode()
    read = Reading(instrument, quantities, raw=raw, wall_utc=T0 + timedelta(seconds=seconds))
    return qc_reading(read, driver=INSTRUMENTS[instrument], site="site", room="room")


def event(seconds: float, ref: str, **technique) -> ExposureEvent:
    technique = technique or {"kvp": 80.0, "exposure_mas": 10.0, "exposure_time_ms": 100.0}
    return ExposureEvent(msg_id=f"ev-{ref}", site="site", room="room", source="image", event_ref=ref,
                         acquired_at=T0 + timedelta(seconds=seconds), received_at=T0 + timedelta(seconds=seconds + 4),
                         **technique)


def published(box: Outbox, kind: str = "/qc/reading") -> list[dict]:
    return [json.loads(m.payload) for m in box.fetch_after(0, 1000) if m.topic.endswith(kind)]
