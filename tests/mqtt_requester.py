"""An MQTT 5 requester for the agent's command topic: publishes requests with ResponseTopic, CorrelationData and
MessageExpiryInterval, and collects the replies on its own response topic by correlation data."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timezone

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.realparts import wait_for


class Requester:
    """Sends commands to `{base}/cmd` and waits for replies on `replies/{id}`."""

    def __init__(self, port: int, base: str) -> None:
        self.port, self.cmd_topic = port, f"{base}/cmd"
        self.reply_topic = f"replies/{uuid.uuid4().hex}"
        self.replies: dict[bytes, dict] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"requester-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.reply_topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message

    def start(self) -> "Requester":
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(10), "requester could not subscribe"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client, userdata, msg) -> None:
        correlation = getattr(msg.properties, "CorrelationData", None)
        with self._lock:
            self.replies[correlation] = json.loads(msg.payload)

    def send(self, command: str, args: dict | None = None, *, expiry_s: int | None = 30, ts: datetime | None = None,
             response_topic: str | None = None, retain: bool = False, raw: bytes | None = None) -> bytes:
        """Publish one request (QoS 1); returns its correlation data."""
        correlation = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response_topic or self.reply_topic
        props.CorrelationData = correlation
        if expiry_s is not None:
            props.MessageExpiryInterval = expiry_s
        body = {"command": command, "args": args or {},
                "ts": (ts or datetime.now(timezone.utc)).isoformat().replace("+00:00", "Z")}
        info = self.client.publish(self.cmd_topic, raw if raw is not None else json.dumps(body), qos=1,
                                   retain=retain, properties=props)
        info.wait_for_publish(10)
        return correlation

    def reply(self, correlation: bytes, timeout: float = 10) -> dict:
        """The reply with this correlation data (waits)."""
        return wait_for(lambda: self.replies.get(correlation), timeout, "a command reply")

    def request(self, command: str, args: dict | None = None, **kwargs) -> dict:
        """Send and wait for the reply."""
        return self.reply(self.send(command, args, **kwargs))
