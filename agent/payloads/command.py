"""The reply to a remote command (agent.commands), published to the request's MQTT 5 response topic.

Replies never go through the outbox: they answer a live request, and one lost with the connection is answered by the
requester's own timeout.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from agent.payloads.base import Envelope


class CommandReply(Envelope):
    """ok with a result, or not ok with an error in words (unknown, stale, malformed or failed command)."""

    KIND: ClassVar[str] = ""  # not routed by kind: the requester names the topic
    schema_: Literal["xray.cmd-reply/1"] = Field("xray.cmd-reply/1", alias="schema",
                                                 description="Payload schema/version.")

    command: str | None = Field(description="The command as requested; null if the request could not be read.")
    ok: bool = Field(description="True when the command ran.")
    result: dict[str, Any] | None = Field(None, description="What the command returned (ok only).")
    error: str | None = Field(None, description="Why the command did not run or failed (not ok only).")
    boot_id: str = Field(description="Random id of the agent process run that answered.")
