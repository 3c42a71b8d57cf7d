"""The reconnect schedule: jittered exponential backoff after every connection that ends, reset only by a healthy one.

A broker that accepts the connection and then drops it (an ACL or packet-size refusal, another client taking the
session over) must slow the agent down as much as a broker that refuses to connect: otherwise the agent reconnects
in a tight loop (thousands of connects a minute, each re-sending a birth status). So the delay grows after every
attempt, failed or ended, and only a connection that stayed up for `healthy_s` starts the schedule again.

Delay before attempt n (n = 0 after a healthy connection): uniform(0.5, 1.0) x min(max_s, min_s x 2^n), "equal
jitter": agents that lost the broker together spread out, and the lower half bounds the connect rate.
"""

from __future__ import annotations

import random
from typing import Callable

HEALTHY_MIN_S = 60.0  # a connection counts as healthy after this long (or 2 x max_s when that is longer)


class Backoff:
    """Delays between connection attempts (seconds); not thread-safe (the publisher's feeder thread owns it)."""

    def __init__(self, min_s: float, max_s: float, rand: Callable[[float, float], float] = random.uniform):
        self.min_s, self.max_s = min_s, max(min_s, max_s)
        self.healthy_s = max(HEALTHY_MIN_S, 2 * self.max_s)
        self.attempt = 0  # attempts since the last healthy connection
        self._rand = rand

    def ceiling(self, attempt: int) -> float:
        """The longest delay before attempt `attempt` (0-based), s."""
        return min(self.max_s, self.min_s * 2 ** min(attempt, 62))

    def next_delay(self) -> float:
        """The delay before the next attempt, s; each call moves one step up the schedule."""
        delay = self.ceiling(self.attempt) * self._rand(0.5, 1.0)
        self.attempt += 1
        return delay

    def connection_ended(self, lasted_s: float) -> None:
        """A connection that stayed up for healthy_s restarts the schedule; a shorter one does not."""
        if lasted_s >= self.healthy_s:
            self.attempt = 0

    def max_attempts(self, window_s: float) -> int:
        """The most connection attempts the schedule allows within window_s from a fresh start (the first one at
        once): what a test of "connects per minute" compares against."""
        attempts, elapsed, n = 1, 0.0, 0
        while True:
            elapsed += self.ceiling(n) * 0.5
            if elapsed > window_s:
                return attempts
            attempts, n = attempts + 1, n + 1
