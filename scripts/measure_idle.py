#!/usr/bin/env python3
"""Idle cost of the agent: CPU share (of one core) and resident memory over a quiet period.

The agent runs as a real process (`xray-agent run`) with two emulated instruments on pseudo-terminals, a Ludlum 375
pushing a frame every 2 s and a PTW DIAMENTOR polled at its default interval, the DICOM listener bound and idle,
the web server up, and a real mosquitto. The baseline, measured over the same window in the same run, is a bare
Python process doing the least an agent must: a paho MQTT client connected to the same broker with its network loop
running, and an idle pynetdicom storage SCP. Both are sampled with psutil (user + system CPU time, RSS).

After the idle window, the peak memory while receiving one large object: dcmtk's storescu sends an XA cine of
--large-object-mib MiB (8-bit 1024 x 1024 frames) to the agent's listener and then to the baseline's idle pynetdicom
SCP (pynetdicom's default: the data set received into memory), each process's RSS sampled every 50 ms; the figure is
the peak over the RSS just before sending. Target: the agent's peak within 64 MiB of its idle RSS.

Prints one JSON object; exits 1 when a target is missed (CPU under 1% of one core, RSS under 80 MB, large-object
peak within 64 MiB of idle).

Usage: python scripts/measure_idle.py [--duration 60] [--warmup 5] [--large-object-mib 400 (0: skip)]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from drivers.emulators.diamentor import DiamentorEmulator  # noqa: E402
from drivers.emulators.ludlum import Ludlum375Emulator  # noqa: E402
from tests.realparts import AgentProcess, Mosquitto, Subscriber, free_port, wait_for, write_agent_config  # noqa: E402

CPU_TARGET_PERCENT = 1.0
RSS_TARGET_MB = 80.0
LARGE_OBJECT_OVER_IDLE_TARGET_MIB = 64.0

BASELINE = textwrap.dedent("""
    import sys, time
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from pynetdicom import AE, AllStoragePresentationContexts
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="idle-baseline", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", int(sys.argv[1]), keepalive=30)
    client.loop_start()
    ae = AE(ae_title="BASELINE")
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.start_server(("127.0.0.1", int(sys.argv[2])), block=False)
    print("ready", flush=True)
    while True:
        time.sleep(3600)
""")


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU time of the process, s."""
    times = process.cpu_times()
    return times.user + times.system


def measure(processes: dict[str, psutil.Process], duration_s: float) -> dict[str, dict]:
    """CPU share of one core and RSS (end of window, and the peak of samples every second) for each process."""
    start = {name: cpu_seconds(p) for name, p in processes.items()}
    peak = {name: 0 for name in processes}
    t0 = time.monotonic()
    while time.monotonic() - t0 < duration_s:
        time.sleep(min(1.0, max(0.0, duration_s - (time.monotonic() - t0))))
        for name, p in processes.items():
            peak[name] = max(peak[name], p.memory_info().rss)
    elapsed = time.monotonic() - t0
    return {name: {"cpu_percent_of_one_core": round(100 * (cpu_seconds(p) - start[name]) / elapsed, 3),
                   "rss_mb": round(p.memory_info().rss / 1e6, 1), "rss_peak_mb": round(peak[name] / 1e6, 1)}
            for name, p in processes.items()}


def peak_while(process: psutil.Process, action) -> dict:
    """RSS just before `action()` and its peak while it runs (sampled every 50 ms), MiB; `action`'s result."""
    before = peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = action()
    finally:
        done.set()
        sampler.join(5)
    return {"rss_before_mib": round(before / 2**20, 1), "rss_peak_mib": round(peak / 2**20, 1),
            "peak_over_idle_mib": round((peak - before) / 2**20, 1), "sent_ok": result}


def large_object_figures(workdir: Path, mib: int, targets: dict[str, tuple[psutil.Process, int, str]]) -> dict:
    """Send one `mib` MiB XA cine with storescu to each (process, port, called AE title); peak RSS of each."""
    from tests.large_objects import write_large_xa

    cine = write_large_xa(workdir / "cine.dcm", mib)
    figures: dict = {"object_mib": mib}
    for name, (process, port, called) in targets.items():
        def send() -> bool:
            result = subprocess.run([shutil.which("storescu") or "storescu", "-aet", "IDLEBENCH", "-aec", called,
                                     "-nh", "127.0.0.1", str(port), str(cine)], capture_output=True, timeout=600)
            time.sleep(1.0)  # let the receiver finish with the object while sampling
            return result.returncode == 0
        figures[name] = peak_while(process, send)
    cine.unlink()
    agent, base = figures["agent"]["peak_over_idle_mib"], figures["baseline"]["peak_over_idle_mib"]
    figures["agent_to_baseline_peak_over_idle_ratio"] = round(agent / base, 3) if base > 0 else None
    return figures


def start_agent(workdir: Path, broker: Mosquitto, emulators: list) -> AgentProcess:
    """The agent with the two instruments, the DICOM listener and the web server (defaults otherwise)."""
    ludlum, diamentor = emulators
    config = write_agent_config(workdir / "agent", broker.port, instruments=[
        {"id": "area-1", "driver": "ludlum_375", "port": ludlum.start()},
        {"id": "dap-1", "driver": "ptw_diamentor", "port": diamentor.start()},
    ])
    return AgentProcess(config).start()


def run(duration_s: float, warmup_s: float, large_object_mib: int = 0) -> dict:
    """Start everything, wait for the agent to be up and reading, measure, stop everything."""
    with tempfile.TemporaryDirectory(prefix="xray-idle-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "broker").start()
        emulators = [Ludlum375Emulator(link=str(workdir / "ttyL0"), every_s=2.0, random_mode=True),
                     DiamentorEmulator(link=str(workdir / "ttyD0"))]
        sub = Subscriber(broker.port).start()
        agent = baseline = None
        try:
            agent = start_agent(workdir, broker, emulators)
            baseline_port = free_port()
            baseline = subprocess.Popen([sys.executable, "-c", BASELINE, str(broker.port), str(baseline_port)],
                                        stdout=subprocess.PIPE, text=True, cwd=REPO)
            assert baseline.stdout.readline().strip() == "ready", "baseline process did not start"
            wait_for(lambda: sub.snapshot("/qc/reading"), 20, "a Ludlum reading through the agent")
            time.sleep(warmup_s)
            readings_before = len(sub.snapshot("/qc/reading"))
            figures = measure({"agent": psutil.Process(agent.proc.pid),
                               "baseline": psutil.Process(baseline.pid)}, duration_s)
            figures["readings_during_window"] = len(sub.snapshot("/qc/reading")) - readings_before
            figures["agent_alive"] = agent.proc.poll() is None
            if large_object_mib:
                agent_port = tomllib.loads(agent.config.read_text())["dicom"]["port"]
                figures["large_object"] = large_object_figures(workdir, large_object_mib, {
                    "agent": (psutil.Process(agent.proc.pid), agent_port, "XRAYAGENT"),
                    "baseline": (psutil.Process(baseline.pid), baseline_port, "BASELINE")})
                figures["agent_alive"] = agent.proc.poll() is None
            return figures
        finally:
            for proc in (baseline, agent.proc if agent else None):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(10)
            sub.stop()
            for emulator in emulators:
                emulator.stop()
            broker.kill()


def main() -> int:
    """Measure, print the JSON report, exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="measurement window, s")
    parser.add_argument("--warmup", type=float, default=5.0, help="wait after the first reading before measuring, s")
    parser.add_argument("--large-object-mib", type=int, default=400,
                        help="size of the object whose receiving peak memory is measured, MiB (0: skip)")
    args = parser.parse_args()
    figures = run(args.duration, args.warmup, args.large_object_mib)
    agent, base = figures["agent"], figures["baseline"]
    met = (agent["cpu_percent_of_one_core"] < CPU_TARGET_PERCENT and agent["rss_peak_mb"] < RSS_TARGET_MB
           and figures["agent_alive"])
    if "large_object" in figures:
        large = figures["large_object"]["agent"]
        met = met and large["sent_ok"] and large["peak_over_idle_mib"] < LARGE_OBJECT_OVER_IDLE_TARGET_MIB
    cpu_over = agent["cpu_percent_of_one_core"] - base["cpu_percent_of_one_core"]
    report = {"duration_s": args.duration, **figures,
              "agent_over_baseline": {
                  "cpu_percent_of_one_core": round(cpu_over, 3),
                  "rss_mb": round(agent["rss_mb"] - base["rss_mb"], 1),
                  "rss_ratio": round(agent["rss_mb"] / base["rss_mb"], 2) if base["rss_mb"] else None},
              "targets": {"cpu_percent_of_one_core_max": CPU_TARGET_PERCENT, "rss_mb_max": RSS_TARGET_MB,
                          **({"large_object_peak_over_idle_mib_max": LARGE_OBJECT_OVER_IDLE_TARGET_MIB}
                             if "large_object" in figures else {})},
              "targets_met": met}
    print(json.dumps(report, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
