"""The envelope every published message carries, and helpers for timestamps and ids."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_serializer


def utc_now() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def new_msg_id() -> str:
    """A random message id, for messages that have no natural identity (health samples, status)."""
    return uuid.uuid4().hex


class Envelope(BaseModel):
    """Fields common to every payload: `schema` (name/version), `msg_id`, `site`, `room`, `ts` (ISO 8601 UTC).

    Subclasses set KIND (the topic kind, e.g. "exposure") and declare
    `schema_: Literal["xray.<name>/<n>"] = Field("xray.<name>/<n>", alias="schema")`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    KIND: ClassVar[str] = ""

    schema_: str = Field(alias="schema")
    msg_id: str = Field(min_length=1, max_length=128, description="Stable id; a duplicate delivery repeats it.")
    site: str = Field(description="Site id from the agent's config.")
    room: str = Field(description="Room id from the agent's config.")
    ts: datetime = Field(default_factory=utc_now, description="When the agent created the message, UTC.")

    @field_serializer("ts", when_used="json")
    def _ts_utc(self, ts: datetime) -> str:
        return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

    def topic_kind(self) -> str:
        """The `{kind}` part of the topic this payload goes to."""
        return self.KIND

    def to_json_bytes(self) -> bytes:
        """The wire form: compact JSON with `schema` spelled as on the wire."""
        return self.model_dump_json(by_alias=True).encode()
