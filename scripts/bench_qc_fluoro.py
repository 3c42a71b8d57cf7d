#!/usr/bin/env python3
"""What a fluoroscopy session costs per meter sample: the session analyses again after every reading, so a run of
continuous fluoroscopy (one sample every 0.5 s for 5 minutes = 600 samples) pays the analysis over all samples so far
each time. Measured in one run: fluoro_max_air_kerma_rate and fluoro_hvl (runs collapsed) next to the radiographic
reproducibility analysis over the same number of exposures (the baseline a radiographic session already pays).

Prints one JSON object: per analysis and n, p50 ms of one analysis, and the ratio to the baseline at that n.
Usage: python scripts/bench_qc_fluoro.py [--runs 20] [--n 60 600]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def samples(n: int) -> list:
    """n samples 0.5 s apart at ~80 mGy/min, in runs of 60 (30 s) separated by 10 s, each run at its own Al."""
    from agent.qc import QcExposure

    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    out = []
    for i in range(n):
        run, k = divmod(i, 60)
        rate = 80.0 / (1 + run) * (1 + 0.001 * (k % 3))
        out.append(QcExposure(air_kerma_ugy=rate * 500 / 60, exposure_time_ms=500.0, kvp=80.2, set_kvp=80.0,
                              set_mas=10.0, filtration_mm_al=float(run),
                              measured_at=t0 + timedelta(seconds=run * 40 + k * 0.5)))
    return out


def p50_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    from agent.qc import analyse

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--n", type=int, nargs="+", default=[60, 600])
    args = parser.parse_args()
    report: dict = {"runs": args.runs, "results": []}
    for n in args.n:
        exposures = samples(n)
        base = p50_ms(lambda: analyse("reproducibility", exposures), args.runs)
        row = {"n": n, "reproducibility_p50_ms": round(base, 3)}
        for test in ("fluoro_max_air_kerma_rate", "fluoro_hvl"):
            ms = p50_ms(lambda: analyse(test, exposures), args.runs)
            row[f"{test}_p50_ms"] = round(ms, 3)
            row[f"{test}_ratio"] = round(ms / base, 2) if base else None
        report["results"].append(row)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
