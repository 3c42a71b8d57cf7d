"""The one door into the outbox for every intake: payload models in, durable rows out.

An intake (DICOM, serial, QC) builds payload models and calls `Sink.emit(...)`. It returns only after every payload of
the call is durably stored (or was already known: same msg_id), so the intake may then acknowledge its sender.
It raises OutboxFull / OutboxError otherwise, and the intake must answer its sender accordingly.
"""

from __future__ import annotations

from agent.outbox import OutMessage, Outbox
from agent.payloads.base import Envelope
from agent.topics import Topics, policy_for


class Sink:
    """Serialises payloads to their topics and stores them atomically in the outbox."""

    def __init__(self, outbox: Outbox, topics: Topics):
        self.outbox = outbox
        self.topics = topics

    @property
    def site(self) -> str:
        return self.topics.site

    @property
    def room(self) -> str:
        return self.topics.room

    def to_message(self, payload: Envelope) -> OutMessage:
        """The outbox row for a payload: topic from its kind, flags from the kind's policy."""
        kind = payload.topic_kind()
        policy = policy_for(kind)
        return OutMessage(msg_id=payload.msg_id, topic=self.topics.topic(kind), payload=payload.to_json_bytes(),
                          retain=policy.retain, coalesce=policy.coalesce, share=policy.share)

    def emit(self, *payloads: Envelope) -> list[bool]:
        """Store payloads durably, all or none; per payload True if new, False if its msg_id was already known."""
        return self.outbox.enqueue([self.to_message(p) for p in payloads])
