"""The QC session report as a PDF file (A4 portrait; every table fits the page width), built in-process with fpdf2.

fpdf2 rather than a browser's print-to-PDF: it is a small, pure-Python, actively maintained library, so the daemon
needs no browser on the room PC, starts no extra process under its hardened systemd unit, and renders a report in
tens of milliseconds with the same output every time. Text uses DejaVu Sans when the system has it (µ, ², ±, ≥ and
✓ render), with a CJK/Unicode fallback font when one is installed (FALLBACK_FONTS); otherwise the PDF core font.
A character no loaded font can draw is written as its code point, <U+738B>, never dropped: a signer's name or a
comment in any script stays in the signed record, recoverable.

Shape of the input: the session dict of QcSessions.session() (plus `review` when signed off); times are shown in the
session's time zone with their UTC offset.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fpdf import FPDF
from fpdf.fonts import FontFace

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"),)
# Fonts for the scripts DejaVu lacks (CJK above all), as Debian/Ubuntu packages install them; the first found is used.
FALLBACK_FONTS = (Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
                  Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
                  Path("/usr/share/fonts/truetype/unifont/unifont.ttf"))
REPLACEMENTS = {"–": "-", "—": "-", "≥": ">=", "≤": "<=", "✓": "yes", "·": ".", "±": "+/-"}
BODY_PT, SMALL_PT = 8.5, 7.0


def _n(value: Any, scale: float = 1.0) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value * scale:.4g}"
    return str(value)


class ReportPdf(FPDF):
    """A4 portrait with a running footer."""

    def __init__(self, title: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.title_text = title
        self.set_margins(12, 12, 12)
        self.set_auto_page_break(True, margin=14)
        self.unicode = False
        for folder in FONT_DIRS:
            regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
            if regular.exists() and bold.exists():
                self.add_font("body", "", str(regular))
                self.add_font("body", "B", str(bold))
                self.unicode = True
                break
        self.family = "body" if self.unicode else "helvetica"
        self.drawable: set[int] = set(range(32, 256)) if not self.unicode else set(self.fonts["body"].cmap)
        for path in FALLBACK_FONTS if self.unicode else ():
            if path.exists():
                self.add_font("fallback", "", str(path))
                self.set_fallback_fonts(["fallback"], exact_match=False)
                self.drawable |= set(self.fonts["fallback"].cmap)
                break

    def text_of(self, value: Any) -> str:
        """Text the current font can draw."""
        text = "" if value is None else str(value)
        if not self.unicode:
            for old, new in REPLACEMENTS.items():
                text = text.replace(old, new)
        return "".join(ch if ch in "\n\t" or ord(ch) in self.drawable else
                       ("" if not ch.isprintable() else f"<U+{ord(ch):04X}>") for ch in text)

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font(self.family, "", SMALL_PT)
        self.cell(0, 5, self.text_of(f"{self.title_text} · page {self.page_no()}/{{nb}}"), align="R")


def local_time(iso: str | None, zone: str | None) -> str:
    """'2026-03-02 10:00:05 +01:00' in the session's zone (UTC when unknown)."""
    if not iso:
        return "–"
    at = datetime.fromisoformat(iso)
    try:
        at = at.astimezone(ZoneInfo(zone or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        at = at.astimezone(timezone.utc)
    offset = at.strftime("%z")
    return at.strftime("%Y-%m-%d %H:%M:%S ") + f"{offset[:3]}:{offset[3:]}"


def render_pdf(s: dict[str, Any], *, site: str, room: str, label: str) -> bytes:
    """The report of one session as PDF bytes."""
    zone = s.get("time_zone") or "UTC"
    result = s.get("result") or {"verdict": "incomplete", "criteria": [], "jurisdiction": "", "reason": None}
    pdf = ReportPdf(f"QC report {s['ref']} · {site} / {room}")
    pdf.alias_nb_pages()
    pdf.add_page()
    t = pdf.text_of
    pdf.set_font(pdf.family, "B", 14)
    pdf.cell(0, 8, t(f"QC report: {label}"), new_x="LMARGIN", new_y="NEXT")
    unit = s.get("unit") or {}
    facts = [
        ("Site / room", f"{site} / {room}", "Session", s["ref"]),
        ("X-ray unit", unit.get("unit_id") or "–", "Station name", unit.get("station_name") or "–"),
        ("Manufacturer / model", f"{unit.get('manufacturer') or '–'} / {unit.get('model') or '–'}",
         "Unit serial number", unit.get("serial_number") or "–"),
        ("Operator", s["operator"], "State", s["state"] + (" (published)" if s.get("published") else "")),
        ("Started", local_time(s.get("started_at"), zone), "Ended", local_time(s.get("ended_at"), zone)),
        ("Limits", result.get("jurisdiction", ""), "Time zone", zone),
    ]
    _table(pdf, None, [[t(c) for c in row] for row in facts], (32, 63, 32, 59), bold_cols=(0, 2))
    if unit.get("conflicts"):
        _para(pdf, "Exposures from more than one unit? " + "; ".join(unit["conflicts"]))
    pdf.ln(2)
    pdf.set_font(pdf.family, "B", 12)
    verdict = f"Verdict: {result['verdict'].upper()}" + (f" — {result['reason']}" if result.get("reason") else "")
    pdf.multi_cell(0, 6, t(verdict), border=1, align="L", new_x="LMARGIN", new_y="NEXT")
    if s["state"] == "open":
        _para(pdf, "This session is still open: the verdict may change.")

    _heading(pdf, "Instruments")
    rows = [[r.get("id"), f"{r.get('model') or r.get('driver')}", r.get("serial_number"),
             r.get("calibration_date"), r.get("calibration_due"), r.get("calibration_status"),
             " ".join(filter(None, [_n(r.get("calibration_factor")) if r.get("calibration_factor") else None,
                                    r.get("calibration_factor_unit")])) or None,
             _tp(r)] for r in s.get("instrument_records") or [{"id": i} for i in s["instruments"]]]
    _table(pdf, ["Id", "Model", "Serial", "Calibrated", "Due", "Status", "Cal. factor", "T/P correction"],
           [[t(_n(c)) for c in row] for row in rows], (18, 34, 22, 20, 20, 16, 24, 32))

    _heading(pdf, "Criteria")
    rows = []
    for c in result["criteria"]:
        outcome = ("n/a" if not c["applies"] else "pass" if c["passed"] else "fail" if c["passed"] is False
                   else "invalid" if c.get("invalid") else "—")
        limit = f"{_n(c['limit'])} {'' if c['unit'] == '1' else c['unit']}".strip()
        source = f"{c.get('source') or '–'}: {c.get('citation') or ''}".strip()
        rows.append([c["subject"], c["rule"] + (f" ({c['reason']})" if c.get("reason") else ""),
                     format_inputs(c["inputs"]), _n(c["value"]), limit, source, outcome])
    _table(pdf, ["Subject", "Rule", "Inputs", "Value", "Limit", "Source", "Outcome"],
           [[t(x) for x in row] for row in rows], (18, 44, 42, 14, 16, 34, 18), size=SMALL_PT)

    _heading(pdf, "Exposures")
    rows = []
    for e in s["exposures"]:
        tech, m = e["technique"], e["measured"]
        src = (tech.get("source") or "none") + (", confirmed" if tech.get("confirmed") else "")
        dicom = tech.get("dicom_reported") or {}
        changed = [f"{k.removeprefix('set_')} {_n(v)}" for k, v in dicom.items() if tech.get(k) != v]
        if changed:
            src += f" (DICOM: {', '.join(changed)})"
        flags = ", ".join(e.get("flags") or []) or "–"
        if e.get("excluded"):
            flags += f" (excluded: {', '.join(e['excluded'])})"
        rows.append([e["number"], local_time(e["measured_at"], zone)[11:], _n(tech.get("set_kvp")),
                     _n(tech.get("set_mas")), _n(tech.get("set_time_ms")), _n(m.get("kvp")),
                     _n(m.get("air_kerma_ugy")), _n(m.get("exposure_time_ms")), _n(m.get("hvl_mm_al")),
                     _n(m.get("dap_gy_m2"), 1e6), _n(tech.get("dicom_dap_gy_m2"), 1e6), src, flags])
    _table(pdf, ["#", "Time", "Set kV", "Set mAs", "Set ms", "kVp", "Kerma µGy", "Time ms", "HVL mm Al",
                 "DAP µGy·m²", "DICOM DAP", "Technique", "Meter flags"],
           [[t(_n(x)) for x in row] for row in rows], (6, 20, 11, 11, 11, 11, 13, 11, 11, 13, 13, 25, 20),
           size=SMALL_PT)

    _heading(pdf, "Review")
    review = s.get("review")
    if review:
        _para(pdf, f"Reviewed by {review['reviewed_by']} on {local_time(review['reviewed_at'], zone)}.")
        if review.get("comment"):
            _para(pdf, f"Comment: {review['comment']}")
    else:
        _para(pdf, "Reviewed by: ______________________________   Date: ______________   Signature: "
                   "______________________")

    _heading(pdf, "Meter readings (raw frames)")
    rows = [[e["number"], rd["instrument_id"], rd["msg_id"], ", ".join(rd.get("flags") or []) or "–",
             rd["raw_frame"][:300]] for e in s["exposures"] for rd in e["readings"]]
    _table(pdf, ["#", "Instrument", "Reading id", "Flags", "Raw frame"], [[t(_n(x)) for x in r] for r in rows],
           (6, 20, 42, 24, 94), size=SMALL_PT)
    return bytes(pdf.output())


def _tp(record: dict[str, Any]) -> str | None:
    correction = record.get("air_density_correction")
    if not correction:
        return None
    tp = ", ".join(x for x in (f"{_n(record.get('temperature_c'))} °C" if record.get("temperature_c") is not None
                               else "", f"{_n(record.get('pressure_hpa'))} hPa" if record.get("pressure_hpa")
                               is not None else "") if x)
    return correction.replace("_", " ") + (f" ({tp})" if tp else "")


def format_inputs(inputs: dict[str, Any]) -> str:
    """The criterion's inputs, lists shortened: 'mean_measured_kv=80.4; n=2; ...'."""
    parts = []
    for key, value in inputs.items():
        if isinstance(value, list):
            shown = ", ".join(_n(v) for v in value[:12]) + (" …" if len(value) > 12 else "")
            parts.append(f"{key}=[{shown}]")
        else:
            parts.append(f"{key}={_n(value)}")
    return "; ".join(parts)


def _heading(pdf: ReportPdf, text: str) -> None:
    pdf.ln(3)
    pdf.set_font(pdf.family, "B", 11)
    pdf.cell(0, 6, pdf.text_of(text), new_x="LMARGIN", new_y="NEXT")


def _para(pdf: ReportPdf, text: str) -> None:
    pdf.set_font(pdf.family, "", BODY_PT)
    pdf.multi_cell(0, 4.5, pdf.text_of(text), new_x="LMARGIN", new_y="NEXT")


def _table(pdf: ReportPdf, headings: list[str] | None, rows: list[list[str]], widths: tuple[float, ...],
           size: float = BODY_PT, bold_cols: tuple[int, ...] = ()) -> None:
    """A bordered table whose column widths (mm) add up to at most the text width; cells wrap."""
    pdf.set_font(pdf.family, "", size)
    head = FontFace(emphasis="BOLD", fill_color=(230, 230, 230))
    with pdf.table(col_widths=widths, width=sum(widths), align="LEFT", first_row_as_headings=headings is not None,
                   headings_style=head, line_height=size * 0.5, text_align="LEFT") as table:
        if headings is not None:
            row = table.row()
            for heading in headings:
                row.cell(pdf.text_of(heading))
        for values in rows:
            row = table.row()
            for i, value in enumerate(values):
                row.cell(value, style=FontFace(emphasis="BOLD") if i in bold_cols else None)
