"""`xray-agent ingest`: files through the agent's own intake, printing exactly what it would publish.

Not a re-implementation: each file goes through the same steps as a watched-folder file (completeness check and
header reading, reading.read_file; then DicomIntake.handle with the dose monitor's derive hook) into a real outbox
in a throwaway folder. What is printed is what that outbox accepted, in order: repeated exposures dropped as already
known, corrections marked `supersedes`, dose alerts included. It is what a freshly started agent (empty outbox, empty
dose history) would publish for the same files in the same order; a running agent that has seen earlier objects may
publish fewer (they are already known) or different repeat/alert decisions.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.dicom.intake import DicomIntake
from agent.dicom.reading import IncompleteObject, read_file
from agent.dicom.receive import ObjectTooLarge
from agent.dicom.statuses import CANNOT_UNDERSTAND, NAMES, SUCCESS
from agent.outbox import Outbox
from agent.payloads.base import Envelope
from agent.sink import Sink
from agent.topics import Topics

OUTBOX_BYTES = 1024 ** 3
DEFAULT_MAX_OBJECT_BYTES = 1024 ** 3  # dicom.max_object_bytes' default


class _RecordingSink(Sink):
    """The agent's sink, also handing each newly stored payload to `published` (duplicates are not published)."""

    def __init__(self, outbox: Outbox, topics: Topics, published: Callable[[Envelope], None]):
        super().__init__(outbox, topics)
        self.published = published

    def emit(self, *payloads: Envelope) -> list[bool]:
        inserted = super().emit(*payloads)
        for payload, new in zip(payloads, inserted):
            if new:
                self.published(payload)
        return inserted


@dataclass
class FileOutcome:
    path: Path
    status: int
    reason: str | None = None  # why it could not be interpreted (read errors; the intake logs its own reasons)

    @property
    def failed(self) -> bool:
        return self.status != SUCCESS

    def describe(self) -> str:
        return f"{NAMES.get(self.status, hex(self.status))}" + (f": {self.reason}" if self.reason else "")


def dry_run(paths: Iterable[Path], *, site: str, room: str, secret: bytes, timezone: str, include_age_sex: bool,
            dose_cfg, published: Callable[[Envelope], None], privacy=None,
            max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES, not_a_patient: tuple[str, ...] | None = None
            ) -> list[FileOutcome]:
    """Feed the files to a fresh intake in order; `published` gets every payload the agent would publish.
    dose_cfg: agent.dose.config.DoseConfig (its rules; disabled: no dose alerts, as in the agent); privacy:
    agent.privacy.config.PrivacyConfig (free-text screening and time resolution; the agent's defaults when None)."""
    from agent.privacy.config import PrivacyConfig
    from agent.dose.monitor import DoseMonitor

    outcomes = []
    with tempfile.TemporaryDirectory(prefix="xray-agent-ingest-") as scratch:
        outbox = Outbox(Path(scratch) / "outbox.db", max_bytes=OUTBOX_BYTES)
        outbox.start()
        sink = _RecordingSink(outbox, Topics("xray/v1", site, room), published)
        monitor = None
        if dose_cfg.enabled:
            monitor = DoseMonitor(dose_cfg.rules(), Path(scratch) / "dose.db", sink, timezone=timezone)
            monitor.start()
        privacy = privacy or PrivacyConfig()
        intake = DicomIntake(sink, secret, timezone=timezone, include_age_sex=include_age_sex,
                             derive=monitor.derive if monitor else None, free_text=privacy.text_policy(),
                             time_resolution=privacy.time_resolution,
                             **({} if not_a_patient is None else {"not_a_patient": not_a_patient}))
        try:
            for path in paths:
                outcomes.append(_one(intake, Path(path), max_object_bytes))
        finally:
            if monitor is not None:
                monitor.stop()
            outbox.stop()
    return outcomes


def _one(intake: DicomIntake, path: Path, max_object_bytes: int) -> FileOutcome:
    origin = f"ingest {path.name}"  # the user's own command line: the name is theirs to see
    raw = lambda: path  # noqa: E731
    try:
        ds = read_file(path, max_object_bytes)
    except OSError as exc:
        return FileOutcome(path, CANNOT_UNDERSTAND, f"cannot read file: {exc.strerror or exc}")
    except IncompleteObject as exc:
        return FileOutcome(path, intake.handle_incomplete(raw, exc.reason, origin), exc.reason)
    except ObjectTooLarge as exc:
        return FileOutcome(path, intake.handle_undecodable(raw, str(exc), origin), str(exc))
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets a clear answer, as in the agent
        reason = f"cannot read file: {type(exc).__name__}"
        return FileOutcome(path, intake.handle_undecodable(raw, reason, origin), reason)
    return FileOutcome(path, intake.handle(ds, raw, origin))
