"""MQTT publisher: drains the outbox to the broker with QoS 1; a row leaves the outbox only on its PUBACK.

One feeder thread owns the connection's life: it connects (agent.publish.session), runs the delivery pump on the
connection (agent.publish.pump) until the connection ends, and waits out the reconnect backoff (agent.publish.backoff)
after every connection that ends, failed or not, so a broker that accepts and then drops the agent cannot make it
reconnect in a loop. Messages the broker will not take are parked (agent.publish.parking). On every connect the
retained status is published and the connect hooks run (the equipment states are re-published at once: a broker
restarted without persistence has lost them).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent import __version__
from agent.config import Config
from agent.outbox import Outbox
from agent.payloads.base import new_msg_id
from agent.payloads.status import AgentStatus
from agent.secretfile import check_secret_file, read_secret_text
from agent.publish import session
from agent.publish.backoff import Backoff
from agent.publish.pump import DeliveryPump
from agent.publish.session import (SESSION_TAKEN_OVER, ConnectFailed, Connection, client_id_clash,
                                   describe_connect_error, describe_disconnect, rival_boot_id)
from agent.publish.state import PublisherState
from agent.topics import Topics

__all__ = ["CONTENT_TYPE", "ConnectFailed", "Publisher", "PublisherState", "describe_connect_error",
           "publish_properties"]

log = logging.getLogger(__name__)

SHUTDOWN_FLUSH_S = 2.0
CONTENT_TYPE = "application/json"


class Publisher:
    """Publishes the outbox's messages and the agent's retained status."""

    def __init__(self, cfg: Config, outbox: Outbox, boot_id: str | None = None):
        self.cfg = cfg
        self.outbox = outbox
        self.topics = Topics(cfg.mqtt.topic_prefix, cfg.site.id, cfg.site.room)
        self.boot_id = boot_id or new_msg_id()
        self.state = PublisherState()
        self.backoff = Backoff(cfg.mqtt.reconnect_min_s, cfg.mqtt.reconnect_max_s)
        self.pump = DeliveryPump(outbox, self.state, cfg.mqtt.max_inflight, self._properties)
        self._stop = threading.Event()
        self._status_dirty = threading.Event()
        self._thread: threading.Thread | None = None
        self._password = (read_secret_text("mqtt.password_file", cfg.mqtt.password_file)
                          if cfg.mqtt.password_file else None)
        if cfg.mqtt.key_file:  # ssl reads the key by path at each connect; checked once here like the other secrets
            check_secret_file("mqtt.key_file", cfg.mqtt.key_file)
        self._outage_started: float | None = None
        self._published_full: tuple | None = None  # (outbox_full, parked) as last published in the status
        self._wake = threading.Event()  # ends a reconnect backoff early (stop, or a flush-outbox command)
        self._subscriptions: dict[str, tuple[Callable[[mqtt.MQTTMessage], None], bool]] = {}
        # Our own status topic: another agent run's status there means a second agent or a cloned configuration.
        self._started_at = datetime.now(timezone.utc)
        self._rival_seen_at: float | None = None  # monotonic
        self._subscriptions[self.topics.topic("status")] = (self._on_own_status, False)
        self._connect_hooks: list[Callable[[], None]] = []
        self._conn: Connection | None = None  # the live connection, for replies published outside the outbox
        # True once a session takeover (another client with our client id) has had its ERROR line; until a connection
        # stays up for the backoff's healthy_s, the next takeovers and reconnects go to DEBUG: two agents taking the
        # session from each other must not flood the journal.
        self._takeover_logged = False

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
        if self.state.connected and self._outbox_figures() != self._published_full:
            self.request_status()

    def request_status(self) -> None:
        """Publish the retained status again on the current connection (an "update")."""
        self._status_dirty.set()
        self.outbox.changed.set()

    def wake(self) -> None:
        """Try to deliver now: end a reconnect backoff early and look at the outbox again."""
        self._wake.set()
        self.outbox.changed.set()

    def add_connect_hook(self, hook: Callable[[], None]) -> None:
        """Run hook (quick, in the feeder thread) on every connect, after the birth status. Register before start()."""
        self._connect_hooks.append(hook)

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
            try:
                conn = self._connect_once()
            except ConnectFailed as exc:
                self._connect_failed(str(exc))
                self._backoff_sleep(self.backoff.next_delay())
                continue
            connected_at = time.monotonic()
            try:
                self._pump(conn)
            finally:
                self._close(conn)
            if self._stop.is_set():
                return
            lasted_s = time.monotonic() - connected_at
            self.backoff.connection_ended(lasted_s)
            self.pump.connection_ended(conn, healthy=lasted_s >= self.backoff.healthy_s)
            if lasted_s >= self.backoff.healthy_s:
                self._takeover_logged = False  # that connection was healthy: the next takeover gets its line again
            self._backoff_sleep(self.backoff.next_delay())

    def _backoff_sleep(self, seconds: float) -> None:
        if self._stop.is_set():
            return
        self.state.idle_until = time.monotonic() + seconds
        self._wake.wait(seconds)
        self._wake.clear()
        self.state.busy_at = time.monotonic()

    def _connect_failed(self, error: str) -> None:
        """Log the first failure of an outage; the later attempts at DEBUG."""
        self.state.last_error = error
        if self._outage_started is None:
            self._outage_started = time.monotonic()
            log.error("%s; buffering in the outbox and retrying with backoff (logged once per outage)", error)
        else:
            log.debug("reconnect attempt %d failed: %s", self.backoff.attempt, error)

    def _connect_once(self) -> Connection:
        conn = self._new_connection()
        self.state.busy_at = time.monotonic()
        try:
            session.open_connection(self.cfg, conn)
        except ConnectFailed:
            if conn.refused_client_id:
                self.state.takeovers += 1
            self._close(conn)
            raise
        now = time.monotonic()
        if self.state.connects and self.state.down_since is not None:
            self.state.last_outage_s = now - self.state.down_since
        self.state.connected, self.state.down_since = True, None
        self.state.connects += 1
        self.state.max_packet_bytes = conn.max_packet_bytes
        conn.connected_at = now
        if self._outage_started is not None:
            log.log(logging.DEBUG if self._takeover_logged else logging.WARNING,
                    "broker %s:%d reachable again after %.1f s; sending what was buffered",
                    self.cfg.mqtt.host, self.cfg.mqtt.port, now - self._outage_started)
            self._outage_started = None
        else:
            log.info("connected to broker %s:%d as %s", self.cfg.mqtt.host, self.cfg.mqtt.port, self.cfg.client_id)
        return conn

    def _new_connection(self) -> Connection:
        client = session.new_client(self.cfg, self._password)
        will = self._status("lost", online=False)
        client.will_set(self.topics.topic("status"), will.to_json_bytes(), qos=1, retain=True,
                        properties=self._properties(will.msg_id, PacketTypes.WILLMESSAGE))
        conn = Connection(client)
        client.on_connect = lambda c, u, flags, rc, props: self._on_connect(conn, rc, props)
        client.on_disconnect = lambda c, u, flags, rc, props: self._on_disconnect(conn, flags, rc)
        client.on_publish = lambda c, u, mid, rc, props: self._on_publish(conn, mid, rc)
        client.on_message = lambda c, u, msg: self._dispatch(msg)
        return conn

    def _on_publish(self, conn: Connection, mid: int, reason_code) -> None:
        conn.acked.append((mid, reason_code.value, reason_code.getName()))
        if len(conn.acked) >= conn.refill_at:
            self.outbox.changed.set()  # wake the feeder once a useful share of the window is free

    def _on_connect(self, conn: Connection, reason_code, properties) -> None:
        if session.on_connack(self.cfg, conn, reason_code, properties):
            # Set here, in paho's thread, before it hands over anything a resumed session had queued (commands): their
            # replies must find the connection.
            self._conn = conn

    def _on_own_status(self, msg: mqtt.MQTTMessage) -> None:
        """A message on our status topic (paho's thread): note another agent run publishing as this room."""
        rival = rival_boot_id(msg.payload, self.boot_id, self._started_at)
        if rival is None:
            return
        self._rival_seen_at = time.monotonic()
        self.state.last_error = client_id_clash(self.cfg.client_id)
        if not self._takeover_logged:
            self._takeover_logged = True
            log.error("%s: another agent run (boot id %s) publishes this room's status on %s; the broker hands the "
                      "session back and forth, and the agent backs off between connections", self.state.last_error,
                      rival, msg.topic)

    def _taken_over(self, flags, reason_code) -> bool:
        """The session went to another client with our client id: DISCONNECT 0x8E, or (brokers that just close the
        socket, mosquitto 2.0) a drop without DISCONNECT while another run of this room was seen lately."""
        if reason_code.value == SESSION_TAKEN_OVER:
            return True
        recent = self._rival_seen_at is not None and time.monotonic() - self._rival_seen_at < self.backoff.healthy_s
        return recent and not flags.is_disconnect_packet_from_server

    def _on_disconnect(self, conn: Connection, flags, reason_code) -> None:
        conn.lost.set()
        self.outbox.changed.set()
        if not conn.connack.is_set() or conn.connack_error or self._stop.is_set():
            return
        self._outage_started = time.monotonic()
        taken_over = self._taken_over(flags, reason_code)
        words = describe_disconnect(self.cfg, reason_code, taken_over)
        self.state.last_error = words
        quiet = False
        if taken_over:
            self.state.takeovers += 1
            quiet, self._takeover_logged = self._takeover_logged, True
        log.log(logging.DEBUG if quiet else logging.ERROR, "lost connection to broker %s:%d (%s); buffering and "
                "reconnecting with backoff", self.cfg.mqtt.host, self.cfg.mqtt.port, words)

    def _close(self, conn: Connection) -> None:
        self.state.connected, self._conn = False, None
        if self.state.down_since is None:
            self.state.down_since = time.monotonic()
        session.close(conn)

    # ---- publishing --------------------------------------------------------------------------------------------
    def _pump(self, conn: Connection) -> None:
        """Publish from the outbox until the connection is lost or the agent stops."""
        self.pump.begin(conn)
        # Subscribe before the birth: the broker then hands over the status retained before ours, which is another
        # agent run's when a second agent or a cloned configuration uses this room (and our client id).
        for topic_filter, (_, skip_retained) in self._subscriptions.items():
            conn.client.subscribe(topic_filter, **session.subscribe_options(self.cfg, skip_retained))
        self._publish_status(conn, "birth")
        for hook in self._connect_hooks:
            hook()
        while not conn.lost.is_set():
            self.state.busy_at = time.monotonic()
            self.outbox.changed.clear()  # before looking, so a wake-up during the look is not lost
            self.pump.collect_acks(conn)
            if self._stop.is_set():
                self._shutdown(conn)
                return
            if self._status_dirty.is_set():
                self._status_dirty.clear()
                self._publish_status(conn, "update")
            self.pump.feed(conn)
        # PUBACKs that arrived before the connection ended still count: a refusal (mosquitto closes the connection
        # right after a 0x87 PUBACK) must park its message, and an acknowledged row must not be sent again.
        self.pump.collect_acks(conn)

    def _shutdown(self, conn: Connection) -> None:
        """Announce a clean stop, then give outstanding PUBACKs a moment to arrive."""
        info = self._publish_status(conn, "shutdown")
        deadline = time.monotonic() + SHUTDOWN_FLUSH_S
        while (conn.inflight or not info.is_published()) and time.monotonic() < deadline and not conn.lost.is_set():
            time.sleep(0.01)
            self.pump.collect_acks(conn)
        self.pump.collect_acks(conn)

    def _status(self, reason: str, online: bool = True) -> AgentStatus:
        return AgentStatus(msg_id=new_msg_id(), site=self.cfg.site.id, room=self.cfg.site.room, online=online,
                           version=__version__, boot_id=self.boot_id, config_hash=self.cfg.config_hash,
                           reason=reason, outbox_full=self.outbox.refusing,
                           outbox_damaged=self.outbox.damage is not None,
                           outbox_refused_total=self.outbox.refused_total, outbox_parked=self.outbox.parked_count())

    def _outbox_figures(self) -> tuple:
        """What the retained status says about the outbox."""
        return self.outbox.refusing, self.outbox.parked_count()

    def _publish_status(self, conn: Connection, reason: str) -> mqtt.MQTTMessageInfo:
        status = self._status(reason, online=reason != "shutdown")
        self._published_full = (status.outbox_full, status.outbox_parked)
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
