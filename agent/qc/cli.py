"""`xray-agent qc start|status|confirm|finish|discard|list|technique|due`: QC sessions from a terminal, via the agent.

Output is for a biomed at a terminal: a table of exposures, set technique next to what the meter measured, and the
verdict with each criterion. Exit status 0 on success, 1 when the agent cannot do it (the message says why), 2 for a
config that cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.config import ConfigError, load_config
from agent.qc.client import ClientError, QcClient
from agent.qc.models import TEST_TYPES

COLUMNS = (  # (heading, where, key, scale): the exposure table, set technique then measured values
    ("#", None, "number", 1), ("time", None, "measured_at", 1),
    ("set kV", "technique", "set_kvp", 1), ("set mA", "technique", "set_ma", 1),
    ("set mAs", "technique", "set_mas", 1), ("set ms", "technique", "set_time_ms", 1),
    ("DICOM DAP µGy·m²", "technique", "dicom_dap_gy_m2", 1e6),
    ("| kVp", "measured", "kvp", 1), ("kerma µGy", "measured", "air_kerma_ugy", 1),
    ("time ms", "measured", "exposure_time_ms", 1), ("HVL mm", "measured", "hvl_mm_al", 1),
    ("DAP µGy·m²", "measured", "dap_gy_m2", 1e6), ("technique", "technique", "source", 1),
    ("meter flags", None, "flags", 1),
)
TECHNIQUE_OPTIONS = (("kvp", "set_kvp", "kV"), ("ma", "set_ma", "mA"), ("mas", "set_mas", "mAs"),
                     ("ms", "set_time_ms", "exposure time, ms"), ("sid", "sid_mm", "source-image distance, mm"),
                     ("filtration", "filtration_mm_al", "filtration, mm Al"),
                     ("field-area", "field_area_cm2", "field area at the meter, cm²"),
                     ("dicom-dap", "dicom_dap_gy_m2", "DAP the modality reported, Gy·m²"),
                     ("high-level", "high_level_control", "fluoroscopy: 1 if the high-level control was on, else 0"),
                     ("displayed-rate", "displayed_air_kerma_rate_mgy_per_min",
                      "fluoroscopy: air-kerma rate the unit displayed, mGy/min"),
                     ("displayed-kerma", "displayed_air_kerma_mgy",
                      "fluoroscopy: cumulative air kerma the unit displayed, mGy"),
                     ("phantom-thickness", "phantom_thickness_mm", "AEC: phantom thickness, mm"))


def add_qc_commands(sub, default_config: Path) -> None:
    """The `qc` command and its actions, on the top-level subparsers."""
    p = sub.add_parser("qc", help="QC sessions: start a test, follow its exposures and verdict, finish or discard")
    qsub = p.add_subparsers(dest="qc_command", required=True, metavar="ACTION")
    s = qsub.add_parser("start", help="start a QC test on one or more instruments")
    s.add_argument("--test", required=True, choices=TEST_TYPES, help="test type")
    s.add_argument("--instrument", required=True, action="append", help="instrument id (repeat for several)")
    s.add_argument("--operator", required=True, help="your initials or staff id")
    s.set_defaults(func=cmd_start)
    for name, func, text in (("status", cmd_status, "exposures and verdict of a session"),
                             ("confirm", cmd_confirm, "confirm every DICOM-proposed technique of a session"),
                             ("finish", cmd_finish, "finish a session: verdict, audit record, publish on qc/session"),
                             ("discard", cmd_discard, "discard a session (kept locally, not published)")):
        s = qsub.add_parser(name, help=text)
        s.add_argument("session", nargs="?", help="session id (default: the only open session)")
        s.set_defaults(func=func)
    s = qsub.add_parser("technique", help="confirm, correct or enter the set technique of one exposure")
    s.add_argument("number", type=int, help="exposure number (the # column)")
    s.add_argument("--session", help="session id (default: the only open session)")
    for flag, _key, text in TECHNIQUE_OPTIONS:
        s.add_argument(f"--{flag}", type=float, metavar="VALUE", help=text)
    s.set_defaults(func=cmd_technique)
    s = qsub.add_parser("list", help="open and recent sessions")
    s.set_defaults(func=cmd_list)
    s = qsub.add_parser("due", help="the room's QC schedule: what is due or overdue ([[qc.schedule]])")
    s.set_defaults(func=cmd_due)
    for action in qsub.choices.values():
        action.add_argument("--config", type=Path, default=default_config)
        action.add_argument("--json", action="store_true", help="print the agent's JSON answer")


def run(args: argparse.Namespace, action) -> int:
    """Load the config, call `action(client, args)`, print errors plainly."""
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        return action(QcClient(cfg), args)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _show(args: argparse.Namespace, session: dict[str, Any]) -> int:
    print(json.dumps(session, indent=2) if args.json else render_session(session))
    return 0


def _resolve(client: QcClient, ref: str | None) -> str:
    if ref:
        return ref
    open_sessions = client.get("/api/qc/sessions?state=open")["sessions"]
    if len(open_sessions) == 1:
        return open_sessions[0]["ref"]
    if not open_sessions:
        raise ClientError("no open QC session; start one with: xray-agent qc start --test TYPE --instrument ID "
                          "--operator INITIALS")
    refs = ", ".join(s["ref"] for s in open_sessions)
    raise ClientError(f"{len(open_sessions)} sessions are open ({refs}); name one")


def cmd_start(args: argparse.Namespace) -> int:
    def action(client: QcClient, args: argparse.Namespace) -> int:
        session = client.post("/api/qc/sessions", {"test_type": args.test, "instruments": args.instrument,
                                                   "operator": args.operator})
        if args.json:
            return _show(args, session)
        print(f"started {session['test_type']} session {session['ref']} on {', '.join(session['instruments'])} "
              f"(operator {session['operator']}); take the exposures, follow them with: xray-agent qc status")
        return 0
    return run(args, action)


def cmd_status(args: argparse.Namespace) -> int:
    return run(args, lambda client, a: _show(a, client.get(f"/api/qc/sessions/{_resolve(client, a.session)}")))


def cmd_confirm(args: argparse.Namespace) -> int:
    return run(args, lambda client, a: _show(a, client.post(f"/api/qc/sessions/{_resolve(client, a.session)}/confirm")))


def cmd_finish(args: argparse.Namespace) -> int:
    return run(args, lambda client, a: _show(a, client.post(f"/api/qc/sessions/{_resolve(client, a.session)}/finish")))


def cmd_discard(args: argparse.Namespace) -> int:
    return run(args, lambda client, a: _show(a, client.post(f"/api/qc/sessions/{_resolve(client, a.session)}/discard")))


def cmd_technique(args: argparse.Namespace) -> int:
    values = {key: getattr(args, flag.replace("-", "_")) for flag, key, _ in TECHNIQUE_OPTIONS}
    values = {key: value for key, value in values.items() if value is not None}

    def action(client: QcClient, a: argparse.Namespace) -> int:
        ref = _resolve(client, a.session)
        return _show(a, client.post(f"/api/qc/sessions/{ref}/exposures/{a.number}/technique", values))
    return run(args, action)


def cmd_list(args: argparse.Namespace) -> int:
    def action(client: QcClient, a: argparse.Namespace) -> int:
        sessions = client.get("/api/qc/sessions")["sessions"]
        if a.json:
            print(json.dumps(sessions, indent=2))
        elif not sessions:
            print("no QC sessions yet; start one with: xray-agent qc start --test TYPE --instrument ID --operator X")
        else:
            rows = [[s["ref"], s["test_type"], s["state"], (s["verdict"] or "incomplete").upper(),
                     str(s["n_exposures"]), s["operator"], ", ".join(s["instruments"]), _time(s["started_at"])]
                    for s in sessions]
            print(table(["session", "test", "state", "verdict", "exp.", "operator", "instruments", "started"], rows))
        return 0
    return run(args, action)


def cmd_due(args: argparse.Namespace) -> int:
    def action(client: QcClient, a: argparse.Namespace) -> int:
        tests = client.get("/api/qc/due")["tests"]
        if a.json:
            print(json.dumps(tests, indent=2))
        elif not tests:
            print("no QC schedule configured ([[qc.schedule]] in the config)")
        else:
            rows = [[t["status"].upper(), t["test_type"], f"{t['interval_days']} d", _date(t["due_at"]) or "now",
                     "-" if t["days_left"] is None else str(t["days_left"]), _date(t["last_passed_at"]) or "never",
                     (t["last_verdict"] or "-").upper()] for t in tests]
            print(table(["status", "test", "every", "due", "days left", "last passed", "last verdict"], rows))
        return 0
    return run(args, action)


def _date(iso: str | None) -> str | None:
    return iso[:10] if iso else None


# ---- rendering -----------------------------------------------------------------------------------------------------
def render_session(s: dict[str, Any]) -> str:
    """The session as a terminal report: header, exposure table, verdict and criteria."""
    result = s.get("result") or {"verdict": "incomplete", "criteria": [], "reason": None}
    lines = [f"session {s['ref']}: {s['test_type']} on {', '.join(s['instruments'])}, operator {s['operator']}, "
             f"{s['state']}{' (published)' if s.get('published') else ''}, started {_time(s['started_at'])}", ""]
    if s["exposures"]:
        lines.append(table([c[0] for c in COLUMNS], [[_cell(e, c) for c in COLUMNS] for e in s["exposures"]]))
    else:
        lines.append("no exposures yet: take an exposure with the meter in the beam")
    reason = f" — {result['reason']}" if result.get("reason") else ""
    lines += ["", f"verdict: {result['verdict'].upper()}{reason}"]
    for c in result["criteria"]:
        outcome = "n/a" if not c["applies"] else {True: "PASS", False: "FAIL"}.get(
            c["passed"], "INVALID" if c.get("invalid") else "----")
        value = "" if c["value"] is None else f" = {c['value']:.4g} (limit {c['limit']:.4g})"
        why = f"  [{c['reason']}]" if c["reason"] else ""
        lines.append(f"  {outcome:<4}  {c['subject']}: {c['rule']}{value}{why}")
    return "\n".join(lines)


def _cell(exposure: dict[str, Any], column: tuple) -> str:
    _heading, where, key, scale = column
    value = exposure.get(key) if where is None else exposure[where].get(key)
    if key == "measured_at":
        return _time(value)
    if key == "flags":
        excluded = " (excluded)" if exposure.get("excluded") else ""
        return ", ".join(value) + excluded if value else "-"
    if key == "source":
        return (value or "none") + (" ✓" if exposure["technique"].get("confirmed") else "")
    return "-" if value is None else f"{value * scale:.4g}" if isinstance(value, (int, float)) else str(value)


def table(headings: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns, two spaces apart, with a heading rule."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headings)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headings), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _time(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
