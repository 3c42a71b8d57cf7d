#!/usr/bin/env python3
"""Benchmark the state-file integrity check and rebuild against baselines measured in the same run, on this machine.

Prints one JSON object:
- durable enqueue latency (p50/p99, one producer, one message per commit) while the integrity watch runs its
  `quick_check` back to back, versus the same without it: the check must stay off the intake's path;
- the time of one quick_check of an outbox of N messages, versus reading every row with SELECT (the cost a check
  must at least pay);
- the time to rebuild that outbox after its interior pages are destroyed (every row salvaged from the file format),
  versus copying it with SQLite's backup API (the cheapest way to write a file of the same size).

Usage: python scripts/bench_statedb.py [--messages 20000] [--payload-bytes 900] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent import statedb  # noqa: E402
from agent.outbox import Outbox, OutMessage  # noqa: E402
from agent.statedb.guard import check  # noqa: E402
from tests.test_state_corruption import damage, pages_of, settle  # noqa: E402

TOPIC = "xray/v1/bench/xr-01/exposure"


def fill(path: Path, count: int, size: int) -> Outbox:
    box = Outbox(path, max_bytes=10**10)
    box.start()
    for start in range(0, count, 500):
        box.enqueue([OutMessage(f"m{i:08d}", TOPIC, (b'{"n": %d}' % i).ljust(size))
                     for i in range(start, min(count, start + 500))])
    return box


def latencies(box: Outbox, seconds: float, tag: str) -> list[float]:
    out, i, end = [], 0, time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        box.enqueue([OutMessage(f"{tag}{i:08d}", TOPIC, b'{"probe": 1}')])
        out.append((time.perf_counter() - t0) * 1000)
        i += 1
    return out


def pct(values: list[float], q: float) -> float:
    return round(statistics.quantiles(values, n=100)[q - 1], 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--payload-bytes", type=int, default=900)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "outbox.db"
        box = fill(path, args.messages, args.payload_bytes)
        size_mib = path.stat().st_size / 2**20 + Path(f"{path}-wal").stat().st_size / 2**20

        base = latencies(box, args.seconds, "a")
        stop, checks = threading.Event(), [0]

        def checking() -> None:
            while not stop.is_set():
                check(path)
                checks[0] += 1

        checker = threading.Thread(target=checking)
        checker.start()
        loaded = latencies(box, args.seconds, "b")
        stop.set()
        checker.join()
        box.stop()
        settle(path)

        t0 = time.perf_counter()
        assert check(path) is None
        check_s = time.perf_counter() - t0
        conn = sqlite3.connect(path)
        t0 = time.perf_counter()
        rows = sum(1 for _ in conn.execute("SELECT * FROM messages"))
        select_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        conn.backup(sqlite3.connect(folder / "copy.db"))
        backup_s = time.perf_counter() - t0
        conn.close()

        damage(path, pages_of(path, "messages")["internal"])
        t0 = time.perf_counter()
        recovery = statedb.recover(Outbox(path, max_bytes=10**10).state_spec(), "bench")
        rebuild_s = time.perf_counter() - t0
        assert recovery.rows["messages"] == rows, (recovery.rows, rows)

    print(json.dumps({
        "outbox_mib": round(size_mib, 1), "messages": rows,
        "enqueue_ms_p50": {"baseline": pct(base, 50), "during_checks": pct(loaded, 50),
                           "ratio": round(pct(loaded, 50) / pct(base, 50), 2)},
        "enqueue_ms_p99": {"baseline": pct(base, 99), "during_checks": pct(loaded, 99),
                           "ratio": round(pct(loaded, 99) / pct(base, 99), 2)},
        "checks_during_run": checks[0],
        "quick_check_s": {"check": round(check_s, 3), "baseline_select_all": round(select_s, 3),
                          "ratio": round(check_s / select_s, 2)},
        "rebuild_s": {"rebuild": round(rebuild_s, 3), "baseline_backup_copy": round(backup_s, 3),
                      "ratio": round(rebuild_s / backup_s, 2), "rows_recovered": recovery.rows["messages"]},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
