"""A session's rows -> its exposures (set technique + measured values + readings), the analysis input and the
`qc/session` payload. Read-only: agent/qc/sessions.py does the writing."""

from __future__ import annotations

from collections import Counter
from typing import Any

from agent.payloads.qc_session import (InstrumentRecord, QcSession, Review, SessionExposure, SessionReading,
                                       SetTechnique, XrayUnit)
from agent.qc.analysis import analyse
from agent.qc.limits import QcLimits
from agent.qc.matching import MODALITY_KEYS, measured_and_excluded, parse_time
from agent.qc.models import QcExposure, TestResult
from agent.qc.store import QcStore

META_KEYS = ("source", "confirmed", "event_ref", "dicom_reported")
READING_FIELDS = ("msg_id", "instrument_id", "driver", "measured_at", "quantities", "flags", "raw_frame",
                  "raw_frame_bytes")


def exposure_views(store: QcStore, session: dict[str, Any]) -> list[dict[str, Any]]:
    """Every exposure of a session in order, as JSON-ready dicts: number, measured_at, technique, measured,
    readings (each as published on qc/reading plus its increments)."""
    rows = store.query("SELECT * FROM exposures WHERE session_ref = ? ORDER BY number", (session["ref"],))
    readings = store.query("SELECT payload, increments, exposure FROM readings WHERE session_ref = ? "
                           "ORDER BY measured_at", (session["ref"],))
    order = {instrument: i for i, instrument in enumerate(session["instruments"])}
    by_exposure: dict[int, list[dict]] = {}
    for row in readings:
        reading = {key: row["payload"].get(key) for key in READING_FIELDS}
        reading["increments"] = row["increments"]
        by_exposure.setdefault(row["exposure"], []).append(reading)
    views = []
    for row in rows:
        group = sorted(by_exposure.get(row["number"], []), key=lambda r: order.get(r["instrument_id"], len(order)))
        technique = {**row["technique"], "source": row["source"], "confirmed": bool(row["confirmed"]),
                     "event_ref": row["event_ref"], "dicom_reported": row.get("dicom_technique") or {}}
        values, excluded = measured_and_excluded(group)
        flags = sorted({flag for reading in group for flag in reading.get("flags") or ()})
        views.append({"number": row["number"], "measured_at": row["measured_at"], "technique": technique,
                      "measured": values, "excluded": excluded, "flags": flags, "device": row.get("device") or {},
                      "readings": group})
    return views


def qc_exposures(views: list[dict[str, Any]]) -> list[QcExposure]:
    """The analysis input: set technique and measured values of each exposure. Only a confirmed technique is
    judged (21 CFR 1020.31(a) judges against the indicated technique; DICOM's values are a proposal until the
    technologist confirms or corrects them); the DICOM-reported DAP is a measurement of the modality and always used."""
    out = []
    for view in views:
        confirmed = view["technique"]["confirmed"] or view["technique"]["source"] is None
        technique = {k: v for k, v in view["technique"].items() if k not in META_KEYS
                     and (confirmed or k in MODALITY_KEYS)}
        out.append(QcExposure(**technique, **view["measured"], measured_at=parse_time(view["measured_at"]),
                              excluded=view.get("excluded", {}), technique_confirmed=confirmed))
    return out


def analysed(test_type: str, views: list[dict[str, Any]], limits: QcLimits) -> TestResult:
    """The verdict over the exposures so far."""
    return analyse(test_type, qc_exposures(views), limits)


def unit_identity(unit_id: str | None, views: list[dict[str, Any]]) -> dict[str, Any]:
    """The X-ray unit: the configured id, and per DICOM field the value most exposures carry (others as conflicts)."""
    out: dict[str, Any] = {"unit_id": unit_id or None, "conflicts": []}
    for key in ("manufacturer", "model", "serial_number", "station_name"):
        counts = Counter(v["device"][key] for v in views if v.get("device", {}).get(key))
        out[key] = counts.most_common(1)[0][0] if counts else None
        if len(counts) > 1:
            out["conflicts"].append(f"{key}: {', '.join(sorted(counts))}")
    return out


def session_payload(session: dict[str, Any], views: list[dict[str, Any]], result: TestResult, *, site: str,
                    room: str, finished_at: str, match_window_s: float) -> QcSession:
    """The qc/session message (and audit record) of a session being finished; msg_id is fixed per session and
    revision, so publishing it again after a crash is the same message, and a review is a new revision."""
    exposures = [SessionExposure(number=v["number"], measured_at=parse_time(v["measured_at"]),
                                 technique=SetTechnique(**v["technique"]), measured=v["measured"],
                                 excluded=v.get("excluded", {}), flags=v.get("flags", []),
                                 readings=[SessionReading(**r) for r in v["readings"]]) for v in views]
    details = session.get("details") or {}
    review = session.get("review")
    revision = int(review["revision"]) if review else 0
    msg_id = f"qcs-{session['ref']}" + (f"-r{revision}" if revision else "")
    return QcSession(msg_id=msg_id, site=site, room=room, session_ref=session["ref"],
                     test_type=session["test_type"], operator=session["operator"],
                     instruments=session["instruments"], started_at=parse_time(session["started_at"]),
                     finished_at=parse_time(finished_at), match_window_s=match_window_s, exposures=exposures,
                     result=result, unit=XrayUnit(**unit_identity(details.get("unit_id"), views)),
                     instrument_records=[InstrumentRecord(**r) for r in details.get("instruments", [])],
                     time_zone=details.get("time_zone"), revision=revision,
                     review=None if not review else Review(reviewed_by=review["reviewed_by"],
                                                           reviewed_at=parse_time(review["reviewed_at"]),
                                                           comment=review.get("comment", "")))
