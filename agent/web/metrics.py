"""Prometheus metrics read from the live agent at scrape time (a custom collector; no timers, no stale copies).

Names carry their units (`_seconds`, `_bytes`, `_percent`, `_total`); equipment states are an enum: one series per
device and state, 1 for the current state.
"""

from __future__ import annotations

import threading
import time

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from agent import __version__
from agent.health.checks import readiness
from agent.health.clock import clock_state
from agent.health.host import CpuMeter, host_figures
from agent.health.view import AgentView

STATES = ("ok", "degraded", "down")
SERIAL_COUNTERS = ("frames_ok", "frames_bad", "bytes_discarded", "timeouts", "error_replies", "reconnects")
DICOM_COUNTERS = ("received", "events_stored", "quarantined", "refused", "associations_rejected",
                  "values_screened")
INTAKE_COUNTERS = {  # DicomIntake counters -> help text; exposed as xray_dicom_<name>_total
    "incomplete": "Objects cut part-way, answered Cannot Understand and quarantined.",
    "value_warnings": "Values present but not usable, published as null with a `warnings` entry.",
    "identity_corrections": "Objects re-sent with different content, published with `supersedes`.",
    "identity_conflicts": "Exposures sharing one identity key with different content, published apart.",
}


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class AgentCollector(Collector):
    """Yields the agent's figures each time it is collected."""

    def __init__(self, view: AgentView) -> None:
        self.view = view
        self._cpu = CpuMeter()
        self._lock = threading.Lock()

    def collect(self):
        """Every metric family, read now."""
        yield from self._agent()
        yield from self._host()
        yield from self._outbox()
        yield from self._broker()
        yield from self._equipment()
        yield from self._intake()

    def _agent(self):
        v = self.view
        info = InfoMetricFamily("xray_agent", "Agent build, run and config.")
        info.add_metric([], {"version": __version__, "boot_id": v.boot_id, "config_hash": v.cfg.config_hash,
                             "site": v.cfg.site.id, "room": v.cfg.site.room})
        yield info
        yield _gauge("xray_agent_uptime_seconds", "Time since the agent started.", v.uptime_s())
        yield _gauge("xray_agent_last_tick_age_seconds", "Time since the supervisor loop last ticked.",
                     time.monotonic() - v.supervisor.last_tick)
        checks = readiness(v)
        yield _gauge("xray_agent_ready", "1 when every readiness check passes.", float(all(c.ok for c in checks)))
        family = GaugeMetricFamily("xray_agent_ready_check", "1 when this readiness check passes.", labels=["check"])
        for check in checks:
            family.add_metric([check.name], float(check.ok))
        yield family

    def _host(self):
        with self._lock:
            host_cpu, agent_cpu = self._cpu.read()
        h, clock = host_figures(self.view.cfg.outbox.path.parent), clock_state()
        yield _gauge("xray_host_cpu_percent", "Host CPU busy since the previous scrape, % of all cores.", host_cpu)
        yield _gauge("xray_agent_cpu_percent", "Agent CPU since the previous scrape, % of one core.", agent_cpu)
        yield _gauge("xray_host_memory_used_percent", "Host memory in use.", h.memory_percent)
        yield _gauge("xray_host_memory_available_bytes", "Host memory available.", h.memory_available_bytes)
        yield _gauge("xray_host_disk_free_bytes", "Free space in the outbox's folder.", h.disk_free_bytes)
        yield _gauge("xray_host_disk_total_bytes", "Size of the file system holding the outbox.", h.disk_total_bytes)
        yield _gauge("xray_host_uptime_seconds", "Time since the room PC booted.", h.host_uptime_s)
        if h.temperature_c is not None:
            yield _gauge("xray_host_temperature_celsius", "Hottest temperature sensor.", h.temperature_c)
        if clock.sync != "unknown":
            yield _gauge("xray_host_clock_synchronized", "1 when the system clock is NTP-synchronised.",
                         float(clock.sync == "synchronized"))

    def _outbox(self):
        stats = self.view.outbox.stats()
        c = stats.counters
        yield _gauge("xray_outbox_depth_messages", "Undelivered messages.", sum(stats.depth_by_topic.values()))
        yield _gauge("xray_outbox_oldest_age_seconds", "Age of the oldest undelivered message (0 when empty).",
                     stats.oldest_age_s or 0.0)
        yield _gauge("xray_outbox_bytes", "Payload bytes held.", stats.bytes_used)
        yield _gauge("xray_outbox_max_bytes", "outbox.max_bytes.", stats.max_bytes)
        yield _gauge("xray_outbox_refusing",
                     "1 while messages of an intake class are refused (its share or the outbox full).",
                     float(bool(c.get("refusing"))))
        yield _counter("xray_outbox_refused", "Messages refused for lack of room (outbox file's life).",
                       c.get("refused", 0))
        yield _gauge("xray_outbox_parked_messages", "Messages the broker would not take, held until "
                     "`xray-agent outbox retry`.", stats.parked_now)
        yield _counter("xray_outbox_parked", "Messages parked (outbox file's life).", c.get("parked", 0))
        shares = GaugeMetricFamily("xray_outbox_share_bytes", "Payload bytes held per intake class.", labels=["share"])
        limits = GaugeMetricFamily("xray_outbox_share_max_bytes", "Each intake class's share of outbox.max_bytes.",
                                   labels=["share"])
        for name, held in sorted(stats.share_bytes.items()):
            shares.add_metric([name], held)
        for name, bound in sorted(stats.share_max_bytes.items()):
            limits.add_metric([name], bound)
        yield shares
        yield limits
        dropped = CounterMetricFamily("xray_outbox_dropped", "Undelivered samples dropped.", labels=["reason"])
        for reason in ("coalesced", "expired"):
            dropped.add_metric([reason], c.get(reason, 0))
        yield dropped

    def _broker(self):
        s = self.view.publisher.state
        yield _gauge("xray_broker_connected", "1 while the MQTT connection is up.", float(s.connected))
        yield _counter("xray_broker_connects", "Connections made.", s.connects)
        yield _counter("xray_broker_published", "Outbox messages handed to the connection.", s.published_total)
        yield _counter("xray_broker_acknowledged", "Outbox messages acknowledged (PUBACK).", s.acked_total)
        yield _counter("xray_broker_rejected", "Publishes answered with a failure code.", s.rejected_total)
        yield _counter("xray_broker_session_takeovers", "Connections ended or refused because another client used "
                       "the agent's client id.", s.takeovers)
        if s.last_puback_at is not None:
            yield _gauge("xray_broker_last_puback_timestamp_seconds", "When the broker last acknowledged a message.",
                         s.last_puback_at)

    def _equipment(self):
        devices = self.view.board.snapshot(self.view.cfg.site.id, self.view.cfg.site.room)
        state = GaugeMetricFamily("xray_equipment_state", "1 for the device's current state.",
                                  labels=["device_id", "device_type", "state"])
        serial = {name: CounterMetricFamily(f"xray_equipment_{name}", f"Serial line {name.replace('_', ' ')}.",
                                            labels=["device_id"]) for name in SERIAL_COUNTERS}
        dicom = {name: CounterMetricFamily(f"xray_dicom_{name}", f"DICOM listener: {name.replace('_', ' ')}.")
                 for name in DICOM_COUNTERS}
        for d in devices:
            for value in STATES:
                state.add_metric([d.device_id, d.device_type, value], float(d.state == value))
            if d.device_type == "serial-instrument":
                for name, family in serial.items():
                    family.add_metric([d.device_id], getattr(d.counters, name))
            if d.dicom is not None:
                for name, family in dicom.items():
                    family.add_metric([], getattr(d.dicom, name))
        yield state
        yield from serial.values()
        yield from (family for family in dicom.values() if family.samples)


    def _intake(self):
        counters = getattr(self.view.intake, "counters", None)
        if counters is None:
            return
        for name, doc in INTAKE_COUNTERS.items():
            yield _counter(f"xray_dicom_{name}", doc, getattr(counters, name))


def metrics_registry(view: AgentView) -> CollectorRegistry:
    """A registry of its own (not the library's global one) with the agent's and the process's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(view))
    ProcessCollector(registry=registry)
    return registry
