"""The `[dose]` section of the agent config: on/off, where the rules and the local history live, when the daily
summary goes out. The rules themselves are a separate file (agent.dose.rules), validated when the config loads so
`xray-agent check-config` catches a typo in them too.
"""

from __future__ import annotations

from datetime import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.dose.rules import DoseRules, load_rules

STATE_FILE = "dose.db"  # next to the outbox unless state_path says otherwise


class DoseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # TOML has inf and nan

    enabled: bool = Field(True, description="Evaluate exposures, keep the history and publish summaries.")
    rules_file: Path | None = Field(None, description="Dose rules TOML (relative to the config file); built-in "
                                                      "defaults (DI bands, NCRP 168 levels, no DRLs) when unset.")
    state_path: Path | None = Field(None, description="SQLite history and per-study state; default dose.db next "
                                                      "to the outbox.")
    summary_at: time = Field(time(0, 0), description="Local time (site.timezone) the daily summary of the 24 h "
                                                     "before it is published, HH:MM.")
    history_days: int = Field(90, ge=1, le=3650, description="Days of exposure history kept for summaries.")

    @field_validator("rules_file")
    @classmethod
    def _valid_rules(cls, value: Path | None) -> Path | None:
        if value is not None:
            load_rules(value)  # ValueError names the file and the bad key
        return value

    @field_validator("summary_at")
    @classmethod
    def _whole_minutes(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("give a local time without offset; the site's timezone applies")
        return value.replace(second=0, microsecond=0)

    def rules(self) -> DoseRules:
        """The rules in force (the file is read again: it was valid when the config loaded)."""
        return load_rules(self.rules_file)

    def state_file(self, outbox_path: Path) -> Path:
        return self.state_path or Path(outbox_path).parent / STATE_FILE
