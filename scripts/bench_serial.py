#!/usr/bin/env python3
"""Benchmark: from the last byte of an instrument frame arriving on a pty to the reading committed in the outbox.

Both paths read the same Ludlum 375 frames written into a real pseudo-terminal, one at a time:
- agent: the agent's InstrumentReader (pyserial, the ludlum_375 driver, QcReading, Sink.emit -> Outbox group commit);
  the time is taken in the reader thread right after Sink.emit returns (the commit is on disk);
- baseline: raw pyserial read_until(CR LF) of the same frame, then one INSERT + COMMIT on a bare SQLite connection
  with the same durability (WAL, synchronous=FULL).
Blocks of the two paths alternate so drift in the machine affects both alike. Prints one JSON object with p50/p99/max
in ms for each, and exits 1 if the agent's p99 misses the target (10 ms).

Usage: python scripts/bench_serial.py [--readings 300] [--dir FOLDER_ON_THE_DISK_UNDER_TEST]
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import queue
import statistics
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import serial  # noqa: E402

from agent.instruments.config import InstrumentConfig  # noqa: E402
from agent.instruments.reader import InstrumentReader  # noqa: E402
from agent.outbox import Outbox, connect  # noqa: E402
from agent.payloads.qc import QcReading  # noqa: E402
from agent.sink import Sink  # noqa: E402
from agent.topics import Topics  # noqa: E402
from drivers.emulators.ludlum import format_frame_375  # noqa: E402

TARGET_MS = 10.0
WARMUP = 20
BLOCK = 50
GAP_S = 0.003  # between frames: each frame is its own measurement, not part of a batch


class TimedSink(Sink):
    """The agent's Sink, noting when each reading's emit returned (= committed)."""

    def __init__(self, outbox: Outbox, topics: Topics) -> None:
        super().__init__(outbox, topics)
        self.committed: queue.Queue[tuple[str, float]] = queue.Queue()

    def emit(self, *payloads):
        """Sink.emit, then note the time for each reading."""
        result = super().emit(*payloads)
        done = time.perf_counter()
        for payload in payloads:
            if isinstance(payload, QcReading):
                self.committed.put((payload.raw_frame, done))
        return result


def open_pty(link: Path) -> tuple[int, int]:
    """A raw pty pair with `link` pointing at its slave, as the emulators make them."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    link.unlink(missing_ok=True)
    link.symlink_to(os.ttyname(slave))
    return master, slave


def baseline_reader(link: Path, db: Path, done: queue.Queue, stop: threading.Event) -> None:
    """Raw pyserial + one durable SQLite insert per frame."""
    conn = connect(db)
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, frame BLOB)")
    pending = b""
    with serial.Serial(str(link), timeout=0.1) as port:
        while not stop.is_set():
            pending += port.read_until(b"\r\n")  # after a timeout: a partial frame, kept for the next call
            if not pending.endswith(b"\r\n"):
                continue
            frame, pending = pending, b""
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t (frame) VALUES (?)", (frame,))
            conn.execute("COMMIT")
            done.put((frame[:-2].decode(), time.perf_counter()))
    conn.close()


def measure(master: int, done: queue.Queue, start: int, count: int) -> list[float]:
    """Write `count` frames one at a time; latency (ms) from the write of the frame to its commit."""
    out = []
    for i in range(start, start + count):
        frame = format_frame_375(reading=(i % 9999) / 10)  # distinct frames, so each commit matches its frame
        sent = time.perf_counter()
        os.write(master, frame)
        raw, committed = done.get(timeout=10)
        if raw != frame[:-2].decode():
            raise RuntimeError(f"committed {raw!r} for frame {frame!r}")
        out.append((committed - sent) * 1000)
        time.sleep(GAP_S)
    return out


def summary(values: list[float]) -> dict:
    """p50/p99/max/mean of latencies in ms."""
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(ordered), 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
            "max_ms": round(ordered[-1], 3), "mean_ms": round(statistics.fmean(ordered), 3)}


def alternate(agent_path: tuple, base_path: tuple, readings: int) -> tuple[list[float], list[float]]:
    """Warm both paths up, then measure them in alternating blocks."""
    measure(*agent_path, 0, WARMUP)
    measure(*base_path, 0, WARMUP)
    agent, base = [], []
    for start in range(WARMUP, WARMUP + readings, BLOCK):
        count = min(BLOCK, WARMUP + readings - start)
        agent += measure(*agent_path, start, count)
        base += measure(*base_path, start, count)
    return agent, base


def run(folder: Path, readings: int) -> dict:
    """Both paths, alternating blocks; returns the JSON-able result."""
    box = Outbox(folder / "outbox.db", max_bytes=10**10)
    box.start()
    sink = TimedSink(box, Topics("xray/v1", "bench", "xr-01"))
    agent_master, agent_slave = open_pty(folder / "ttyAgent")
    base_master, base_slave = open_pty(folder / "ttyBase")
    reader = InstrumentReader(InstrumentConfig(id="bench", driver="ludlum_375", port=str(folder / "ttyAgent")), sink)
    base_done: queue.Queue = queue.Queue()
    stop = threading.Event()
    base_thread = threading.Thread(target=baseline_reader, daemon=True,
                                   args=(folder / "ttyBase", folder / "raw.db", base_done, stop))
    reader.start()
    base_thread.start()
    try:
        time.sleep(0.5)  # both ports open (opening flushes input)
        agent, base = alternate((agent_master, sink.committed), (base_master, base_done), readings)
    finally:
        reader.stop()
        stop.set()
        base_thread.join(2)
        box.stop()
        for fd in (agent_master, agent_slave, base_master, base_slave):
            os.close(fd)
    result = {"readings": readings, "folder": str(folder), "agent": summary(agent), "baseline": summary(base),
              "target_p99_ms": TARGET_MS}
    for key in ("p50_ms", "p99_ms"):
        result[f"overhead_{key}"] = round(result["agent"][key] - result["baseline"][key], 3)
    result["meets_target"] = result["agent"]["p99_ms"] <= TARGET_MS
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON; exit 1 if the target is missed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=300)
    parser.add_argument("--dir", type=Path, help="folder for the databases (default: a new temporary folder)")
    args = parser.parse_args(argv)
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        result = run(args.dir, args.readings)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-serial-") as tmp:
            result = run(Path(tmp), args.readings)
    print(json.dumps(result, indent=2))
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
