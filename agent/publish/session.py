"""One MQTT connection and its session: the paho client, CONNACK (refusals, the broker's Maximum Packet Size) and how
a connection ended, in words a biomedical engineer or IT can act on.

Each connection gets a fresh paho client (no half-sent state of an old connection survives it) whose network loop
runs in paho's own thread with reconnect_on_failure off: the publisher's feeder thread decides when to reconnect.
"""

from __future__ import annotations

import collections
import json
import ssl
import threading
from dataclasses import dataclass, field
from datetime import datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.config import Config
from agent.outbox import StoredMessage

CONNACK_TIMEOUT_S = 10.0
# MQTT 5 reason codes (OASIS MQTT 5.0, section 2.4 and the CONNACK/DISCONNECT tables 3.1 and 3.10).
CLIENT_ID_NOT_VALID = 0x85  # CONNACK; paho maps MQTT 3.1.1's "identifier rejected" (2) to it as well
SESSION_TAKEN_OVER = 0x8E  # DISCONNECT: another connection with the same client id took the session


class ConnectFailed(Exception):
    """One connection attempt failed; the message says why in words a biomed or IT can act on."""


@dataclass
class Connection:
    """One connection's state, shared between paho's network thread (callbacks) and the feeder thread."""

    client: mqtt.Client
    connack: threading.Event = field(default_factory=threading.Event)
    connack_error: str = ""
    refused_client_id: bool = False
    max_packet_bytes: int | None = None  # the broker's Maximum Packet Size (MQTT 5 CONNACK property 0x27)
    connected_at: float = 0.0  # monotonic, once CONNACK accepted the connection
    lost: threading.Event = field(default_factory=threading.Event)
    acked: collections.deque = field(default_factory=collections.deque)  # (mid, reason value, reason name)
    inflight: dict[int, StoredMessage] = field(default_factory=dict)
    cursor: int = 0
    refill_at: int = 1
    skip: set[int] = field(default_factory=set)  # seqs already in flight when the cursor went back (a retry)
    probing: bool = False  # one row at a time, to find a message the broker closes the connection on
    retried_seen: int = 0  # the outbox's `retried` counter as last acted on


def describe_connect_error(exc: BaseException, cfg: Config) -> str:
    """Turn a socket/TLS exception into a sentence that says what to check."""
    where = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS certificate verification failed for broker {where}: {exc.verify_message}; "
                f"check that mqtt.ca_file ({cfg.mqtt.ca_file or 'system CAs'}) holds the CA that signed the broker's "
                f"certificate and that the certificate names host '{cfg.mqtt.host}'")
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with broker {where} failed: {exc.reason or exc}; check mqtt.cert_file/key_file and the URL scheme"
    if isinstance(exc, ConnectionRefusedError):
        return f"broker {where} refused the connection (nothing listening?)"
    if isinstance(exc, OSError):
        return f"cannot reach broker {where}: {exc.strerror or exc}"
    return f"cannot connect to broker {where}: {exc}"


def client_id_clash(client_id: str) -> str:
    """The likely cause when the broker hands our session to someone else or refuses our client id."""
    return (f"another process uses client id {client_id}: a second agent or a cloned configuration "
            f"(set mqtt.client_id, or site.id/site.room, to something unique per room)")


def describe_refusal(cfg: Config, reason_code) -> tuple[str, bool]:
    """(sentence, client id refused) for a CONNACK with a failure reason code."""
    if reason_code.value == CLIENT_ID_NOT_VALID:
        words = (f"broker {cfg.mqtt.host}:{cfg.mqtt.port} refused client id {cfg.client_id} ({reason_code}, "
                 f"0x{reason_code.value:02X}); {client_id_clash(cfg.client_id)}, or the broker restricts client ids")
        return words, True
    return (f"broker {cfg.mqtt.host}:{cfg.mqtt.port} refused the connection: {reason_code} "
            f"(check mqtt.username/password_file and the broker's ACL)"), False


def describe_disconnect(cfg: Config, reason_code, taken_over: bool) -> str:
    """How a connection that was up ended; taken_over: the session went to another client with our client id."""
    if taken_over:
        return f"session taken over: {client_id_clash(cfg.client_id)}"
    return f"connection lost: {reason_code}"


def rival_boot_id(payload: bytes, own_boot_id: str, started_at: datetime) -> str | None:
    """The boot id of another agent run publishing this room's status now, read from a message on our own status
    topic; None for our own messages and for ones written before this run started (a previous run's last will).

    Why: mosquitto 2.0 closes the old connection of a client id taken over without the DISCONNECT 0x8E of MQTT 5.0
    section 3.1.4, so a dropped connection alone does not say who took it; the other agent's birth status (or its last
    will, which the broker publishes when we take the session back) on our status topic does.
    """
    try:
        status = json.loads(payload)
        boot_id, ts = status["boot_id"], datetime.fromisoformat(status["ts"].replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(boot_id, str) or boot_id == own_boot_id or ts.tzinfo is None or ts < started_at:
        return None
    return boot_id


def subscribe_options(cfg: Config, skip_retained: bool) -> dict:
    """Keyword arguments of client.subscribe for QoS 1; skip_retained (MQTT 5): no retained message on subscribing."""
    if cfg.mqtt.protocol != "5":
        return {"qos": 1}
    handling = SubscribeOptions.RETAIN_DO_NOT_SEND if skip_retained else SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE
    return {"options": SubscribeOptions(qos=1, retainHandling=handling)}


def session_args(cfg: Config) -> dict:
    """MQTT 5 with commands: a session the broker keeps while we are away, so a command sent meanwhile waits
    (each until its own message expiry) instead of being dropped."""
    expiry_s = cfg.commands.session_expiry_s if cfg.commands.enabled else 0
    if cfg.mqtt.protocol != "5" or not expiry_s:
        return {}
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry_s
    return {"clean_start": False, "properties": props}


def new_client(cfg: Config, password: str | None) -> mqtt.Client:
    """A paho client for one connection: protocol, credentials, TLS and the inflight window set; no callbacks yet."""
    m = cfg.mqtt
    protocol = mqtt.MQTTv5 if m.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=protocol,
                         reconnect_on_failure=False)
    client.max_inflight_messages_set(m.max_inflight)
    if m.username:
        client.username_pw_set(m.username, password)
    if m.tls:
        # CERT_REQUIRED with hostname checking: paho leaves tls_insecure False, so the broker's name is verified.
        client.tls_set(ca_certs=str(m.ca_file) if m.ca_file else None,
                       certfile=str(m.cert_file) if m.cert_file else None,
                       keyfile=str(m.key_file) if m.key_file else None, cert_reqs=ssl.CERT_REQUIRED)
    return client


def open_connection(cfg: Config, conn: Connection) -> None:
    """Connect and wait for CONNACK; raises ConnectFailed saying why (the caller closes conn)."""
    try:
        conn.client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=cfg.mqtt.keepalive_s, **session_args(cfg))
    except (OSError, ValueError) as exc:
        raise ConnectFailed(describe_connect_error(exc, cfg)) from None
    conn.client.loop_start()
    if not conn.connack.wait(CONNACK_TIMEOUT_S) or conn.connack_error:
        raise ConnectFailed(conn.connack_error or f"broker {cfg.mqtt.host}:{cfg.mqtt.port} "
                            f"did not answer CONNECT within {CONNACK_TIMEOUT_S:.0f} s")


def on_connack(cfg: Config, conn: Connection, reason_code, properties) -> bool:
    """Record a CONNACK (paho's thread); True when the connection is up."""
    if reason_code.is_failure:
        conn.connack_error, conn.refused_client_id = describe_refusal(cfg, reason_code)
    else:
        conn.max_packet_bytes = getattr(properties, "MaximumPacketSize", None)
    conn.connack.set()
    return not reason_code.is_failure


def close(conn: Connection) -> None:
    """Send DISCONNECT if the socket still allows it and stop paho's network thread."""
    try:
        conn.client.disconnect()
    except Exception:  # noqa: BLE001 - a half-dead socket may fail to send DISCONNECT; nothing to do about it
        pass
    conn.client.loop_stop()
