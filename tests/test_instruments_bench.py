"""scripts/bench_serial.py runs and reports both paths (a short run: the figures themselves go in the note)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.realparts import REPO


def test_bench_serial_reports_agent_and_baseline_latency(tmp_path):
    result = subprocess.run([sys.executable, "scripts/bench_serial.py", "--readings", "40", "--dir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["readings"] == 40 and report["target_p99_ms"] == 10.0
    for path in ("agent", "baseline"):
        assert 0 < report[path]["p50_ms"] <= report[path]["p99_ms"] <= report[path]["max_ms"]
    assert report["agent"]["p50_ms"] < 10.0  # the median reading is committed well inside the target
    assert report["meets_target"] == (report["agent"]["p99_ms"] <= 10.0)
