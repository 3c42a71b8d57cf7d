"""The delivery pump: hands outbox rows to one connection, oldest first, and removes each on its PUBACK.

paho keeps at most max_inflight unacknowledged on the wire and queues the rest, sending the next one from its own
thread the moment a PUBACK arrives; handing it a few windows' worth keeps the link busy between the pump's wake-ups,
and waking only when a quarter of that is acknowledged keeps the wake-ups few. A row the broker will not take is
parked (agent.publish.parking) and the rows behind it keep flowing. After a reconnect every row not yet acknowledged
is sent again from the oldest, so per-topic order holds and any duplicate repeats its msg_id.

Some brokers close the connection on a message instead of answering it (MQTT 3.1.1 has no way to refuse one;
mosquitto 2.0 closes after a 0x87 PUBACK, and with more packets in flight the client may never read that PUBACK).
Resending the same window would end every connection at the same message. So after a connection that ended early
with rows in flight, the next one sends those rows one at a time (probing): a refusal is then read, and a row the
broker closes the connection on twice while it is the only one in flight is parked.
"""

from __future__ import annotations

import time
from typing import Callable

from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties

from agent.outbox import Outbox, StoredMessage
from agent.publish.parking import ParkLog, refused_reason, too_large, topic_refused
from agent.publish.session import Connection
from agent.publish.state import PublisherState

PAHO_QUEUE_WINDOWS = 4
STRIKES_TO_PARK = 2  # connections ended while a row was the only one in flight, before it is parked
# Probing starts this long after CONNACK: the birth status, the subscriptions and the retained messages they bring are
# settled by then, so nothing of ours is unread at the broker when it closes on the probe. Unread data makes the
# broker's TCP stack answer with a reset, and a reset loses the PUBACK (with its reason code) sent just before it.
PROBE_SETTLE_S = 0.3
RETRY_LOOK_S = 0.5  # how often the pump looks whether parked rows were put back (possibly by another process)


class DeliveryPump:
    """Moves rows from the outbox to a connection; one feeder thread calls it."""

    def __init__(self, outbox: Outbox, state: PublisherState, max_inflight: int,
                 properties: Callable[[str], Properties | None]) -> None:
        """properties: msg_id -> the PUBLISH properties (None for MQTT 3.1.1)."""
        self.outbox, self.state, self.properties = outbox, state, properties
        self.window = max_inflight * PAHO_QUEUE_WINDOWS
        self.park_log = ParkLog()
        # topic -> why: topics the broker refused (an ACL); their messages are parked without being sent until a retry
        self.refused_topics: dict[str, str] = {}
        self._retry_look_at = 0.0
        self.suspect_upto = 0  # probe rows up to this seq (they were in flight when a connection ended early)
        self.strikes: dict[int, int] = {}  # seq -> connections that ended while it alone was in flight

    def begin(self, conn: Connection) -> None:
        """Start a connection from the oldest undelivered row, once the previous connection's acks are committed."""
        self.outbox.ack((), wait=True)
        conn.probing = self.suspect_upto > 0
        conn.refill_at = 1 if conn.probing else max(1, self.window // 4)
        conn.retried_seen = self.outbox.retried_total

    def connection_ended(self, conn: Connection, healthy: bool) -> None:
        """After a connection ended and its last PUBACKs were collected: note the rows it ended on."""
        if healthy:
            self.strikes.clear()
        if healthy or not conn.inflight:
            return
        if conn.probing and len(conn.inflight) == 1:
            (row,) = conn.inflight.values()
            self.strikes[row.seq] = self.strikes.get(row.seq, 0) + 1
            if self.strikes[row.seq] >= STRIKES_TO_PARK:
                del self.strikes[row.seq]
                self.park(row, f"the broker closed the connection each time this message was sent "
                               f"({STRIKES_TO_PARK} times) without saying why (refused by its ACL, or too large?)")
        self.suspect_upto = max(self.suspect_upto, max(row.seq for row in conn.inflight.values()))

    def feed(self, conn: Connection) -> None:
        """Publish the next batch of rows, or wait briefly for rows or PUBACKs."""
        self._look_for_retries(conn)
        if conn.probing:
            self._probe(conn)
            return
        room = self.window - len(conn.inflight)
        rows = self.outbox.fetch_after(conn.cursor, room) if room >= conn.refill_at or not conn.inflight else []
        for row in rows:
            self.publish_row(conn, row)
        if not rows:
            # New rows in this process and batches of PUBACKs set `changed`; the timeouts catch the last few
            # PUBACKs of a burst and rows written by other processes.
            self.outbox.changed.wait(0.01 if conn.inflight else 0.25)

    def _probe(self, conn: Connection) -> None:
        """One row at a time up to suspect_upto, then the full window again."""
        if time.monotonic() - conn.connected_at < PROBE_SETTLE_S:
            self.outbox.changed.wait(0.05)
            return
        rows = [] if conn.inflight else self.outbox.fetch_after(conn.cursor, 1)
        if rows and rows[0].seq > self.suspect_upto:
            conn.probing, self.suspect_upto = False, 0  # past every suspect: back to the full window
            conn.refill_at = max(1, self.window // 4)
            return
        for row in rows:
            self.publish_row(conn, row)
        if not rows:
            self.outbox.changed.wait(0.01 if conn.inflight else 0.25)
            if not conn.inflight and not self.outbox.fetch_after(conn.cursor, 1):
                conn.probing, self.suspect_upto = False, 0  # the suspects are all acknowledged or parked

    def _look_for_retries(self, conn: Connection) -> None:
        """Parked rows put back (`outbox retry`) sit behind the cursor: go back to the oldest row, skipping those
        still in flight."""
        now = time.monotonic()
        if now - self._retry_look_at < RETRY_LOOK_S:
            return
        self._retry_look_at = now
        retried = self.outbox.retried_total
        if retried == conn.retried_seen:
            return
        conn.retried_seen = retried
        self.refused_topics.clear()  # the broker may have been fixed: try each topic again
        self.collect_acks(conn)
        self.outbox.ack((), wait=True)  # acknowledged rows are gone before the cursor goes back
        conn.skip = {row.seq for row in conn.inflight.values()}
        conn.cursor = 0

    def publish_row(self, conn: Connection, row: StoredMessage) -> None:
        """Hand one row to paho, or park it when it is larger than the broker accepts."""
        conn.cursor = row.seq
        if conn.skip:
            if row.seq in conn.skip:
                conn.skip.discard(row.seq)
                return
        refused = self.refused_topics.get(row.topic)
        if refused is not None:
            self.park(row, f"{refused}; not sent: the broker refused this topic")
            return
        properties = self.properties(row.msg_id)
        size = too_large(row.topic, row.payload, properties, conn.max_packet_bytes)
        if size is not None:
            self.park(row, f"{size} bytes as a PUBLISH packet, larger than the broker's Maximum Packet Size "
                           f"({conn.max_packet_bytes} bytes)")
            return
        info = conn.client.publish(row.topic, row.payload, qos=1, retain=row.retain, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            conn.lost.set()  # paho could not queue it (connection gone); the row stays and is sent next time
            return
        conn.inflight[info.mid] = row
        self.state.published_total += 1

    def park(self, row: StoredMessage, reason: str) -> None:
        """Take a row out of the delivery order, counted and logged (rate-limited per topic)."""
        self.outbox.park([(row.seq, reason)])
        self.state.parked_total += 1
        self.state.last_error = f"message parked on {row.topic}: {reason}"
        self.park_log.parked(row.topic, row.msg_id, reason)

    def collect_acks(self, conn: Connection) -> None:
        """Remove acknowledged rows from the outbox; park the ones the broker refused."""
        acks = []
        while conn.acked:
            mid, value, name = conn.acked.popleft()
            row = conn.inflight.pop(mid, None)
            if row is None:
                continue  # the birth/offline status, published outside the outbox
            refused = refused_reason(value, name)
            if refused is None:
                acks.append((row.seq, row.msg_id, not row.coalesce))
            else:
                self.state.rejected_total += 1
                self.park(row, refused)
                if topic_refused(value):
                    self.refused_topics[row.topic] = refused
        if acks:
            self.state.acked_total += len(acks)
            self.state.last_puback_at = time.time()
            self.outbox.ack(acks)
