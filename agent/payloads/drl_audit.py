"""The DRL audit: per room, examination and patient band, the median dose of a period's examinations compared with
its diagnostic reference level (ICRP Publication 135, 2017, sections 2.3 and 2.6). Like every dose message it carries
no patient identifier.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.payloads.base import Envelope

Finite = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
AuditFlag = Literal["few-examinations", "median-above-drl"]


class ExamAudit(BaseModel):
    """One examination and band of a period."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exam: str = Field(description="The standard examination name of the reference-level rule, else the protocol "
                                  "name, else body part and view, as sent.")
    rule: str | None = Field(description="Id of the [[diagnostic_reference_level]] rule; null when no rule covers the "
                                         "exam (figures without a DRL).")
    band: str = Field(description='Patient band of the rule ("3m-<1y", "5-<15kg"; "any" for an unbanded rule); '
                                  '"unknown" when the exam has banded rules and the object gave no usable age or '
                                  'weight.')
    examinations: Count = Field(description="Examinations counted: one per study, the DAP of its views summed; "
                                            "repeats, QC exposures and views without DAP left out, count.")
    median_dap_gy_m2: Finite | None = Field(description="Median DAP per examination, Gy·m²; null if none.")
    q1_dap_gy_m2: Finite | None = Field(description="First quartile (linear interpolation, numpy's default), Gy·m².")
    q3_dap_gy_m2: Finite | None = Field(description="Third quartile, Gy·m².")
    iqr_dap_gy_m2: Finite | None = Field(description="Interquartile range q3 - q1, Gy·m².")
    drl_dap_gy_m2: Finite | None = Field(description="The rule's DRL per examination, Gy·m²; null without a rule.")
    median_to_drl: Finite | None = Field(description="median / DRL; null without a DRL or a median.")
    flags: list[AuditFlag] = Field(description="few-examinations: fewer than min_examinations (the median is not "
                                               "fit to compare); median-above-drl: median strictly above the DRL.")


class DrlAudit(Envelope):
    """The DRL audit of one period: monthly, and on request."""

    KIND: ClassVar[str] = "drl-audit"
    schema_: Literal["xray.drl-audit/1"] = Field("xray.drl-audit/1", alias="schema",
                                                 description="Payload schema/version.")

    trigger: Literal["monthly", "request"] = Field(description="monthly: the calendar month just ended; request: a "
                                                               "period asked for.")
    period_start: datetime = Field(description="Start of the period (inclusive), local time with offset.")
    period_end: datetime = Field(description="End of the period (exclusive), local time with offset.")
    timezone: str = Field(description="The site's zone (IANA name).")
    min_examinations: Count = Field(description="The rules' minimum sample per examination and band, count.")
    exams: list[ExamAudit] = Field(description="Per examination and band, sorted by exam then band.")
