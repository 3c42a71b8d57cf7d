"""The periodic `health` sample: host figures, clock, outbox and broker link, every health.interval_s.

The reporter is a supervised service with its own thread, so a slow disk (psutil, the outbox commit) never delays
the supervisor's tick. `sample_now()` serves the `health` command.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from agent import __version__
from agent.health.clock import clock_state
from agent.health.host import CpuMeter, host_figures
from agent.health.view import AgentView
from agent.outbox import OutboxError
from agent.payloads.base import new_msg_id
from agent.payloads.health import HealthSample
from agent.sink import Sink
from agent.supervisor import ThreadService

log = logging.getLogger(__name__)


class HealthSampler:
    """Builds HealthSample payloads from the live agent; CPU shares cover the time since the previous sample."""

    def __init__(self, view: AgentView) -> None:
        self.view = view
        self._cpu = CpuMeter()
        self._lock = threading.Lock()  # the reporter thread and the command worker may sample at once

    def sample(self) -> HealthSample:
        """A sample of everything now."""
        v, cfg = self.view, self.view.cfg
        with self._lock:
            host_cpu, agent_cpu = self._cpu.read()
        host, clock = host_figures(cfg.outbox.path.parent), clock_state()
        stats, link = v.outbox.stats(), v.publisher.state
        counters = stats.counters
        puback = None if link.last_puback_at is None else datetime.fromtimestamp(link.last_puback_at, timezone.utc)
        return HealthSample(
            msg_id=new_msg_id(), site=cfg.site.id, room=cfg.site.room, version=__version__, boot_id=v.boot_id,
            config_hash=cfg.config_hash, uptime_s=v.uptime_s(), host_uptime_s=host.host_uptime_s,
            cpu_percent=host_cpu, agent_cpu_percent=agent_cpu, memory_percent=host.memory_percent,
            memory_available_bytes=host.memory_available_bytes, agent_rss_bytes=host.rss_bytes,
            disk_free_bytes=host.disk_free_bytes, disk_total_bytes=host.disk_total_bytes,
            temperature_c=host.temperature_c, clock_sync=clock.sync, clock_max_error_s=clock.max_error_s,
            outbox_depth=sum(stats.depth_by_topic.values()), outbox_oldest_age_s=stats.oldest_age_s,
            outbox_bytes=stats.bytes_used, outbox_max_bytes=stats.max_bytes,
            outbox_refusing=bool(counters.get("refusing")), outbox_refused_total=counters.get("refused", 0),
            outbox_dropped_total=counters.get("coalesced", 0) + counters.get("expired", 0),
            outbox_parked=stats.parked_now,
            broker_connected=link.connected, broker_reconnects_total=link.reconnects,
            broker_rejected_total=link.rejected_total, last_puback_at=puback,
            qc_overdue_tests=v.qc.overdue() if v.qc is not None else [])


class HealthReporter(ThreadService):
    """Service (start/stop/alive): stores a health sample every interval_s; the first one right after start."""

    thread_name = "health-reporter"

    def __init__(self, sampler: HealthSampler, sink: Sink, interval_s: float) -> None:
        super().__init__()
        self.sampler, self.sink, self.interval_s = sampler, sink, interval_s
        self._failing = False

    def _run(self) -> None:
        # A short first wait: the CPU shares of the first sample then cover a meaningful interval.
        wait_s = min(2.0, self.interval_s)
        while not self._stop.wait(wait_s):
            self.sample_now()
            wait_s = self.interval_s

    def sample_now(self) -> HealthSample | None:
        """Take a sample and store it for publishing; returns it (None if it could not be taken or stored)."""
        try:
            sample = self.sampler.sample()
            self.sink.emit(sample)
        except (OutboxError, OSError) as exc:
            if not self._failing:
                log.error("cannot take or store a health sample (%s); retrying every %.0f s", exc, self.interval_s)
            self._failing = True
            return None
        self._failing = False
        return sample
