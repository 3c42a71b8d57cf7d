"""The publisher's figures, read by the status, health samples, /metrics and the broker-link equipment state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class PublisherState:
    """Figures for status and health (written by the publisher's threads, read by anyone)."""

    connected: bool = False
    connects: int = 0
    last_puback_at: float | None = None
    published_total: int = 0
    acked_total: int = 0
    rejected_total: int = 0  # PUBACKs with a failure reason code (MQTT 5) since start; each such message is parked
    parked_total: int = 0  # messages parked since start: refused by the broker or larger than it accepts
    takeovers: int = 0  # connections ended or refused because another client used our client id
    max_packet_bytes: int | None = None  # the broker's Maximum Packet Size on the current connection (MQTT 5)
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
