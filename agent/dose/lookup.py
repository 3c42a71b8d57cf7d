"""`xray-agent lookup PATIENT_ID`: local re-identification for the people entitled to it.

The dose history holds no Patient ID, only its keyed ref (agent.dicom.patient.patient_ref). On the room PC, root or a
member of the service group can compute the ref of an ID they already know with the site secret, and list that
patient's exposures, studies and dose alerts from the local history. Nothing is written, logged or published; the ID
typed is only hashed.
"""

from __future__ import annotations

import grp
import os
import sqlite3
import sys
from datetime import datetime, timezone
from pathlib import Path

from agent.dicom.patient import patient_id_key
from agent.pseudonym import load_secret, make_ref

SERVICE_GROUP = "xray-agent"


def entitled(euid: int, groups: list[int], group: str = SERVICE_GROUP) -> bool:
    """Root, or a member of the service group."""
    if euid == 0:
        return True
    try:
        return grp.getgrnam(group).gr_gid in groups
    except KeyError:
        return False


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _num(value: float | None, scale: float = 1.0, fmt: str = ".3g") -> str:
    return "-" if value is None else format(value * scale, fmt)


def patient_history(db: Path, refs: list[str]) -> dict[str, list[tuple]]:
    """The patient's studies, exposures and alerts from the history file, opened read-only."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(refs))
        studies = conn.execute(f"SELECT study_ref, at, dap_gy_m2, dose_rp_gy, fluoro_time_s FROM patient_studies "
                               f"WHERE patient_ref IN ({marks}) ORDER BY at", refs).fetchall()
        exposures = conn.execute(f"SELECT at, study_ref, modality, protocol, body_part, view, dap_gy_m2, dose_rp_gy, "
                                 f"di_band, repeat_of IS NOT NULL FROM exposures WHERE patient_ref IN ({marks}) "
                                 f"ORDER BY at", refs).fetchall()
        study_refs = sorted({row[0] for row in studies} | {row[1] for row in exposures if row[1]})
        smarks = ",".join("?" * len(study_refs))
        alerts = conn.execute(f"SELECT at, alert, rule, study_ref, quantity, value, level FROM alerts WHERE "
                              f"patient_ref IN ({marks}) OR study_ref IN ({smarks or 'NULL'}) ORDER BY at",
                              refs + study_refs).fetchall()
    finally:
        conn.close()
    return {"studies": studies, "exposures": exposures, "alerts": alerts}


def print_history(found: dict[str, list[tuple]], out=sys.stdout) -> None:
    print(f"{len(found['studies'])} study(ies), {len(found['exposures'])} exposure(s), {len(found['alerts'])} "
          "dose alert(s) in this room's history", file=out)
    for ref, at, dap, dose, fluoro in found["studies"]:
        print(f"study {ref}  from {_when(at)}  DAP {_num(dap, 1e4)} Gy·cm²  Ka,r {_num(dose)} Gy  "
              f"fluoro {_num(fluoro, 1 / 60, '.1f')} min", file=out)
    for at, study, modality, protocol, body, view, dap, dose, band, repeat in found["exposures"]:
        print(f"exposure {_when(at)}  study {study}  {modality or '-'} {protocol or '-'} ({body or '-'} "
              f"{view or '-'})  DAP {_num(dap, 1e4)} Gy·cm²  Ka,r {_num(dose)} Gy  DI {band}"
              f"{'  possible repeat' if repeat else ''}", file=out)
    for at, alert, rule, study, quantity, value, level in found["alerts"]:
        print(f"alert {_when(at)}  {alert} {rule}  study {study or '-'}  {quantity or ''} {_num(value)} > "
              f"{_num(level)}", file=out)


def cmd_lookup(args) -> int:
    from agent.cli import EXIT_CONFIG, _load_or_exit

    if not entitled(os.geteuid(), os.getgroups(), args.group):
        print(f"lookup is for root and members of the {args.group} group only", file=sys.stderr)
        return 1
    cfg = _load_or_exit(args.config)
    try:
        secret = load_secret(cfg.site.secret_key_file)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    db = cfg.dose.state_file(cfg.outbox.path)
    if not db.exists():
        print(f"no dose history at {db}", file=sys.stderr)
        return 1
    keys = [patient_id_key(args.patient_id)]
    if args.issuer:
        keys.insert(0, patient_id_key(args.patient_id, args.issuer))
    try:
        found = patient_history(db, [make_ref(secret, "patient", key) for key in keys])
    except sqlite3.Error as exc:
        print(f"cannot read the dose history {db}: {exc}", file=sys.stderr)
        return 1
    print_history(found)
    return 0


def add_lookup_command(sub, default_config: Path) -> None:
    p = sub.add_parser("lookup", help="list a patient's exposures, studies and dose alerts from this room's history "
                                      "(root or the service group; nothing is stored or published)")
    p.add_argument("patient_id", metavar="PATIENT_ID")
    p.add_argument("--issuer", help="Issuer of Patient ID (0010,0021), when the modality sends one")
    p.add_argument("--config", type=Path, default=default_config)
    p.add_argument("--group", default=SERVICE_GROUP, help="the service group whose members may look up")
    p.set_defaults(func=cmd_lookup)
