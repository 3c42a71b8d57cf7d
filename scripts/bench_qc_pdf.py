#!/usr/bin/env python3
"""What `Download PDF` costs: rendering the PDF report of a finished QC session (10 exposures, 1 criterion, raw
frames) in process with fpdf2, next to rendering the HTML report of the same session with Jinja (the baseline the
page already pays), in one run on this machine. Also the PDF's size.

Prints one JSON object: p50/p99 per renderer in ms, the PDF/HTML time ratio, and the PDF bytes.
Usage: python scripts/bench_qc_pdf.py [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def session() -> dict:
    """A finished 10-exposure reproducibility session as QcSessions.session() returns it."""
    from agent.qc import QcExposure, analyse

    exposures = [QcExposure(set_kvp=80, set_mas=10, air_kerma_ugy=870 + 2 * i) for i in range(10)]
    result = analyse("reproducibility", exposures).model_dump(mode="json")
    views = [{"number": i + 1, "measured_at": f"2026-03-02T09:{i:02d}:00+00:00",
              "technique": {"set_kvp": 80.0, "set_mas": 10.0, "source": "dicom", "confirmed": True,
                            "event_ref": f"ev{i}", "dicom_reported": {"set_kvp": 80.0, "set_mas": 10.0}},
              "measured": {"air_kerma_ugy": 870.0 + 2 * i, "kvp": 80.4}, "excluded": {}, "flags": [],
              "readings": [{"msg_id": f"qc-{i:032x}", "instrument_id": "kvp-1", "driver": "victoreen_4000m",
                            "flags": [], "raw_frame": "+8.034E+01 +7.950E+01 +1.000E+02 +1.000E-01 1\\r\\n" * 2}]}
             for i in range(10)]
    return {"ref": "qc-0badc0de", "test_type": "reproducibility", "operator": "JQ", "instruments": ["kvp-1"],
            "state": "finished", "published": True, "started_at": "2026-03-02T09:00:00+00:00",
            "ended_at": "2026-03-02T09:12:00+00:00", "result": result, "exposures": views,
            "unit": {"unit_id": "XR-0042", "manufacturer": "ACME", "model": "R9", "serial_number": "SN1",
                     "station_name": "ROOM3", "conflicts": []},
            "instrument_records": [{"id": "kvp-1", "driver": "victoreen_4000m", "model": "Victoreen 4000M+",
                                    "serial_number": "12345", "calibration_due": "2027-01-01",
                                    "calibration_status": "valid"}],
            "time_zone": "Europe/Berlin", "review": None, "match_window_s": 10}


def timed(fn, runs: int) -> dict:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    from flask import Flask

    from agent.qc.pdf import render_pdf
    from agent.web.qc import bp

    s = session()
    app = Flask("bench")
    app.register_blueprint(bp)
    with app.test_request_context():
        from flask import render_template

        html = lambda: render_template("qc_report.html", s=s, site="site", room="room",  # noqa: E731
                                       label="Reproducibility")
        html()
        pdf = lambda: render_pdf(s, site="site", room="room", label="Reproducibility")  # noqa: E731
        size = len(pdf())
        html_t, pdf_t = timed(html, args.runs), timed(pdf, args.runs)
    print(json.dumps({"runs": args.runs, "html_report": html_t, "pdf_report": pdf_t,
                      "pdf_vs_html_p50_ratio": round(pdf_t["p50_ms"] / html_t["p50_ms"], 1), "pdf_bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
