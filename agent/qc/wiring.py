"""Adds QC sessions to a built agent: the service, the hooks in the instrument readers and the DICOM intake, the page.

The service is added to the supervisor before the intakes, so qc.db is open (and a crash's leftovers re-emitted)
before the first reading or exposure event arrives, and it closes only after they stopped.
"""

from __future__ import annotations

from agent.config import Config
from agent.qc.config import DB_FILE
from agent.qc.quantities import measures
from agent.qc.sessions import QcSessions
from agent.qc.store import QcStore
from agent.sink import Sink
from agent.supervisor import Supervisor


def add_qc_sessions(cfg: Config, sink: Sink, supervisor: Supervisor, intakes: list[tuple[str, object]]) -> QcSessions:
    """Build the QC session service, hook it into every instrument reader (`emit`) and the DICOM intake
    (`observers`), and add it to the supervisor. Call before the intakes are added."""
    qc = QcSessions(cfg.qc, QcStore(cfg.outbox.path.parent / DB_FILE), sink,
                    {inst.id: inst.driver for inst in cfg.instruments},
                    measures={inst.id: instrument_measures(inst) for inst in cfg.instruments},
                    accumulating={inst.id: frozenset(getattr(inst.driver_settings(), "accumulating", ()))
                                  for inst in cfg.instruments},
                    records={inst.id: inst.record() for inst in cfg.instruments}, time_zone=cfg.site.timezone)
    observed: set[int] = set()
    for _name, service in intakes:
        if hasattr(service, "emit") and hasattr(service, "tracker"):  # an InstrumentReader
            service.emit = qc.recorder(service.emit)
        intake = getattr(service, "intake", None)  # the listener and the folder watch share one intake
        if intake is not None and id(intake) not in observed:
            observed.add(id(intake))
            intake.observers.append(qc.observe)
            intake.qc_session_open = qc.session_open
    supervisor.add("qc", qc)
    supervisor.every_tick(qc.tick)
    return qc


def instrument_measures(inst) -> frozenset[str]:
    """The QC quantities one configured instrument measures (a profile's field names for the profile driver)."""
    settings = inst.driver_settings()
    return measures(inst.driver, (f.name for f in getattr(settings, "fields", ())))


def add_qc_page(qc: QcSessions, web) -> None:
    """Register the QC page and its JSON API on the agent's web app (`web` is the WebService, None when off)."""
    if web is None:
        return
    from agent.web.qc import register_qc  # flask only when the web server runs

    register_qc(web.app, qc)
