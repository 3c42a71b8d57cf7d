"""The entry point of DICOM extraction: one received object in, exposure events and a dose summary out. Pure.

Dispatch, on the SOP Class UID (the Modality only when the SOP class is missing):
- image classes (CR, DX, MG, IO, XA, RF; for processing or presentation; multi-frame) -> one ExposureEvent per image;
- X-Ray Radiation Dose SR, or an Enhanced/Comprehensive SR titled X-Ray Radiation Dose Report (113701) -> one
  ExposureEvent per irradiation event and a DoseSummary of the accumulated totals;
- a CT or radiopharmaceutical dose report -> an empty Extraction whose `not_for_room` says so (acknowledged, logged
  and counted as such: an X-ray room may be sent them by mistake);
- anything else (CT, secondary capture, presentation state...) -> an empty Extraction: the object is valid, it just
  records no projection exposure, so the intake can acknowledge it.
ExtractionError is raised only for objects that cannot be interpreted, and is the only exception malformed input
can cause.

Identity and privacy: UIDs never leave this module in clear. "Already known" (the outbox drops a repeated msg_id) is
decided by identity AND content: msg_id is a keyed hash (make_ref) of the event's identity key (image.exposure_identity,
rdsr.event_identity: the Irradiation Event UID, else fallbacks) plus the fingerprint of what the event records (time
to the second, technique, dose, view, laterality, irradiation type; `fingerprint`). So re-extracting an object,
receiving both the For-Processing and For-Presentation image of one exposure, or a cumulative RDSR re-sent with more
events all repeat the msg_id of events already seen, while two exposures that share a key (vendors' UID generators
repeat; anonymisers rewrite UIDs) but differ in what they record never do. Identical events sharing a key inside one
object (e.g. one UID on two events of a report) are told apart by their occurrence in the object, which a cumulative
re-send keeps.

event_ref hashes the identity key, the acquisition second and that occurrence: equal for the image and RDSR views of
one exposure (joinable; their msg_ids differ: both are published, they carry different values), different for
exposures at different times sharing a key. `ts` is ctx.received_at so extraction stays pure.

Free text (protocol, body part, view, station and equipment names) leaves this module only as ctx.free_text says
(agent.privacy.policy): by default screened against the object's own identifiers (identifiers.py), each changed value
listed in the payload's `warnings`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydicom import Dataset

from agent.dicom import image, purpose, rdsr, report_kind, srtree, units
from agent.dicom.attributes import read_number, read_text
from agent.dicom.identifiers import patient_identifiers
from agent.dicom.patient import PatientFacts, patient_facts, patient_ref
from agent.payloads.base import Envelope, utc_now
from agent.payloads.exposure import DoseSummary, ExposureEvent
from agent.privacy.policy import TextPolicy
from agent.privacy.screen import Identifiers
from agent.pseudonym import SECRET_MIN_BYTES, make_ref

AGE_CAP_YEARS = 90  # older ages are reported as 90: very old patients are few enough to be identifiable
SEXES = frozenset({"M", "F", "O"})
EQUIPMENT_FIELDS = {"manufacturer": "Manufacturer", "model": "ManufacturerModelName",
                    "station_name": "StationName", "device_serial": "DeviceSerialNumber"}
UNREADABLE = "unreadable object"


class ExtractionError(Exception):
    """The object cannot be interpreted (e.g. no SOP Instance UID); `reason` says why, without identifiers."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ExtractContext:
    """What extraction needs besides the object: site and room ids, the site secret, the site's time zone."""

    site: str
    room: str
    secret: bytes
    timezone: str = "UTC"  # zoneinfo name, for objects without Timezone Offset From UTC (0008,0201)
    include_age_sex: bool = True  # also gates patient weight and size
    received_at: datetime = field(default_factory=utc_now)  # aware, UTC
    free_text: TextPolicy = field(default_factory=TextPolicy)  # privacy.free_text
    sender_modality: str | None = None  # modality of the images the same sender sent (a dose report's last resort)
    not_a_patient: tuple[str, ...] = purpose.DEFAULT_NOT_A_PATIENT  # regular expressions (purpose.py)

    def __post_init__(self) -> None:
        if len(self.secret) < SECRET_MIN_BYTES:
            raise ValueError(f"site secret too short: need at least {SECRET_MIN_BYTES} bytes")
        if self.received_at.tzinfo is None:
            raise ValueError("received_at must be timezone-aware")
        object.__setattr__(self, "received_at", self.received_at.astimezone(UTC))  # frozen: set once here
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc


@dataclass(frozen=True)
class Extraction:
    """What one object yields: its exposure events, and for a dose report the summary of its totals."""

    events: tuple[ExposureEvent, ...] = ()
    summary: DoseSummary | None = None
    # Per event, in order: (keyed hash of its identity key, its place in the object: keyed hash of the SOP Instance
    # UID + position). Never published; the intake uses them to tell a correction from a repeated identity.
    identities: tuple[tuple[str, str], ...] = ()
    patient: PatientFacts | None = None  # private: for dose rules only, never serialised (agent.dicom.patient)
    not_for_room: str | None = None  # why a valid dose report publishes nothing (report_kind.CT_REPORT, NM_REPORT)

    def payloads(self) -> tuple[Envelope, ...]:
        """All payloads in publish order: events first, then the summary that totals them."""
        return self.events + ((self.summary,) if self.summary else ())


def extract(ds: Dataset, ctx: ExtractContext) -> Extraction:
    """Turn one received DICOM object into payloads; raises ExtractionError, and only that, for malformed input."""
    if not isinstance(ds, Dataset):
        raise ExtractionError("not a DICOM dataset")
    try:
        return _extract(ds, ctx)
    except ExtractionError:
        raise
    except Exception as exc:  # last line of defence: the readers already treat broken elements as absent
        raise ExtractionError(f"{UNREADABLE}: {type(exc).__name__}") from exc


def _extract(ds: Dataset, ctx: ExtractContext) -> Extraction:
    if not read_text(ds, "SOPInstanceUID"):
        raise ExtractionError("missing SOP Instance UID")
    if sop_class_uid(ds) == report_kind.RADIOPHARMACEUTICAL_SR:
        return Extraction(not_for_room=report_kind.NM_REPORT)
    kind = classify(ds)
    if kind == "image":
        event, identity = _image_event(ds, ctx)
        return Extraction(events=(event,), identities=(_identity(ds, ctx, identity, 0),),
                          patient=patient_facts(ds, ctx.secret))
    if kind == "rdsr":
        with srtree.paused_collector():  # thousands of events: see srtree.paused_collector
            found = _dose_report(ds, ctx)
        return replace(found, patient=patient_facts(ds, ctx.secret)) if found.events or found.summary else found
    return Extraction()


def sop_class_uid(ds: Dataset) -> str | None:
    """SOP Class UID of the dataset, else of its file meta (Media Storage SOP Class UID)."""
    meta = getattr(ds, "file_meta", None)
    from_meta = read_text(meta, "MediaStorageSOPClassUID") if isinstance(meta, Dataset) else None
    return read_text(ds, "SOPClassUID") or from_meta


def classify(ds: Dataset) -> str | None:
    """"image", "rdsr", or None for a valid object without projection exposure data."""
    sop_class, modality = sop_class_uid(ds), read_text(ds, "Modality")
    if sop_class:
        if sop_class in image.IMAGE_SOP_CLASSES:
            return "image"
        dose_report = sop_class in rdsr.GENERIC_SR_CLASSES and rdsr.is_dose_report(ds)
        return "rdsr" if sop_class in rdsr.DOSE_SR_CLASSES or dose_report else None
    if modality in image.IMAGE_MODALITIES:
        return "image"
    if modality:
        return "rdsr" if modality == "SR" and rdsr.is_dose_report(ds) else None
    raise ExtractionError("neither SOP Class UID nor Modality")


def patient_age_years(ds: Dataset) -> int | None:
    """Whole years from Patient Age, else birth date vs study date; capped at AGE_CAP_YEARS."""
    age = units.age_string_to_years(read_text(ds, "PatientAge"))
    if age is None:
        birth, study = units.parse_date(read_text(ds, "PatientBirthDate")), units.parse_date(read_text(ds, "StudyDate"))
        age = units.years_between(birth, study) if birth and study else None
    return None if age is None else min(age, AGE_CAP_YEARS)


def patient_sex(ds: Dataset) -> str | None:
    """M, F or O; anything else is unknown."""
    sex = (read_text(ds, "PatientSex") or "").upper()
    return sex if sex in SEXES else None


def patient_weight_kg(ds: Dataset) -> float | None:
    """Patient's Weight (0010,1030), kg; 0 (a placeholder) and values above 500 kg are unknown."""
    weight = units.magnitude(read_number(ds, "PatientWeight"))
    return weight if weight and weight <= 500 else None


def patient_size_m(ds: Dataset) -> float | None:
    """Patient's Size (0010,1020), m; 0 (a placeholder) and values above 3 m are unknown (a height in cm is not
    guessed into metres)."""
    size = units.magnitude(read_number(ds, "PatientSize"))
    return size if size and size <= 3 else None


def local_zone(ds: Dataset, ctx: ExtractContext) -> tzinfo:
    """The object's Timezone Offset From UTC (0008,0201), else the site's configured zone."""
    return units.parse_utc_offset(read_text(ds, "TimezoneOffsetFromUTC")) or ZoneInfo(ctx.timezone)


def _common(ds: Dataset, ctx: ExtractContext, modality: str | None, ids: Identifiers,
            observer: dict[str, str | None] | None = None) -> dict[str, object]:
    """Fields shared by every payload of the object: envelope, equipment (the header's, gaps filled from a dose
    report's Device Observer items), study and patient refs, patient age, sex, weight and size (the last four only
    with include_age_sex), and the warnings of its screened equipment labels."""
    study_uid = read_text(ds, "StudyInstanceUID")
    include = ctx.include_age_sex
    labels = {"modality": modality, **{name: read_text(ds, keyword) for name, keyword in EQUIPMENT_FIELDS.items()}}
    for name, text in (observer or {}).items():  # the header wins; the observer fills its gaps
        labels[name] = labels.get(name) or text
    labels, warnings = ctx.free_text.apply(labels, ids)
    return {
        "site": ctx.site, "room": ctx.room, "ts": ctx.received_at, "received_at": ctx.received_at, **labels,
        "study_ref": make_ref(ctx.secret, "study", study_uid) if study_uid else None,
        "patient_ref": patient_ref(ctx.secret, ds),
        "patient_age_years": patient_age_years(ds) if include else None,
        "patient_sex": patient_sex(ds) if include else None,
        "warnings": warnings,
        "patient_weight_kg": patient_weight_kg(ds) if include else None,
        "patient_size_m": patient_size_m(ds) if include else None,
    }


# What an exposure records, for "is it the same exposure?": two events with one identity key and equal fingerprints
# are one exposure. Labels (protocol, body part) and indices derived after processing (EI) are left out: they may
# differ between the For-Processing and For-Presentation image of one exposure.
FINGERPRINT_FIELDS = ("kvp", "tube_current_ma", "exposure_time_ms", "exposure_mas", "dap_gy_m2", "entrance_dose_mgy",
                      "dose_rp_gy", "pulses", "view", "laterality", "irradiation_type")


def acquisition_second(acquired_dt: object) -> str:
    """The leading YYYYMMDDHHMMSS digits of a DT string (fractions and offset dropped), "" when absent."""
    text = str(acquired_dt or "").strip()
    digits = len(text) - len(text.lstrip("0123456789"))
    return text[:min(digits, 14)]


def fingerprint(values: dict[str, object]) -> str:
    """The recorded content of one exposure as a canonical string: acquisition second, then FINGERPRINT_FIELDS with
    numbers to 6 significant digits (so the same value read from µAs or from mAs agrees)."""
    def canonical(value: object) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return format(value, ".6g")
        return "" if value is None else str(value)
    fields = [values.get("view_code") or values.get(name) if name == "view" else values.get(name)
              for name in FINGERPRINT_FIELDS]  # a view code is matched by code, not by its vendor-worded meaning
    return "\x1f".join([acquisition_second(values.get("acquired_dt"))] + [canonical(value) for value in fields])


def event_keys(exposures: list[dict[str, object]]) -> list[tuple[str, str]]:
    """(msg_id key, event_ref key) in clear for each exposure of one object, in order (module docstring)."""
    seen: dict[str, int] = {}
    keys = []
    for values in exposures:
        identity = str(values["identity"])
        content = f"{identity}\x1e{fingerprint(values)}"
        joint = f"{identity}\x1e{acquisition_second(values.get('acquired_dt'))}"
        content_n, joint_n = seen.get("c" + content, 0), seen.get("j" + joint, 0)
        seen["c" + content], seen["j" + joint] = content_n + 1, joint_n + 1
        keys.append((content + (f"\x1e#{content_n}" if content_n else ""),
                     joint + (f"\x1e#{joint_n}" if joint_n else "")))
    return keys


def _event(exposure: dict[str, object], keys: tuple[str, str], source: str, common: dict, zone: tzinfo,
           ctx: ExtractContext, ids: Identifiers) -> ExposureEvent:
    """An ExposureEvent from image.py/rdsr.py values: the keys are hashed, the DT string resolved in `zone`, the
    labels screened (ctx.free_text)."""
    values = dict(exposure)
    acquired_dt, warnings = values.pop("acquired_dt"), list(values.pop("warnings", None) or [])
    for name in ("identity", "view_code"):  # used for the keys only
        values.pop(name, None)
    acquired_at = units.parse_datetime(acquired_dt, zone)
    if acquired_dt and acquired_at is None:
        warnings.append({"field": "acquired_at", "reason": "unparseable"})  # a date: never quoted
    values["purpose"] = purpose.event_purpose(common["purpose"], values.get("protocol"), ctx.not_a_patient)
    common = {key: value for key, value in common.items() if key != "purpose"}
    values, screened = ctx.free_text.apply(values, ids)
    return ExposureEvent(**{**common, "warnings": common["warnings"] + warnings + screened}, **values, source=source,
                         acquired_at=acquired_at,
                         msg_id=make_ref(ctx.secret, f"exposure/{source}", keys[0]),
                         event_ref=make_ref(ctx.secret, "event", keys[1]))


def _identity(ds: Dataset, ctx: ExtractContext, identity: object, position: int, anchor: str = "SOPInstanceUID"
              ) -> tuple[str, str]:
    """(identity hash, place hash). The place of an image's exposure is its SOP instance; of a dose report's event,
    its position in the study's report (a cumulative report is re-sent under new SOP Instance UIDs)."""
    place = f"{read_text(ds, anchor) or read_text(ds, 'SOPInstanceUID')}\x1f{position}"
    return make_ref(ctx.secret, "identity", str(identity)), make_ref(ctx.secret, "place", place)


def _image_event(ds: Dataset, ctx: ExtractContext) -> tuple[ExposureEvent, object]:
    modality = image.IMAGE_SOP_CLASSES.get(sop_class_uid(ds) or "") or read_text(ds, "Modality")
    ids = patient_identifiers(ds)
    common = {**_common(ds, ctx, read_text(ds, "Modality") or modality, ids),
              "purpose": purpose.object_purpose(ds, ctx.not_a_patient)}
    exposure = image.image_exposure(ds, modality)
    return (_event(exposure, event_keys([exposure])[0], "image", common, local_zone(ds, ctx), ctx, ids),
            exposure["identity"])


def _dose_report(ds: Dataset, ctx: ExtractContext) -> Extraction:
    root = rdsr.report_root(ds)  # the content tree, read once for events, totals and the kind of unit
    tree = rdsr.concept_index(root)
    reason = report_kind.not_for_room(sop_class_uid(ds), root, tree)
    if reason:
        return Extraction(not_for_room=reason)
    ids = patient_identifiers(ds)
    common = _common(ds, ctx, report_kind.report_modality(tree, ctx.sender_modality), ids,
                     observer=report_kind.device_identity(root))
    common["purpose"] = purpose.object_purpose(ds, ctx.not_a_patient)
    zone = local_zone(ds, ctx)
    exposures = rdsr.report_events(ds, root)
    events = tuple(_event(values, keys, "rdsr", common, zone, ctx, ids)
                   for values, keys in zip(exposures, event_keys(exposures)))
    identities = tuple(_identity(ds, ctx, values["identity"], n, "StudyInstanceUID")
                       for n, values in enumerate(exposures))
    totals = rdsr.accumulated_totals(ds, root)
    if not events and totals is None:
        return Extraction()  # a dose report without projection events or totals
    report_purpose = "qc" if events and all(event.purpose == "qc" for event in events) else common["purpose"]
    summary_common = {**{k: v for k, v in common.items() if k != "purpose"}, "purpose": report_purpose}
    return Extraction(events=events, summary=_summary(ds, ctx, summary_common, len(events), totals or {}, zone,
                                                      root), identities=identities)


def _summary(ds: Dataset, ctx: ExtractContext, common: dict, events_count: int, totals: dict, zone: tzinfo,
             root: rdsr.Node) -> DoseSummary:
    """The totals; msg_id hashes study UID + event count + totals, so a grown cumulative report is a new summary
    while the same report received twice repeats its msg_id."""
    anchor = read_text(ds, "StudyInstanceUID") or read_text(ds, "SOPInstanceUID")
    summed = {measure.field: totals.get(measure.field) for measure in rdsr.TOTAL_MEASURES}  # the key's fields stay
    key = "\x1f".join([anchor or "", str(events_count), json.dumps(summed, sort_keys=True)])
    started, ended = rdsr.irradiation_period(ds, root)
    return DoseSummary(**common, **totals, events_count=events_count, msg_id=make_ref(ctx.secret, "dose-summary", key),
                       irradiation_started_at=units.parse_datetime(started, zone),
                       irradiation_ended_at=units.parse_datetime(ended, zone))
