"""Builds the DICOM intake services (listener, watched folder) from the config."""

from __future__ import annotations

from typing import Callable

from agent.config import Config
from agent.dicom.folder import FolderWatcher
from agent.dicom.intake import DicomIntake
from agent.dicom.quarantine import BoundedFolder
from agent.dicom.scp import StorageSCP
from agent.payloads.base import Envelope
from agent.sink import Sink

Derive = Callable[..., list[Envelope]]  # (payloads, private patient facts or None) -> payloads + alerts

FOLDER_STATE_FILE = "folder-intake.db"


def make_intake(cfg: Config, sink: Sink, secret: bytes, derive: Derive | None = None) -> DicomIntake:
    """The shared object-to-events bridge with the config's quarantine and retention folders; `derive` adds the
    messages that follow from an object's events (the dose monitor's alerts) to the same outbox commit."""
    d = cfg.dicom
    quarantine = BoundedFolder(d.quarantine_dir, d.quarantine_max_bytes, d.quarantine_max_files)
    retain = BoundedFolder(d.retain_raw_dir, d.retain_raw_max_bytes, 10**9) if d.retain_raw_dir else None
    return DicomIntake(sink, secret, timezone=cfg.site.timezone, include_age_sex=d.include_age_sex,
                       quarantine=quarantine, retain_raw=retain, derive=derive,
                       free_text=cfg.privacy.text_policy(), time_resolution=cfg.privacy.time_resolution,
                       not_a_patient=tuple(d.not_a_patient))


def dicom_services(cfg: Config, sink: Sink, secret: bytes, derive: Derive | None = None
                   ) -> list[tuple[str, object]]:
    """(name, service) pairs for the configured DICOM intakes; they share one intake and its counters."""
    intake = make_intake(cfg, sink, secret, derive)
    services: list[tuple[str, object]] = []
    if cfg.dicom.folder is not None:
        state = cfg.outbox.path.parent / FOLDER_STATE_FILE
        services.append(("dicom-folder", FolderWatcher(cfg.dicom.folder, intake, state, cfg.dicom.max_object_bytes)))
    if cfg.dicom.enabled:
        services.append(("dicom-listener", StorageSCP(cfg.dicom, intake)))
    return services
