"""Real parts for integration tests: a mosquitto broker on a free loopback port, an MQTT subscriber, and the agent
itself as a subprocess. Nothing here is a mock; every helper stops what it started."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll `predicate` until it returns a truthy value; fail the test naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Mosquitto:
    """A mosquitto process with persistence, so a restart keeps queued messages of persistent sessions."""

    def __init__(self, workdir: Path, port: int | None = None, tls: dict | None = None, extra: tuple[str, ...] = ()):
        """extra: more mosquitto.conf lines (acl_file, max_packet_size, log_type notice ...)."""
        self.exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(self.exe):
            raise RuntimeError("mosquitto is not installed; scripts/test.sh installs it (apt-get install mosquitto)")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls
        self.extra = tuple(extra)
        self.proc: subprocess.Popen | None = None
        self.conf = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._write_conf()

    def _write_conf(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "max_queued_messages 0",  # 0 = unlimited: a stopped subscriber must not lose the backlog
            "max_inflight_messages 100",
            "log_type error",
            "log_type warning",
            "log_dest stderr",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise mosquitto drops to user 'mosquitto', which cannot read tmp dirs
        if self.tls:
            lines += [f"cafile {self.tls['ca']}", f"certfile {self.tls['cert']}", f"keyfile {self.tls['key']}"]
            if self.tls.get("require_certificate"):
                lines.append("require_certificate true")
        lines += self.extra
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log_path, "ab"))
        wait_for(self._listening, 10, f"mosquitto on port {self.port}")
        return self

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()[-2000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def start_with_subscriber(self, topic: str = "xray/#") -> "Subscriber":
        """Start with a persistent subscriber session already registered, so that nothing published by a client
        that connects the moment the broker is up (an agent retrying) is missed; returns the connected subscriber."""
        real_port, self.port = self.port, free_port()
        self._write_conf()
        self.start()
        first = Subscriber(self.port, topic=topic).start()
        first.stop()
        self.stop()  # the session survives in the persistence file
        self.port = real_port
        self._write_conf()
        self.start()
        return Subscriber(self.port, topic=topic, client_id=first.client_id).start()

    def connects(self, client_id: str) -> int:
        """Connections the broker accepted from client_id so far (needs `log_type notice` in extra)."""
        return sum(1 for line in self.log_path.read_text(errors="replace").splitlines()
                   if "New client connected" in line and f" as {client_id} " in line)

    def reload(self) -> None:
        """SIGHUP: mosquitto reloads its configuration, the ACL file included."""
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """Clean stop (SIGTERM): mosquitto writes its persistence file."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    user_properties: dict
    content_type: str | None

    def json(self) -> dict:
        return json.loads(self.payload)

    @classmethod
    def from_paho(cls, msg) -> "Received":
        props = getattr(msg, "properties", None)
        return cls(msg.topic, msg.payload, bool(msg.retain), dict(getattr(props, "UserProperty", []) or []),
                   getattr(props, "ContentType", None))


@dataclass
class Subscriber:
    """An MQTT 5 subscriber with a persistent session (as central subscribers should run), QoS 1."""

    port: int
    topic: str = "xray/#"
    client_id: str = field(default_factory=lambda: f"test-sub-{os.getpid()}-{time.monotonic_ns()}")
    tls: dict | None = None
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        if self.tls:
            self.client.tls_set(ca_certs=self.tls["ca"], certfile=self.tls.get("client_cert"),
                                keyfile=self.tls.get("client_key"))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.reconnect_delay_set(0.1, 0.5)

    def start(self) -> "Subscriber":
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.port, keepalive=10, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("subscriber could not subscribe")
        return self

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg):
        received = Received.from_paho(msg)
        with self._lock:
            self.messages.append(received)

    def snapshot(self, suffix: str | None = None) -> list[Received]:
        with self._lock:
            items = list(self.messages)
        return [m for m in items if suffix is None or m.topic.endswith(suffix)]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def write_agent_config(workdir: Path, broker_port: int, instruments: list[dict] = (), **overrides) -> Path:
    """An agent config in workdir talking to a broker on 127.0.0.1:broker_port; `overrides` are TOML sections,
    `instruments` the [[instruments]] entries."""
    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / "site.key"
    if not key.exists():
        key.write_text(os.urandom(32).hex())
        key.chmod(0o600)
    sections = {
        "site": {"id": "test-site", "room": "xr-01", "secret_key_file": str(key)},
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker_port}", "reconnect_min_s": 0.1, "reconnect_max_s": 1.0},
        "outbox": {"path": str(workdir / "outbox.db")},
        "dicom": {"port": free_port(), "bind": "127.0.0.1", "quarantine_dir": str(workdir / "quarantine")},
        "web": {"port": free_port()},  # agents of one test (and of concurrent test runs) must not share a port
    }
    for name, values in overrides.items():
        sections.setdefault(name, {}).update(values)
    # dotted names ("dicom.folder") are TOML sub-tables and must follow their parent table
    text = "\n".join(f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
                     for name, values in sorted(sections.items(), key=lambda item: item[0].count(".")))
    text += "".join("\n[[instruments]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in entry.items())
                    for entry in instruments)
    path = workdir / "agent.toml"
    path.write_text(text)
    return path


def _toml(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


class AgentProcess:
    """`xray-agent run` as a real subprocess, logging to a file."""

    def __init__(self, config: Path):
        self.config = config
        self.log_path = config.parent / "agent.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "AgentProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(self.config)],
                                     cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "ab"))
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 10) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def ensure_stopped(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
