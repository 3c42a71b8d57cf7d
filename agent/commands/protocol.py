"""The command wire format, and the rules that decide whether a request may run.

Request: a JSON object `{"command": "ping", "args": {...}, "ts": "2025-01-31T12:00:00Z"}` (args and ts optional)
published with MQTT 5 properties ResponseTopic (required), CorrelationData (echoed) and MessageExpiryInterval
(recommended). Reply: `xray.cmd-reply/1` (agent.payloads.command) on the ResponseTopic.

A request does not run when it is retained (it would run again on every reconnect), when its message expiry lapsed
while it waited in the agent, when its `ts` is older than commands.max_age_s, when it has neither `ts` nor a message
expiry (its age cannot be known: possibly stale), or when its response topic matches none of commands.reply_topics
or lies inside the agent's data topics (a reply must never land on an exposure or status topic, nor on any topic a
requester picks: the agent's broker credentials would publish there).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from paho.mqtt.client import topic_matches_sub
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.publisher import CONTENT_TYPE

MAX_REQUEST_BYTES = 4096


class CommandRequest(BaseModel):
    """What a requester sends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    ts: datetime | None = Field(None, description="When the requester sent it (ISO 8601 with offset).")


@dataclass(frozen=True)
class Incoming:
    """A received request: parsed (or why not), where to answer, and until when it may run."""

    request: CommandRequest | None
    error: str | None
    response_topic: str | None
    correlation: bytes | None
    retained: bool
    expires_at: float | None  # monotonic; from MessageExpiryInterval as the broker forwarded it

    @property
    def command(self) -> str | None:
        """The command name, if the request could be read."""
        return self.request.command if self.request else None


def parse(topic_payload: bytes, properties: Properties | None, retained: bool, now: float) -> Incoming:
    """Read one message; never raises (a bad request becomes an Incoming with an error)."""
    response_topic = getattr(properties, "ResponseTopic", None) or None
    correlation = getattr(properties, "CorrelationData", None)
    expiry_s = getattr(properties, "MessageExpiryInterval", None)
    expires_at = None if expiry_s is None else now + expiry_s
    request, error = None, None
    if len(topic_payload) > MAX_REQUEST_BYTES:
        error = f"request larger than {MAX_REQUEST_BYTES} bytes"
    else:
        try:
            request = CommandRequest.model_validate(json.loads(topic_payload))
        except (ValueError, ValidationError) as exc:
            error = ('not a valid request: expected JSON {"command": NAME, "args": {...}, "ts": ISO 8601} '
                     f"({_first_problem(exc)})")
    return Incoming(request, error, response_topic, correlation, retained, expires_at)


def _first_problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        item = exc.errors()[0]
        return f"{'.'.join(str(p) for p in item['loc']) or 'request'}: {item['msg']}"
    return str(exc).splitlines()[0][:200]


def refusal(incoming: Incoming, max_age_s: float, now: float | None = None,
            wall: datetime | None = None) -> str | None:
    """Why this request must not run now, or None when it may."""
    if incoming.error:
        return incoming.error
    if incoming.retained:
        return "retained command refused: publish commands with retain = false"
    now = time.monotonic() if now is None else now
    if incoming.expires_at is not None and now > incoming.expires_at:
        return "expired: its message expiry interval ran out before it could run"
    ts = incoming.request.ts
    if ts is None and incoming.expires_at is None:
        return ("possibly stale: the request has neither `ts` nor a message expiry interval, so its age is unknown; "
                "send one of them")
    if ts is not None:
        ts = ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
        age_s = ((wall or datetime.now(timezone.utc)) - ts).total_seconds()
        if age_s > max_age_s:
            return f"stale: sent {age_s:.0f} s ago, more than commands.max_age_s = {max_age_s:.0f} s"
        if age_s < -max_age_s:
            return f"ts is {-age_s:.0f} s in the future: check the clocks of the requester and the room PC"
    return None


def reply_filters(patterns: list[str] | tuple[str, ...], prefix: str, site: str, room: str) -> tuple[str, ...]:
    """commands.reply_topics with {prefix}, {site} and {room} filled in: the MQTT topic filters replies may go to."""
    return tuple(p.format(prefix=prefix, site=site, room=room) for p in patterns)


TOPIC_SHOWN_CHARS = 120  # a topic may be 65,535 bytes (MQTT 5 section 1.5.4): messages quote its beginning


def shown_topic(topic: str) -> str:
    """`topic` quoted for a message or the log, cut to TOPIC_SHOWN_CHARS with its full length said."""
    if len(topic) <= TOPIC_SHOWN_CHARS:
        return repr(topic)
    return f"{topic[:TOPIC_SHOWN_CHARS]!r}… ({len(topic)} characters)"


def response_topic_refusal(topic: str | None, filters: tuple[str, ...], prefix: str, base: str) -> str | None:
    """Why the agent must not publish a reply on `topic`, or None. The topic must match one of `filters` (MQTT
    wildcard matching, MQTT 5 section 4.7), and inside `{prefix}/` only `{base}/cmd/...` is ever allowed, so a
    request cannot make the agent write on its own (or another room's) data topics whatever the filters say."""
    if not topic:
        return "no response topic (MQTT 5 ResponseTopic): nowhere to answer"
    if "+" in topic or "#" in topic:
        return f"response topic {shown_topic(topic)} has a wildcard"
    if topic.startswith("$"):  # $SYS/...: broker topics, never matched by a wildcard (MQTT 5 section 4.7.2)
        return f"response topic {shown_topic(topic)} is a broker topic"
    if (topic == prefix or topic.startswith(prefix + "/")) and not topic.startswith(base + "/cmd/"):
        return (f"response topic {shown_topic(topic)} is inside the agent's data topics; use one outside {prefix}/ "
                f"or under {base}/cmd/")
    if not any(topic_matches_sub(f, topic) for f in filters):
        return f"response topic {shown_topic(topic)} matches none of commands.reply_topics ({', '.join(filters)})"
    return None


def reply_properties(correlation: bytes | None, msg_id: str) -> Properties:
    """Content type, the msg_id as a user property and the request's correlation data."""
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = CONTENT_TYPE
    props.UserProperty = [("msg_id", msg_id)]
    if correlation is not None:
        props.CorrelationData = correlation
    return props
