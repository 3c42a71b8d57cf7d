"""QC meter and dosimeter readings from the serial instruments, one message per reading.

Quantities are in canonical units named in their keys (`air_kerma_ugy` is µGy, `dap_gy_m2` is Gy·m²), exactly as the
driver produced them: nothing is guessed or filled in. `units` repeats each key's unit for readers that do not parse
names. The raw frame is kept for audit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from agent.payloads.base import Envelope

Value = Annotated[float, Field(allow_inf_nan=False)]
Key = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]

QUANTITIES_DOC = (
    "Measured quantities in canonical units, the unit in the key's suffix. Keys the built-in drivers produce: "
    "kvp, kvp_avg, kvp_max (kV); air_kerma_ugy (µGy); exposure_time_ms (ms); pulses (count of kV peaks); "
    "filter_position (Victoreen filter wheel 1..5); dap_gy_m2 (Gy·m²); dap_rate_gy_m2_s (Gy·m²/s); "
    "dose_rate_ugy_s (µGy/s air kerma rate); dose_rate_usv_h (µSv/h); count_rate_cpm (1/min). Profile-driven "
    "instruments add their own names with the same suffix convention (_ugy, _usv_h, _mm_al for HVL in mm Al, "
    "_cpm, _s, _ms, _hpa ...).")
RAW_DOC = (
    "The frame(s) as received, for audit: printable ASCII as is, backslash as \\\\, CR/LF/TAB as \\r \\n \\t, every "
    "other byte as \\xNN (so the exact bytes can be recovered). At most the first 4096 bytes; see raw_frame_bytes.")


class QcReading(Envelope):
    """One complete instrument reading, published on `qc/reading` once it is durably in the outbox."""

    KIND: ClassVar[str] = "qc/reading"
    schema_: Literal["xray.qc-reading/1"] = Field("xray.qc-reading/1", alias="schema",
                                                 description="Payload schema/version.")

    instrument_id: str = Field(description="Instrument id from the agent's config (also the equipment device_id).")
    driver: str = Field(description="Driver that read it, e.g. victoreen_4000m, ptw_diamentor, ludlum_375, profile.")
    measured_at: datetime = Field(description="When the agent completed the reading (last frame received), UTC.")
    quantities: dict[Key, Value] = Field(description=QUANTITIES_DOC)
    units: dict[Key, str] = Field(description="Unit of each key of quantities (e.g. kvp: kV, air_kerma_ugy: uGy); '1' "
                                              "for counts and indexes; a key whose name carries no known unit is absent.")
    flags: list[str] = Field(default_factory=list, description="Instrument conditions, sorted: alarm bits "
                             "(high_alarm, low_alarm, over_range ...), error_<code>, kvp_outside_filter_range.")
    series: dict[Key, list[Value]] = Field(default_factory=dict, description="Per-pulse values in the unit of the "
                                           "key, e.g. kvp_peaks (kV, the Victoreen's individual peaks).")
    raw_frame: str = Field(description=RAW_DOC)
    raw_frame_bytes: int = Field(ge=0, description="Length of the raw frame(s) in bytes, count.")
    session_ref: str | None = Field(None, description="Random id of the QC session this reading was recorded in (as "
                                    "on qc/session); null when no session was open for the instrument.")
