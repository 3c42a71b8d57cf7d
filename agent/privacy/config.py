"""The `[privacy]` section of the agent config: how free text and times are published (agent.privacy.policy).

Patient age and sex, the other publishing choice, stay under `dicom.include_age_sex` where they have always been.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agent.privacy.policy import FreeTextMode, TextPolicy, TimeResolution


class PrivacyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # TOML has inf and nan

    free_text: FreeTextMode = Field("screened", description=(
        "Protocol, body part, view, station and equipment names: 'screened' removes the object's patient "
        "identifiers, long numbers and dates; 'catalog' publishes a protocol or station name only when it is in "
        "known_protocols / known_stations (else 'other'); 'verbatim' publishes them as sent (check-config warns)."))
    known_protocols: list[str] = Field(default_factory=list, description=(
        "privacy.free_text = 'catalog': the site's protocol names (case and spacing ignored)."))
    known_stations: list[str] = Field(default_factory=list, description=(
        "privacy.free_text = 'catalog': the site's station names (case and spacing ignored)."))
    time_resolution: TimeResolution = Field("exact", description=(
        "Precision of published acquisition and receipt times: exact, minute, hour or day (truncated in the "
        "time's own offset), for sites that publish a de-identified data set."))

    def text_policy(self) -> TextPolicy:
        return TextPolicy.of(self.free_text, self.known_protocols, self.known_stations)

    def warnings(self) -> list[str]:
        """check-config warnings about this section."""
        lines = []
        if self.free_text == "verbatim":
            lines.append("privacy.free_text = 'verbatim': protocol, body part, view and station names are published "
                         "and stored as typed at the modality, where staff sometimes type a patient's name or record "
                         "number; use 'screened' unless the site's policy allows this")
        if self.free_text == "catalog" and not (self.known_protocols or self.known_stations):
            lines.append("privacy.free_text = 'catalog' with empty known_protocols and known_stations: every "
                         "protocol and station is published as 'other'")
        return lines
