"""MQTT publisher: drains the outbox to the broker with QoS 1; a row leaves the outbox only on its PUBACK.

One feeder thread owns the connection's life. Each connection gets a fresh paho client (so no half-sent state of an
old connection survives it) whose network loop runs in paho's own thread with reconnect_on_failure off; the feeder
reconnects with tenacity's jittered exponential backoff and logs once per outage. After a reconnect every row not yet
acknowledged is sent again from the oldest, so per-topic order holds and any duplicate repeats its msg_id.
"""

from __future__ import annotations

import collections
import logging
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from tenacity import RetryError, Retrying, retry_if_exception_type, wait_random_exponential

from agent import __version__
from agent.config import Config
from agent.outbox import Outbox, StoredMessage
from agent.payloads.base import new_msg_id
from agent.payloads.status import AgentStatus
from agent.topics import Topics

log = logging.getLogger(__name__)

CONNACK_TIMEOUT_S = 10.0
SHUTDOWN_FLUSH_S = 2.0
CONTENT_TYPE = "application/json"
PAHO_QUEUE_WINDOWS = 4


class ConnectFailed(Exception):
    """One connection attempt failed; the message says why in words a biomed or IT can act on."""


@dataclass
class PublisherState:
    """Figures for status and health."""

    connected: bool = False
    connects: int = 0
    last_puback_at: float | None = None
    published_total: int = 0
    acked_total: int = 0
    rejected_total: int = 0  # PUBACK with a failure reason code (MQTT 5): kept and retried later
    last_error: str = ""
    down_since: float | None = field(default_factory=time.monotonic)  # monotonic; None while connected
    last_outage_s: float | None = None  # length of the last outage that ended (not the wait for the first connect)
    busy_at: float = field(default_factory=time.monotonic)  # the feeder thread's last sign of life (watchdog)
    idle_until: float = 0.0  # end of the reconnect backoff the feeder sleeps in (monotonic)

    @property
    def reconnects(self) -> int:
        """Connections after the first one."""
        return max(0, self.connects - 1)

    def stuck(self, now: float, limit_s: float) -> bool:
        """True when the feeder thread has shown no life for limit_s beyond any backoff it sleeps in."""
        return now - max(self.busy_at, self.idle_until) > limit_s


@dataclass
class _Connection:
    client: mqtt.Client
    connack: threading.Event = field(default_factory=threading.Event)
    connack_error: str = ""
    lost: threading.Event = field(default_factory=threading.Event)
    acked: collections.deque = field(default_factory=collections.deque)  # (mid, ok) appended by paho's thread
    inflight: dict[int, StoredMessage] = field(default_factory=dict)
    cursor: int = 0
    refill_at: int = 1


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


class Publisher:
    """Publishes the outbox's messages and the agent's retained status."""

    def __init__(self, cfg: Config, outbox: Outbox, boot_id: str | None = None):
        self.cfg = cfg
        self.outbox = outbox
        self.topics = Topics(cfg.mqtt.topic_prefix, cfg.site.id, cfg.site.room)
        self.boot_id = boot_id or new_msg_id()
        self.state = PublisherState()
        self._stop = threading.Event()
        self._status_dirty = threading.Event()
        self._thread: threading.Thread | None = None
        self._password = cfg.mqtt.password_file.read_text().strip() if cfg.mqtt.password_file else None
        self._outage_started: float | None = None
        self._published_full: bool | None = None  # outbox_full as last published in the status
        self._wake = threading.Event()  # ends a reconnect backoff early (stop, or a flush-outbox command)
        self._subscriptions: dict[str, tuple[Callable[[mqtt.MQTTMessage], None], bool]] = {}
        self._conn: _Connection | None = None  # the live connection, for replies published outside the outbox

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the feeder thread (again, after stop(): the supervisor restarts a publisher whose thread died)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 4.0) -> None:
        """Publish the retained offline status, wait briefly for outstanding PUBACKs, disconnect."""
        self._stop.set()
        self._wake.set()
        self.outbox.changed.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def check_status(self) -> None:
        """Re-publish the retained status if what it says about the outbox is no longer true (supervisor tick)."""
        if self.state.connected and self.outbox.refusing != self._published_full:
            self.request_status()

    def request_status(self) -> None:
        """Publish the retained status again on the current connection (an "update")."""
        self._status_dirty.set()
        self.outbox.changed.set()

    def wake(self) -> None:
        """Try to deliver now: end a reconnect backoff early and look at the outbox again."""
        self._wake.set()
        self.outbox.changed.set()

    # ---- messages to the agent (the command topic) --------------------------------------------------------------
    def add_subscription(self, topic_filter: str, on_message: Callable[[mqtt.MQTTMessage], None],
                         skip_retained: bool = False) -> None:
        """Subscribe to topic_filter (QoS 1) on every connection; skip_retained (MQTT 5): the broker does not send
        the retained message on subscribing. on_message runs in paho's network thread: it must hand the message off
        and return at once. Register before start()."""
        self._subscriptions[topic_filter] = (on_message, skip_retained)

    def publish_direct(self, topic: str, payload: bytes, properties: Properties | None = None) -> bool:
        """Publish outside the outbox on the live connection (QoS 1, not retained); False when not connected."""
        conn = self._conn
        if conn is None or conn.lost.is_set():
            return False
        info = conn.client.publish(topic, payload, qos=1, properties=properties)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def _dispatch(self, msg: mqtt.MQTTMessage) -> None:
        for topic_filter, (on_message, _) in self._subscriptions.items():
            if mqtt.topic_matches_sub(topic_filter, msg.topic):
                try:
                    on_message(msg)
                except Exception:  # noqa: BLE001 - a handler bug must not take down paho's network thread
                    log.exception("error handling a message on %s", msg.topic)

    # ---- the feeder thread -------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            conn = self._connect_with_backoff()
            if conn is None:
                return
            try:
                self._pump(conn)
            finally:
                self._close(conn)

    def _connect_with_backoff(self) -> _Connection | None:
        retrying = Retrying(
            wait=wait_random_exponential(multiplier=self.cfg.mqtt.reconnect_min_s, max=self.cfg.mqtt.reconnect_max_s),
            retry=retry_if_exception_type(ConnectFailed),
            stop=lambda _state: self._stop.is_set(),
            sleep=self._backoff_sleep,
            before_sleep=self._log_retry,
        )
        try:
            conn = retrying(self._connect_once)
        except RetryError:
            return None
        if self._outage_started is not None:
            log.warning("broker %s:%d reachable again after %.1f s; sending what was buffered",
                        self.cfg.mqtt.host, self.cfg.mqtt.port, time.monotonic() - self._outage_started)
            self._outage_started = None
        else:
            log.info("connected to broker %s:%d as %s", self.cfg.mqtt.host, self.cfg.mqtt.port, self.cfg.client_id)
        return conn

    def _backoff_sleep(self, seconds: float) -> None:
        self.state.idle_until = time.monotonic() + seconds
        self._wake.wait(seconds)
        self._wake.clear()
        self.state.busy_at = time.monotonic()

    def _log_retry(self, retry_state) -> None:
        error = str(retry_state.outcome.exception())
        self.state.last_error = error
        if self._outage_started is None:
            self._outage_started = time.monotonic()
            log.error("%s; buffering in the outbox and retrying with backoff (logged once per outage)", error)
        else:
            log.debug("reconnect attempt %d failed: %s", retry_state.attempt_number, error)

    def _connect_once(self) -> _Connection:
        conn = self._new_connection()
        self.state.busy_at = time.monotonic()
        try:
            conn.client.connect(self.cfg.mqtt.host, self.cfg.mqtt.port, keepalive=self.cfg.mqtt.keepalive_s,
                                **self._session_args())
        except (OSError, ValueError) as exc:
            raise ConnectFailed(describe_connect_error(exc, self.cfg)) from None
        conn.client.loop_start()
        if not conn.connack.wait(CONNACK_TIMEOUT_S) or conn.connack_error:
            self._close(conn)
            raise ConnectFailed(conn.connack_error or f"broker {self.cfg.mqtt.host}:{self.cfg.mqtt.port} "
                                f"did not answer CONNECT within {CONNACK_TIMEOUT_S:.0f} s")
        now = time.monotonic()
        if self.state.connects and self.state.down_since is not None:
            self.state.last_outage_s = now - self.state.down_since
        self.state.connected, self.state.down_since = True, None
        self.state.connects += 1
        return conn

    def _subscribe_options(self, skip_retained: bool) -> dict:
        if self.cfg.mqtt.protocol != "5":
            return {"qos": 1}
        handling = SubscribeOptions.RETAIN_DO_NOT_SEND if skip_retained else SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE
        return {"options": SubscribeOptions(qos=1, retainHandling=handling)}

    def _session_args(self) -> dict:
        """MQTT 5 with commands: a session the broker keeps while we are away, so a command sent meanwhile waits
        (each until its own message expiry) instead of being dropped."""
        expiry_s = self.cfg.commands.session_expiry_s if self.cfg.commands.enabled else 0
        if self.cfg.mqtt.protocol != "5" or not expiry_s:
            return {}
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = expiry_s
        return {"clean_start": False, "properties": props}

    def _new_connection(self) -> _Connection:
        m = self.cfg.mqtt
        protocol = mqtt.MQTTv5 if m.protocol == "5" else mqtt.MQTTv311
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.cfg.client_id, protocol=protocol,
                             reconnect_on_failure=False)
        client.max_inflight_messages_set(m.max_inflight)
        if m.username:
            client.username_pw_set(m.username, self._password)
        if m.tls:
            # CERT_REQUIRED with hostname checking: paho leaves tls_insecure False, so the broker's name is verified.
            client.tls_set(ca_certs=str(m.ca_file) if m.ca_file else None,
                           certfile=str(m.cert_file) if m.cert_file else None,
                           keyfile=str(m.key_file) if m.key_file else None, cert_reqs=ssl.CERT_REQUIRED)
        will = self._status("lost", online=False)
        client.will_set(self.topics.topic("status"), will.to_json_bytes(), qos=1, retain=True,
                        properties=self._properties(will.msg_id, PacketTypes.WILLMESSAGE))
        conn = _Connection(client)
        client.on_connect = lambda c, u, flags, rc, props: self._on_connect(conn, rc)
        client.on_disconnect = lambda c, u, flags, rc, props: self._on_disconnect(conn, rc)
        client.on_publish = lambda c, u, mid, rc, props: self._on_publish(conn, mid, rc)
        client.on_message = lambda c, u, msg: self._dispatch(msg)
        return conn

    def _on_publish(self, conn: _Connection, mid: int, reason_code) -> None:
        conn.acked.append((mid, not reason_code.is_failure))
        if len(conn.acked) >= conn.refill_at:
            self.outbox.changed.set()  # wake the feeder once a useful share of the window is free

    def _on_connect(self, conn: _Connection, reason_code) -> None:
        if reason_code.is_failure:
            conn.connack_error = (f"broker {self.cfg.mqtt.host}:{self.cfg.mqtt.port} refused the connection: "
                                  f"{reason_code} (check mqtt.username/password_file and the broker's ACL)")
        else:
            # Set here, in paho's thread, before it hands over anything a resumed session had queued (commands): their
            # replies must find the connection.
            self._conn = conn
        conn.connack.set()

    def _on_disconnect(self, conn: _Connection, reason_code) -> None:
        conn.lost.set()
        self.outbox.changed.set()
        if conn.connack.is_set() and not self._stop.is_set():
            self._outage_started = time.monotonic()
            self.state.last_error = f"connection lost: {reason_code}"
            log.error("lost connection to broker %s:%d (%s); buffering and reconnecting",
                      self.cfg.mqtt.host, self.cfg.mqtt.port, reason_code)

    def _close(self, conn: _Connection) -> None:
        self.state.connected, self._conn = False, None
        if self.state.down_since is None:
            self.state.down_since = time.monotonic()
        try:
            conn.client.disconnect()
        except Exception:  # noqa: BLE001 - a half-dead socket may fail to send DISCONNECT; nothing to do about it
            pass
        conn.client.loop_stop()

    # ---- publishing --------------------------------------------------------------------------------------------
    def _pump(self, conn: _Connection) -> None:
        """Publish from the outbox until the connection is lost or the agent stops."""
        self.outbox.ack((), wait=True)  # acks of the previous connection are committed before we re-read
        self._publish_status(conn, "birth")
        for topic_filter, (_, skip_retained) in self._subscriptions.items():
            conn.client.subscribe(topic_filter, **self._subscribe_options(skip_retained))
        # paho keeps at most max_inflight unacknowledged on the wire and queues the rest, sending the next one from its
        # own thread the moment a PUBACK arrives; handing it a few windows' worth keeps the link busy between our
        # wake-ups, and waking only when a quarter of that is acknowledged keeps the wake-ups few.
        window = self.cfg.mqtt.max_inflight * PAHO_QUEUE_WINDOWS
        conn.refill_at = max(1, window // 4)
        while not conn.lost.is_set():
            self.state.busy_at = time.monotonic()
            self.outbox.changed.clear()  # before looking, so a wake-up during the look is not lost
            self._collect_acks(conn)
            if self._stop.is_set():
                self._shutdown(conn)
                return
            if self._status_dirty.is_set():
                self._status_dirty.clear()
                self._publish_status(conn, "update")
            room = window - len(conn.inflight)
            rows = self.outbox.fetch_after(conn.cursor, room) if room >= conn.refill_at or not conn.inflight else []
            for row in rows:
                self._publish_row(conn, row)
            if not rows:
                # New rows in this process and batches of PUBACKs set `changed`; the timeouts catch the last few
                # PUBACKs of a burst and rows written by other processes.
                self.outbox.changed.wait(0.01 if conn.inflight else 0.25)

    def _publish_row(self, conn: _Connection, row: StoredMessage) -> None:
        info = conn.client.publish(row.topic, row.payload, qos=1, retain=row.retain,
                                   properties=self._properties(row.msg_id))
        conn.cursor = row.seq
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            conn.lost.set()  # paho could not queue it (connection gone); the row stays and is sent next time
            return
        conn.inflight[info.mid] = row
        self.state.published_total += 1

    def _collect_acks(self, conn: _Connection) -> None:
        acks, retry_rejected = [], False
        while conn.acked:
            mid, ok = conn.acked.popleft()
            row = conn.inflight.pop(mid, None)
            if row is None:
                continue  # the birth/offline status, published outside the outbox
            if ok:
                acks.append((row.seq, row.msg_id, not row.coalesce))
            else:
                retry_rejected = True
                self.state.rejected_total += 1
                log.error("broker rejected %s (msg_id %s); kept in the outbox for the next connection",
                          row.topic, row.msg_id)
        if acks:
            self.state.acked_total += len(acks)
            self.state.last_puback_at = time.time()
            self.outbox.ack(acks)
        if retry_rejected:
            # Resending right away would loop; drop the connection so the rejected row is retried after backoff.
            conn.lost.set()

    def _shutdown(self, conn: _Connection) -> None:
        """Announce a clean stop, then give outstanding PUBACKs a moment to arrive."""
        info = self._publish_status(conn, "shutdown")
        deadline = time.monotonic() + SHUTDOWN_FLUSH_S
        while (conn.inflight or not info.is_published()) and time.monotonic() < deadline and not conn.lost.is_set():
            time.sleep(0.01)
            self._collect_acks(conn)
        self._collect_acks(conn)

    def _status(self, reason: str, online: bool = True) -> AgentStatus:
        return AgentStatus(msg_id=new_msg_id(), site=self.cfg.site.id, room=self.cfg.site.room, online=online,
                           version=__version__, boot_id=self.boot_id, config_hash=self.cfg.config_hash,
                           reason=reason, outbox_full=self.outbox.refusing,
                           outbox_damaged=self.outbox.damage is not None,
                           outbox_refused_total=self.outbox.refused_total)

    def _publish_status(self, conn: _Connection, reason: str) -> mqtt.MQTTMessageInfo:
        status = self._status(reason, online=reason != "shutdown")
        self._published_full = status.outbox_full
        return conn.client.publish(self.topics.topic("status"), status.to_json_bytes(), qos=1, retain=True,
                                   properties=self._properties(status.msg_id))

    def _properties(self, msg_id: str, packet_type: int = PacketTypes.PUBLISH) -> Properties | None:
        if self.cfg.mqtt.protocol != "5":
            return None
        return publish_properties(msg_id, packet_type)


def _template(packet_type: int) -> Properties:
    props = Properties(packet_type)
    props.ContentType = CONTENT_TYPE
    return props


_TEMPLATES = {t: _template(t) for t in (PacketTypes.PUBLISH, PacketTypes.WILLMESSAGE)}


def publish_properties(msg_id: str, packet_type: int = PacketTypes.PUBLISH) -> Properties:
    """MQTT 5 properties of one message: content type and the msg_id as a user property.

    paho's Properties() rebuilds its lookup tables on every construction, which cost more CPU than the rest of a
    publish; a copy of a prepared template's attributes shares those read-only tables. The user property is stored exactly
    as Properties.__setattr__ would store it (a list of name/value pairs); tests compare the packed bytes.
    """
    props = Properties.__new__(Properties)
    props.__dict__.update(_TEMPLATES[packet_type].__dict__)
    props.__dict__["UserProperty"] = [("msg_id", msg_id)]
    return props
