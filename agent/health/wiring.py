"""Adds health, equipment status, remote commands, the web server and systemd notification to a built agent.

Start order (the supervisor stops in reverse): outbox, publisher, then `add_reporting` (equipment reporter, health
reporter, commands: stopped after every intake, so the final "down" states are still published), the dose monitor and
the intakes, then `add_endpoints` (web server, systemd notifier: stopped first, STOPPING=1 before anything else).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent.commands.handlers import CommandContext
from agent.commands.service import CommandService
from agent.config import Config
from agent.health.equipment import BrokerLinkTracker, ListenerTracker, ModalityWatch
from agent.health.sampler import HealthReporter, HealthSampler
from agent.health.sdnotify import Notifier, SystemdReporter
from agent.health.view import AgentView
from agent.instruments import status_periods
from agent.instruments.reporter import EquipmentReporter
from agent.instruments.status import EquipmentBoard
from agent.outbox import Outbox
from agent.publisher import Publisher
from agent.secretfile import read_secret_text
from agent.sink import Sink
from agent.supervisor import Supervisor

log = logging.getLogger(__name__)


@dataclass
class Operations:
    """The operational parts of one agent, for tests and for pages added later."""

    view: AgentView
    equipment: EquipmentReporter
    health: HealthReporter
    commands: CommandService | None = None
    web: object | None = None
    systemd: SystemdReporter | None = None

    @property
    def board(self) -> EquipmentBoard:
        """Every device's live state (instruments, listener, modalities, broker link)."""
        return self.view.board


def add_reporting(cfg: Config, outbox: Outbox, publisher: Publisher, sink: Sink, supervisor: Supervisor) -> Operations:
    """Equipment reporter (with the broker link), health reporter and commands, added to the supervisor now."""
    view = AgentView(cfg, outbox, publisher, supervisor, EquipmentBoard())
    every_s = status_periods(cfg)
    link = view.board.add(BrokerLinkTracker(publisher, f"{cfg.mqtt.host}:{cfg.mqtt.port}"))
    every_s[link.device_id] = cfg.health.equipment_every_s
    ops = Operations(view, EquipmentReporter(view.board, sink, every_s),
                     HealthReporter(HealthSampler(view), sink, cfg.health.interval_s))
    supervisor.add("equipment", ops.equipment)
    # A broker restarted without persistence has lost the retained equipment states: send them again on every connect.
    publisher.add_connect_hook(ops.equipment.republish)
    supervisor.add("health", ops.health)
    if cfg.commands.enabled and cfg.mqtt.protocol == "5":
        ops.commands = CommandService(CommandContext(view, ops.health, ops.equipment))
        supervisor.add("commands", ops.commands)
    elif cfg.commands.enabled:
        log.warning("remote commands need MQTT 5 (request/response, message expiry): with mqtt.protocol = 3.1.1 the "
                    "agent does not subscribe to %s/cmd", publisher.topics.base)
    return ops


def add_endpoints(ops: Operations, intakes: list[tuple[str, object]]) -> None:
    """Track the DICOM listener and its modalities, then add the web server and the systemd notifier (last)."""
    view, cfg, supervisor = ops.view, ops.view.cfg, ops.view.supervisor
    listener = dict(intakes).get("dicom-listener")
    folder = dict(intakes).get("dicom-folder")
    if folder is not None:
        view.intake = folder.intake  # the intake counters on /metrics, also for a folder-only room
    if listener is not None:
        view.listener, view.intake = listener, listener.intake
        tracker = ListenerTracker(listener, listener.intake, cfg.dicom.ae_title, f"{cfg.dicom.bind}:{cfg.dicom.port}")
        view.board.add(tracker)
        ops.equipment.every_s[tracker.device_id] = cfg.health.equipment_every_s
        watch = ModalityWatch(view.board, ops.equipment.every_s, listener.intake.counters,
                              cfg.health.modality_quiet_s, cfg.health.equipment_every_s)
        supervisor.every_tick(watch.tick)
    if cfg.web.enabled:
        from agent.web import WebService, create_app  # flask only when the web server runs
        from agent.web.credential import cli_token_path, write_cli_token

        w = cfg.web
        token = read_secret_text("web.token_file", w.token_file) if w.token_file else None
        app = create_app(view, token, write_cli_token(cli_token_path(cfg)), w.reachable_names, w.max_body_bytes)
        ops.web = view.web = WebService(app, w.bind, w.port, w.max_connections, w.request_timeout_s,
                                        w.max_body_bytes)
        supervisor.add("web", ops.web)
    notifier = Notifier()
    if notifier.enabled:
        ops.systemd = SystemdReporter(view, notifier)
        supervisor.every_tick(ops.systemd.tick)
        supervisor.add("systemd-notify", ops.systemd)
