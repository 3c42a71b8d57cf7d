"""Parking: a message the broker will not take leaves the delivery order instead of blocking it.

Two kinds of "will not take", both MQTT 5 only (MQTT 3.1.1 cannot tell a client that a publish was denied: the broker
acknowledges and drops it, or closes the connection):
- the broker answers the PUBLISH with a PUBACK reason code >= 0x80 (OASIS MQTT 5.0 section 3.4.2.1), e.g. 0x87 Not
  authorized from an ACL; sending it again would get the same answer;
- the PUBLISH packet would be larger than the Maximum Packet Size the broker announced in CONNACK (section
  3.2.2.3.6); the broker would close the connection on it (0x95 Packet too large), so it is not sent at all.

A parked message stays in the outbox, counted, until `xray-agent outbox retry` (or the retry-parked command) puts it
back. Messages behind it keep flowing; per-topic order holds among the rest.
"""

from __future__ import annotations

import logging
import time

from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

QUIET_S = 60.0  # after a topic's first parked message, further ones on that topic are summed up this often
# PUBACK reason codes that refuse the topic rather than the message (MQTT 5.0 table 3.4): every later message on it
# would be refused too, so they are parked without being sent. mosquitto 2.0 also closes the connection after a 0x87
# PUBACK: sending the topic's next message would cost a reconnect each.
TOPIC_REFUSALS = {0x87: "Not authorized", 0x90: "Topic Name invalid"}


def _varint_len(value: int) -> int:
    """Bytes of an MQTT Variable Byte Integer (section 1.5.5)."""
    return 1 if value < 128 else 2 if value < 16_384 else 3 if value < 2_097_152 else 4


def publish_packet_bytes(topic: str, payload: bytes, properties: Properties | None) -> int:
    """Size of a QoS 1 PUBLISH packet on the wire (MQTT 5.0 section 3.3): fixed header, topic, packet id,
    properties (their packed form carries its own length) and payload."""
    remaining = 2 + len(topic.encode()) + 2 + len(payload)
    if properties is not None:
        remaining += len(properties.pack())
    return 1 + _varint_len(remaining) + remaining


def too_large(topic: str, payload: bytes, properties: Properties | None, max_bytes: int | None) -> int | None:
    """The packet size when it exceeds the broker's Maximum Packet Size, else None. Cheap for the usual message:
    the exact size is computed only when payload and topic alone come near the limit."""
    if max_bytes is None or len(payload) + len(topic) + 512 < max_bytes:
        return None
    size = publish_packet_bytes(topic, payload, properties)
    return size if size > max_bytes else None


def topic_refused(reason_value: int) -> bool:
    """True when a PUBACK reason code refuses every message of the topic (an ACL), not just this one."""
    return reason_value in TOPIC_REFUSALS


def refused_reason(reason_value: int, reason_name: str) -> str | None:
    """Why a PUBACK refused the message, or None when it was accepted (codes below 0x80 are successes, e.g. 0x10 No
    matching subscribers)."""
    if reason_value < 0x80:
        return None
    return f"refused by the broker: {reason_name} (0x{reason_value:02X})"


class ParkLog:
    """One log line for the first parked message of a topic, then one summary per topic at most every QUIET_S: a
    refused topic fed by a meter must not write a line per reading."""

    def __init__(self, quiet_s: float = QUIET_S) -> None:
        self.quiet_s = quiet_s
        self._topics: dict[str, tuple[float, int]] = {}  # topic -> (monotonic time of the last line, parked since)

    def parked(self, topic: str, msg_id: str, reason: str) -> None:
        """Log (or count) one parked message."""
        now = time.monotonic()
        last = self._topics.get(topic)
        if last is None:
            self._topics[topic] = (now, 0)
            log.error("%s: message %s on %s parked (kept in the outbox, out of the delivery order; others keep "
                      "flowing). Fix the broker, then run: xray-agent outbox retry", reason, msg_id, topic)
        elif now - last[0] >= self.quiet_s:
            self._topics[topic] = (now, 0)
            log.error("%d more messages on %s parked in the last %.0f s (latest: %s); see xray-agent outbox stats",
                      last[1] + 1, topic, now - last[0], reason)
        else:
            self._topics[topic] = (last[0], last[1] + 1)
