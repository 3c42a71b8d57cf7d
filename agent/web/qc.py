"""The QC page and its JSON API (/qc, /api/qc/...), a blueprint on the agent's web app.

The page is static HTML + one script that polls the API every second; the CLI (`xray-agent qc ...`) uses the same
API. Writes are POSTs with a JSON body, and the app's access rules (agent/web/access.py: Host check, sign-in, same
origin and the page's CSRF token on every browser write) apply here too, so another web page open on the room PC
cannot start or finish sessions behind the technologist.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, render_template, request

from agent.qc.models import TEST_TYPES
from agent.qc.sessions import QcError, QcSessions

EXTENSION = "xray_agent_qc"
TEST_LABELS = {
    "reproducibility": "Reproducibility (air kerma)",
    "linearity_mas": "mAs linearity",
    "linearity_ma": "mA linearity",
    "kvp_accuracy": "kVp accuracy",
    "timer_accuracy": "Exposure time accuracy",
    "hvl": "Half-value layer",
    "dap_agreement": "DAP agreement (meter vs DICOM)",
    "fluoro_max_air_kerma_rate": "Fluoroscopy: maximum air-kerma rate",
    "fluoro_display_accuracy": "Fluoroscopy: displayed air kerma accuracy",
    "fluoro_kvp": "Fluoroscopy: kVp accuracy",
    "fluoro_hvl": "Fluoroscopy: half-value layer",
    "mammo_phantom_dose": "Mammography: phantom dose (AGD)",
    "mammo_kvp": "Mammography: kVp accuracy and reproducibility",
    "mammo_hvl": "Mammography: half-value layer",
    "mammo_output_reproducibility": "Mammography: output reproducibility",
    "aec_reproducibility": "AEC reproducibility",
    "aec_thickness_tracking": "AEC thickness tracking",
}
assert set(TEST_LABELS) == set(TEST_TYPES), "every test type needs a label on the page"

bp = Blueprint("qc", __name__, template_folder="templates", static_folder="static", static_url_path="/qc/static")


@bp.app_template_filter("local")
def _local(iso: str | None, zone: str | None = None) -> str:
    """A stored time in the session's zone with its offset: 2025-03-04 11:00:05 +01:00."""
    from agent.qc.pdf import local_time

    return local_time(iso, zone)


@bp.app_template_filter("inputs")
def _inputs(inputs: dict) -> str:
    """A criterion's inputs in one line, numbers to 4 significant digits."""
    from agent.qc.pdf import format_inputs

    return format_inputs(inputs)


def register_qc(app: Flask, qc: QcSessions) -> None:
    """Add the QC page and API to the app; the session service is found in app.extensions[EXTENSION]."""
    app.extensions[EXTENSION] = qc
    app.register_blueprint(bp)


def _qc() -> QcSessions:
    return current_app.extensions[EXTENSION]


@bp.errorhandler(QcError)
def _qc_error(exc: QcError):
    return jsonify(error=str(exc)), exc.status


def _body() -> dict:
    """The JSON object of a write request; 415/400 otherwise (see the module docstring on why JSON only)."""
    if not request.is_json:
        raise QcError(415, "send the request body as JSON (Content-Type: application/json)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise QcError(400, "the request body must be a JSON object")
    return body


# ---- pages -----------------------------------------------------------------------------------------------------------
@bp.get("/qc")
def page():
    """The QC page of this room."""
    cfg = current_app.extensions["xray_agent"].cfg
    return render_template("qc.html", site=cfg.site.id, room=cfg.site.room)


@bp.get("/qc/report/<ref>")
def report(ref: str):
    """Print-friendly report of one session (the audit record once finished)."""
    qc, cfg = _qc(), current_app.extensions["xray_agent"].cfg
    try:
        session = qc.session(ref)
    except QcError:
        abort(404)
    return render_template("qc_report.html", s=session, site=cfg.site.id, room=cfg.site.room,
                           label=TEST_LABELS.get(session["test_type"], session["test_type"]))


@bp.get("/qc/report/<ref>.pdf")
def report_pdf(ref: str):
    """The report as a PDF file (Download PDF)."""
    from agent.qc.pdf import render_pdf  # fpdf2 only when a PDF is asked for

    qc, cfg = _qc(), current_app.extensions["xray_agent"].cfg
    try:
        session = qc.session(ref)
    except QcError:
        abort(404)
    data = render_pdf(session, site=cfg.site.id, room=cfg.site.room,
                      label=TEST_LABELS.get(session["test_type"], session["test_type"]))
    return Response(data, mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="qc-{ref}.pdf"'})


# ---- API -------------------------------------------------------------------------------------------------------------
@bp.get("/api/qc/overview")
def overview():
    """Everything the page shows besides one session: test types, instruments and their live state, open and
    recent sessions."""
    qc = _qc()
    open_sessions = qc.sessions("open")
    return jsonify(test_types=[{"id": t, "label": TEST_LABELS[t]} for t in TEST_LABELS],
                   instruments=_instruments(open_sessions), open=open_sessions, recent=qc.sessions("closed"),
                   due=qc.due())


@bp.get("/api/qc/due")
def due():
    """The room's QC schedule: per configured test, its status (ok, due, overdue), due date and last pass."""
    return jsonify(tests=_qc().due())


@bp.get("/api/qc/instruments")
def instruments():
    """The configured instruments, their live state and the open session each is in."""
    return jsonify(instruments=_instruments(_qc().sessions("open")))


def _instruments(open_sessions: list[dict]) -> list[dict]:
    view, qc = current_app.extensions["xray_agent"], _qc()
    live = {s.device_id: s for s in view.board.snapshot(view.cfg.site.id, view.cfg.site.room)}
    busy = {i: s["ref"] for s in open_sessions for i in s["instruments"]}
    out = []
    for device_id, driver in qc.instruments.items():
        status = live.get(device_id)
        out.append({"id": device_id, "driver": driver, "session": busy.get(device_id),
                    "state": status.state if status else "unknown",
                    "last_reading_age_s": status.last_reading_age_s if status else None,
                    "last_error": status.last_error if status else None})
    return out


@bp.get("/api/qc/sessions")
def sessions():
    """?state=open|closed|all (default all), newest first."""
    state = request.args.get("state", "all")
    if state not in ("open", "closed", "all"):
        raise QcError(400, "state: open, closed or all")
    return jsonify(sessions=_qc().sessions(None if state == "all" else state))


@bp.post("/api/qc/sessions")
def start():
    """Start a test: {"test_type", "instruments": [...], "operator"}."""
    body = _body()
    session = _qc().open_session(body.get("test_type", ""), body.get("instruments", []), body.get("operator", ""))
    return jsonify(session), 201


@bp.get("/api/qc/sessions/<ref>")
def session(ref: str):
    """One session: exposures (set technique, measured values, readings) and the verdict so far."""
    return jsonify(_qc().session(ref))


@bp.post("/api/qc/sessions/<ref>/exposures/<int:number>/technique")
def technique(ref: str, number: int):
    """Confirm ({}), correct or enter the set technique of one exposure: {"set_kvp": 80, "set_mas": 10, ...}."""
    return jsonify(_qc().set_technique(ref, number, _body()))


@bp.post("/api/qc/sessions/<ref>/confirm")
def confirm(ref: str):
    """Confirm every DICOM-proposed technique of the session not yet confirmed, in one action."""
    _body()
    return jsonify(_qc().confirm_all(ref))


@bp.post("/api/qc/sessions/<ref>/finish")
def finish(ref: str):
    """Finish with the verdict, keep the audit record and publish it on qc/session."""
    _body()
    return jsonify(_qc().finish(ref))


@bp.post("/api/qc/sessions/<ref>/review")
def review(ref: str):
    """A physicist's sign-off of a finished session: {"reviewed_by": name, "comment": text}; published as an update
    of the session record."""
    body = _body()
    return jsonify(_qc().review(ref, body.get("reviewed_by", ""), body.get("comment", "")))


@bp.post("/api/qc/sessions/<ref>/discard")
def discard(ref: str):
    """Abandon the session (kept locally, not published)."""
    _body()
    return jsonify(_qc().discard(ref))


@bp.get("/api/qc/sessions/<ref>/record")
def record(ref: str):
    """The audit record of a finished session: the qc/session payload as published."""
    found = _qc().record(ref)
    if found is None:
        raise QcError(404, f"session {ref} has no audit record (only finished sessions have one)")
    return jsonify(found)
