"""Dose messages as one readable line each (what, which exam, value against level), for people at a terminal: the
demo, `xray-agent drl-audit`. Works on the published JSON (dicts), so it reads exactly what subscribers get. Pure.
"""

from __future__ import annotations

from typing import Iterator

GY_M2_IN_GY_CM2 = 1e4


def _value(quantity: str, value: float | None) -> str:
    """A value in the unit people read: DAP in Gy·cm², times in minutes."""
    if value is None:
        return "-"
    if quantity.endswith("dap_gy_m2"):
        return f"{value * GY_M2_IN_GY_CM2:.3g} Gy·cm²"
    if quantity.endswith("fluoro_time_s"):
        return f"{value / 60:.3g} min"
    if quantity == "deviation_index":
        return f"DI {value:+.2f}"
    unit = {"entrance_dose_mgy": "mGy"}.get(quantity, "Gy")
    return f"{value:.3g} {unit}"


def _exam(alert: dict) -> str:
    parts = [alert.get("protocol") or " ".join(p for p in (alert.get("body_part"), alert.get("view")) if p)]
    return next((p for p in parts if p), "exam unknown")


def _study(alert: dict) -> str:
    return f"study {alert['study_ref'][:8]}" if alert.get("study_ref") else "no study"


def alert_line(alert: dict) -> str:
    """"notification level: CHEST PA, DAP 0.25 Gy·cm² above 0.1 Gy·cm² (x2.5, rule chest-pa)"."""
    kind, quantity = alert["alert"], alert["quantity"]
    value, level = _value(quantity, alert["value"]), _value(quantity, alert["level"])
    if kind == "deviation-index":
        side = "below" if alert["value"] < 0 else "above"
        note = "; this unit uses one target EI for every exam" if alert.get("target_ei_uniform") else ""
        return (f"deviation index {alert.get('band')}: {_exam(alert)}, {value} {side} {alert['level']:+g} "
                f"(EI {alert['ratio']:.2f}x target){note}")
    if kind == "notification-level":
        what = "DAP" if quantity == "dap_gy_m2" else "entrance dose"
        return (f"notification level: {_exam(alert)}, {what} {value} above {level} "
                f"(x{alert['ratio']:.2g}, rule {alert['rule']})")
    if kind == "cumulative":
        plane = f" plane {alert['plane']}" if alert.get("plane") else ""
        return (f"cumulative{plane}: {_study(alert)}, {quantity.removeprefix('study_')} {value} passed {level} "
                f"({alert['rule']}, {alert.get('events_in_study') or 0} event(s))")
    studies = ", ".join(s[:8] for s in alert.get("studies") or [])
    return (f"patient cumulative: patient {str(alert.get('patient_ref'))[:8]}, {value} over "
            f"{alert.get('window_days')} days above {level} ({alert['rule']}; studies {studies})")


def summary_line(summary: dict) -> str:
    """"summary 2024-01-05: 12 exposures, 1 possible repeat (8%), DI normal 75%, alerts: ..."."""
    alerts = ", ".join(f"{k} {v}" for k, v in summary["alerts"].items() if v) or "none"
    bands = summary.get("deviation_index_bands") or {}
    normal = f", DI normal {bands['normal']:.0%}" if "normal" in bands else ""
    uniform = summary.get("units_with_uniform_target_ei") or []
    note = f"; one target EI for every exam on {', '.join(uniform)}" if uniform else ""
    return (f"summary {summary['period_start'][:16]} .. {summary['period_end'][:16]}: {summary['exposures']} "
            f"exposure(s), {summary['repeats']} possible repeat(s) ({summary['repeat_rate']:.0%}, not a reject "
            f"rate){normal}; alerts: {alerts}{note}")


def audit_lines(audit: dict) -> Iterator[str]:
    """A header and one line per examination and band."""
    yield (f"DRL audit {audit['period_start'][:10]} .. {audit['period_end'][:10]} ({audit['trigger']}), "
           f"{len(audit['exams'])} exam group(s), minimum {audit['min_examinations']} examinations")
    for e in audit["exams"]:
        drl = (f"median/DRL {e['median_to_drl']:.2f} (DRL {_value('dap_gy_m2', e['drl_dap_gy_m2'])})"
               if e["median_to_drl"] is not None else "no DRL")
        flags = f"  [{', '.join(e['flags'])}]" if e["flags"] else ""
        yield (f"  {e['exam']} ({e['band']}): n={e['examinations']}, median "
               f"{_value('dap_gy_m2', e['median_dap_gy_m2'])}, IQR {_value('dap_gy_m2', e['iqr_dap_gy_m2'])}, "
               f"{drl}{flags}")
