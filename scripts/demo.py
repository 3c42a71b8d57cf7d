#!/usr/bin/env python3
"""Run the agent's main job on this machine: a local mosquitto, the agent, sample sources, and a subscriber that prints
what arrives. Everything lives in .demo/ and stops on Ctrl-C (or after --duration seconds).

Usage: python scripts/demo.py [--duration SECONDS] [--port PORT]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.outbox import Outbox  # noqa: E402
from agent.payloads.base import new_msg_id  # noqa: E402
from agent.payloads.exposure import ExposureEvent  # noqa: E402
from agent.pseudonym import make_ref  # noqa: E402
from agent.sink import Sink  # noqa: E402
from agent.topics import Topics  # noqa: E402
from tests.realparts import AgentProcess, Mosquitto, Subscriber, free_port, write_agent_config  # noqa: E402

DEMO = REPO / ".demo"
SITE, ROOM = "demo-site", "xr-01"
PROTOCOLS = [("CHEST", "PA", 120, 2.0), ("CHEST", "LL", 125, 4.0), ("HAND", "PA", 55, 1.6), ("KNEE", "AP", 65, 5.0)]


def sample_exposure(secret: bytes, n: int) -> ExposureEvent:
    """One plausible DX exposure; values jitter like a real room's."""
    body, view, kvp, mas = random.choice(PROTOCOLS)
    ei_target = 400.0
    ei = ei_target * random.uniform(0.6, 1.6)
    return ExposureEvent(
        msg_id=new_msg_id(), site=SITE, room=ROOM, source="image", modality="DX", manufacturer="DemoVendor",
        model="DemoDR 1", station_name="XR01", received_at=datetime.now(timezone.utc),
        acquired_at=datetime.now(timezone.utc), body_part=body, view=view, protocol=f"{body} {view}",
        kvp=float(kvp), exposure_mas=round(mas * random.uniform(0.9, 1.1), 2), exposure_time_ms=round(mas * 10, 1),
        tube_current_ma=100.0, dap_gy_m2=round(mas * kvp * 1e-6 * random.uniform(0.8, 1.2), 7),
        exposure_index=round(ei, 1), target_exposure_index=ei_target, sid_mm=1800.0,
        deviation_index=round(10 * math.log10(ei / ei_target), 2),
        study_ref=make_ref(secret, "study", f"demo-study-{n // 2}"), event_ref=make_ref(secret, "event", f"demo-{n}"))


def generate(outbox_path: Path, secret: bytes, stop: threading.Event, every_s: float) -> None:
    """Emit sample exposures into the agent's outbox, as the DICOM intake would."""
    box = Outbox(outbox_path, max_bytes=256 * 1024 * 1024)
    box.start()
    sink = Sink(box, Topics("xray/v1", SITE, ROOM))
    n = 0
    try:
        while not stop.wait(every_s):
            sink.emit(sample_exposure(secret, n))
            n += 1
    finally:
        box.stop()


def show(message) -> None:
    """One line per message, the way a dashboard developer wants to see them."""
    data = message.json()
    kind = message.topic.split(f"/{ROOM}/", 1)[-1]
    if kind == "exposure":
        detail = (f"{data['protocol']:<9} {data['kvp']:>5.0f} kV {data['exposure_mas']:>5.2f} mAs "
                  f"DAP {data['dap_gy_m2']:.2e} Gy·m² EI {data['exposure_index']:.0f} DI {data['deviation_index']:+.1f}")
    elif kind == "status":
        detail = f"online={data['online']} reason={data['reason']} version={data['version']}"
    else:
        detail = json.dumps(data)[:100]
    print(f"{datetime.now():%H:%M:%S}  {kind:<10} {detail}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: run until Ctrl-C)")
    parser.add_argument("--port", type=int, default=0, help="broker port (default: a free one)")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between sample exposures")
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    port = args.port or free_port()
    broker = Mosquitto(DEMO / "broker", port=port).start()
    print(f"==> mosquitto on 127.0.0.1:{port} (state in {DEMO})")
    config = write_agent_config(DEMO / "agent", port, site={"id": SITE, "room": ROOM})
    agent = AgentProcess(config).start()
    print(f"==> agent running with {config} (log: {agent.log_path})")
    subscriber = Subscriber(port, topic=f"xray/v1/{SITE}/{ROOM}/#", client_id="demo-subscriber")
    subscriber.client.on_message = lambda c, u, msg: show(_received(msg))
    subscriber.start()
    print(f"==> subscriber on xray/v1/{SITE}/{ROOM}/# ; sample exposures every {args.every:g} s. Ctrl-C stops.")
    secret = (DEMO / "agent" / "site.key").read_bytes().strip()
    generator = threading.Thread(target=generate, args=(DEMO / "agent" / "outbox.db", secret, stop, args.every))
    generator.start()
    deadline = time.monotonic() + args.duration if args.duration else None
    while not stop.wait(0.2):
        if deadline and time.monotonic() > deadline:
            stop.set()
        if agent.proc.poll() is not None:
            print(f"agent exited with status {agent.proc.returncode}; see {agent.log_path}", file=sys.stderr)
            stop.set()
    print("==> stopping")
    generator.join()
    rc = agent.terminate() if agent.proc.poll() is None else agent.proc.returncode
    time.sleep(0.3)  # let the offline status arrive
    subscriber.stop()
    broker.stop()
    return rc


def _received(msg):
    from tests.realparts import Received

    props = getattr(msg, "properties", None)
    return Received(msg.topic, msg.payload, bool(msg.retain), dict(getattr(props, "UserProperty", []) or []),
                    getattr(props, "ContentType", None))


if __name__ == "__main__":
    sys.exit(main())
