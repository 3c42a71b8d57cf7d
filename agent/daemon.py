"""Wires the agent together from its config and runs it under the supervisor."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from agent import __version__
from agent.config import Config
from agent.dose.monitor import DoseMonitor, dose_monitor
from agent.logs import REPEATS
from agent.health.statefiles import add_state_watch
from agent.health.wiring import Operations, add_endpoints, add_reporting
from agent.outbox import Outbox
from agent.pseudonym import load_secret
from agent.publisher import Publisher
from agent.qc.wiring import add_qc_page, add_qc_sessions
from agent.sink import Sink
from agent.supervisor import Service, Supervisor
from agent.topics import Topics

log = logging.getLogger(__name__)

MAINTAIN_EVERY_S = 600


@dataclass
class Agent:
    """The running parts of one agent; `run()` blocks until SIGTERM/SIGINT."""

    cfg: Config
    secret: bytes
    outbox: Outbox
    publisher: Publisher
    sink: Sink
    supervisor: Supervisor
    dose: DoseMonitor | None = None  # dose.request_summary() publishes the day so far (for the command topic)
    ops: Operations | None = None  # equipment, health, commands, web endpoints, systemd notification

    def run(self) -> int:
        log.info("xray-agent %s starting: site %s room %s, broker %s, outbox %s", __version__, self.cfg.site.id,
                 self.cfg.site.room, self.cfg.mqtt.url, self.cfg.outbox.path)
        self.supervisor.install_signal_handlers()
        status = self.supervisor.run()
        log.info("xray-agent stopped%s", f" (exit status {status})" if status else "")
        return status


def build_agent(cfg: Config) -> Agent:
    """Create every service in start order: outbox first (others write to it), publisher, then intakes."""
    secret = load_secret(cfg.site.secret_key_file)
    o = cfg.outbox
    outbox = Outbox(o.path, max_bytes=o.max_bytes, telemetry_max_age_s=o.telemetry_max_age_s, dedupe_days=o.dedupe_days,
                    shares=o.shares.model_dump())
    publisher = Publisher(cfg, outbox)
    sink = Sink(outbox, Topics(cfg.mqtt.topic_prefix, cfg.site.id, cfg.site.room))
    supervisor = Supervisor()
    supervisor.add("outbox", outbox, essential=True)
    supervisor.add("publisher", publisher, essential=True)
    ops = add_reporting(cfg, outbox, publisher, sink, supervisor)  # stopped after the intakes: final states go out
    dose = dose_monitor(cfg, sink)  # started before the intakes: its derive hook evaluates their events
    if dose is not None:
        supervisor.add("dose", dose)
        supervisor.every_tick(dose.tick)
        if ops.commands is not None:
            ops.commands.ctx.dose = dose  # the dose-summary command
    intakes = intake_services(cfg, sink, secret, derive=dose.derive if dose else None, board=ops.board)
    qc = add_qc_sessions(cfg, sink, supervisor, intakes)  # started before the intakes: it records their readings
    ops.view.qc = qc
    for name, service in intakes:
        supervisor.add(name, service)
    add_endpoints(ops, intakes)
    add_qc_page(qc, ops.web)
    owners = [("dose", dose)] if dose is not None else []
    owners += [("qc", qc.store)] + [("folder", s) for n, s in intakes if n == "dicom-folder"]
    add_state_watch(cfg, supervisor, outbox, publisher, ops.view, ops.equipment, owners)
    supervisor.every_tick(publisher.check_status)
    supervisor.every_tick(_maintainer(outbox))
    supervisor.every_tick(REPEATS.flush)  # the once-a-minute counts of rate-limited log lines
    return Agent(cfg, secret, outbox, publisher, sink, supervisor, dose, ops)


def intake_services(cfg: Config, sink: Sink, secret: bytes, derive=None, board=None) -> list[tuple[str, Service]]:
    """Every configured intake, in start order; they stop before the publisher and the outbox. `derive` is the
    DICOM intake's hook for messages that follow from its events (dose alerts). With a `board`, the instruments'
    trackers join it (its reporter runs elsewhere); without, they get an equipment reporter of their own."""
    from agent.dicom.service import dicom_services
    from agent.instruments import instrument_readers, instrument_services

    instruments = instrument_readers(cfg, sink, board) if board is not None else instrument_services(cfg, sink)
    return dicom_services(cfg, sink, secret, derive) + instruments


def _maintainer(outbox: Outbox):
    next_at = {"t": time.monotonic() + 5}

    def tick() -> None:
        if time.monotonic() >= next_at["t"]:
            next_at["t"] = time.monotonic() + MAINTAIN_EVERY_S
            outbox.maintain()
    return tick
