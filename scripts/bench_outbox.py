#!/usr/bin/env python3
"""Benchmark the outbox and publisher against baselines measured in the same run, on this machine.

Prints one JSON object:
- durable enqueue rate of the outbox (concurrent producers, as DICOM associations and serial readers are) versus raw
  SQLite single-row commits with the same durability (WAL, synchronous=FULL);
- drain rate from the outbox to a local mosquitto versus raw paho QoS 1 publishing of the same payloads.
Ratios are what to compare across machines; absolute rates depend on the disk and CPU.

Usage: python scripts/bench_outbox.py [--messages 20000] [--producers 16] [--payload-bytes 600]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from agent.config import Config  # noqa: E402
from agent.outbox import Outbox, OutMessage, connect  # noqa: E402
from agent.publisher import Publisher, publish_properties  # noqa: E402
from tests.realparts import Mosquitto, wait_for  # noqa: E402

TOPIC = "xray/v1/bench/xr-01/exposure"
AGENT_DEFAULTS = Config.model_validate({"site": {"id": "bench", "room": "xr-01", "secret_key_file": "/k"}})


def payload(i: int, size: int) -> bytes:
    body = json.dumps({"schema": "xray.exposure/1", "msg_id": f"b{i:08d}", "n": i}).encode()
    return body + b" " * max(0, size - len(body))


def raw_sqlite_commits(folder: Path, count: int, size: int) -> float:
    """Rows/s for one INSERT + COMMIT per row with WAL and synchronous=FULL: the durability the outbox gives."""
    conn = connect(folder / "raw.db")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, msg_id TEXT UNIQUE, topic TEXT, payload BLOB)")
    started = time.perf_counter()
    for i in range(count):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (msg_id, topic, payload) VALUES (?, ?, ?)", (f"r{i}", TOPIC, payload(i, size)))
        conn.execute("COMMIT")
    rate = count / (time.perf_counter() - started)
    conn.close()
    return rate


def outbox_enqueue(folder: Path, count: int, size: int, producers: int) -> float:
    """Messages/s durably enqueued by `producers` threads, each waiting for its own commit."""
    box = Outbox(folder / f"enqueue-{producers}.db", max_bytes=10**10)
    box.start()
    per = count // producers

    def produce(k: int) -> None:
        for i in range(k * per, (k + 1) * per):
            box.enqueue([OutMessage(f"e{i:08d}", TOPIC, payload(i, size))])

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = per * producers / (time.perf_counter() - started)
    box.stop()
    return rate


def raw_paho(port: int, count: int, size: int, inflight: int, with_properties: bool) -> float:
    """Messages/s published with QoS 1 by a bare paho client until the last PUBACK.

    with_properties: the same MQTT 5 properties the agent sends (content type, msg_id user property), and the same
    session the agent asks for (kept by the broker while away, for queued commands: it costs the broker about 10%),
    so the ratio measures the outbox and publisher rather than the cost of the wire format or session type.
    """
    done = threading.Event()
    acked = [0]

    def on_publish(client, userdata, mid, reason_code, properties):
        acked[0] += 1
        if acked[0] == count:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(inflight)
    client.on_publish = on_publish
    if with_properties:
        session = Properties(PacketTypes.CONNECT)
        session.SessionExpiryInterval = AGENT_DEFAULTS.commands.session_expiry_s
        client.connect("127.0.0.1", port, clean_start=False, properties=session)
    else:
        client.connect("127.0.0.1", port)
    client.loop_start()
    payloads = [payload(i, size) for i in range(count)]
    started = time.perf_counter()
    for i, p in enumerate(payloads):
        client.publish(TOPIC, p, qos=1, properties=publish_properties(f"r{i:08d}") if with_properties else None)
    if not done.wait(300):
        raise RuntimeError("raw paho: PUBACKs missing")
    rate = count / (time.perf_counter() - started)
    client.disconnect()
    client.loop_stop()
    return rate


def outbox_drain(folder: Path, port: int, count: int, size: int) -> float:
    """Messages/s from a full outbox to PUBACK and removal, through the agent's Publisher."""
    path = folder / "drain.db"
    box = Outbox(path, max_bytes=10**10)
    box.start()
    for start in range(0, count, 500):
        box.enqueue([OutMessage(f"d{i:08d}", TOPIC, payload(i, size)) for i in range(start, min(count, start + 500))])
    cfg = Config.model_validate({"site": {"id": "bench", "room": "xr-01", "secret_key_file": str(folder / "k")},
                                 "mqtt": {"url": f"mqtt://127.0.0.1:{port}", "client_id": "bench-agent"},
                                 "outbox": {"path": str(path)}})
    publisher = Publisher(cfg, box)
    started = time.perf_counter()
    publisher.start()
    wait_for(lambda: publisher.state.acked_total >= count, 300, "drain", interval=0.002)
    rate = count / (time.perf_counter() - started)
    publisher.stop()
    wait_for(lambda: box.depth() == 0, 30, "acks committed")
    box.stop()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--commits", type=int, default=3000, help="rows for the single-commit baselines")
    parser.add_argument("--producers", type=int, default=16)
    parser.add_argument("--payload-bytes", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xray-bench-") as tmp:
        folder = Path(tmp)
        broker = Mosquitto(folder / "broker").start()
        try:
            print("measuring raw SQLite FULL commits ...", file=sys.stderr)
            raw_commit = raw_sqlite_commits(folder, args.commits, args.payload_bytes)
            print("measuring outbox enqueue ...", file=sys.stderr)
            enqueue_1 = outbox_enqueue(folder, args.commits, args.payload_bytes, producers=1)
            enqueue_n = outbox_enqueue(folder, args.commits * 2, args.payload_bytes, producers=args.producers)
            # The paho baselines run before and after the drain and the faster run counts, so a slow moment of the
            # machine cannot flatter the ratio.
            inflight = Config.model_fields["mqtt"].default.max_inflight
            print("measuring raw paho QoS 1 ...", file=sys.stderr)
            same = [raw_paho(broker.port, args.messages, args.payload_bytes, inflight, with_properties=True)]
            bare = [raw_paho(broker.port, args.messages, args.payload_bytes, inflight, with_properties=False)]
            print("measuring outbox drain ...", file=sys.stderr)
            drain = outbox_drain(folder, broker.port, args.messages, args.payload_bytes)
            print("measuring raw paho QoS 1 again ...", file=sys.stderr)
            same.append(raw_paho(broker.port, args.messages, args.payload_bytes, inflight, with_properties=True))
            bare.append(raw_paho(broker.port, args.messages, args.payload_bytes, inflight, with_properties=False))
            paho_same, paho_bare = max(same), max(bare)
        finally:
            broker.kill()
    result = {
        "payload_bytes": args.payload_bytes,
        "raw_sqlite_full_commit_per_s": round(raw_commit),
        "durable_enqueue_per_s": round(enqueue_n),
        "durable_enqueue_producers": args.producers,
        "durable_enqueue_single_producer_per_s": round(enqueue_1),
        "enqueue_ratio": round(enqueue_n / raw_commit, 2),
        "enqueue_target": 1.0,
        "raw_paho_qos1_same_messages_per_s": round(paho_same),
        "raw_paho_qos1_no_properties_per_s": round(paho_bare),
        "drain_per_s": round(drain),
        "drain_ratio": round(drain / paho_same, 2),
        "drain_ratio_vs_no_properties": round(drain / paho_bare, 2),
        "drain_target": 0.8,
        "max_inflight": inflight,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["enqueue_ratio"] >= 1.0 and result["drain_ratio"] >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
