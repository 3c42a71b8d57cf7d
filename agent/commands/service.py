"""The command service: receives requests on the publisher's connection, runs allowed ones in its own thread, and
answers each on its response topic.

paho's network thread only parses and queues (bounded: a flood is answered "busy", never queued without end); the
worker checks, just before running, that the request has not gone stale while it waited.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from agent.commands.handlers import COMMANDS, CommandContext, CommandError
from agent.commands.protocol import (Incoming, parse, refusal, reply_filters, reply_properties,
                                     response_topic_refusal, shown_topic)
from agent.payloads.base import new_msg_id
from agent.payloads.command import CommandReply

log = logging.getLogger(__name__)

QUEUE_MAX = 16
LOGGED_TOPICS_MAX = 64  # refused response topics remembered so each is logged once, not once per request
ALLOWED = ", ".join(COMMANDS)


class CommandService:
    """Service (start/stop/alive) answering `{prefix}/{site}/{room}/cmd`; subscribes through the publisher."""

    def __init__(self, ctx: CommandContext) -> None:
        """Registers the subscription on the publisher; construct before the publisher connects."""
        self.ctx = ctx
        view = ctx.view
        self.topics = view.publisher.topics
        self.topic = f"{self.topics.base}/cmd"
        self.max_age_s = view.cfg.commands.max_age_s
        cfg = view.cfg
        self.reply_filters = reply_filters(cfg.commands.reply_topics, self.topics.prefix, cfg.site.id, cfg.site.room)
        self._refused_topics: set[str | None] = set()
        self._queue: queue.Queue[Incoming | None] = queue.Queue(QUEUE_MAX)
        self._thread: threading.Thread | None = None
        # A retained command would run again on every reconnect: the broker is asked not to send it at all.
        view.publisher.add_subscription(self.topic, self.on_message, skip_retained=True)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._run, name="commands", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Finish the command in progress and stop; queued ones are dropped (their requesters time out)."""
        if self._thread is not None:
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def alive(self) -> bool:
        """True while the worker runs."""
        return self._thread is not None and self._thread.is_alive()

    def on_message(self, msg) -> None:
        """paho's thread: parse, refuse what cannot be answered, queue the rest."""
        incoming = parse(msg.payload, getattr(msg, "properties", None), bool(msg.retain), time.monotonic())
        topic_problem = response_topic_refusal(incoming.response_topic, self.reply_filters, self.topics.prefix,
                                               self.topics.base)
        if topic_problem:
            # Nowhere allowed to answer: not run, and logged once per topic (a flood must not flood the journal).
            if incoming.response_topic not in self._refused_topics and len(self._refused_topics) < LOGGED_TOPICS_MAX:
                self._refused_topics.add(incoming.response_topic)
                log.warning("command %r not run: %s (logged once per topic)", incoming.command, topic_problem)
            return
        try:
            self._queue.put_nowait(incoming)
        except queue.Full:
            self._reply(incoming, error=f"busy: {QUEUE_MAX} commands already waiting; try again later")

    def _run(self) -> None:
        while (incoming := self._queue.get()) is not None:
            try:
                self._handle(incoming)
            except Exception:  # noqa: BLE001 - one bad command must not stop the worker
                log.exception("command %r failed", incoming.command)

    def _handle(self, incoming: Incoming) -> None:
        problem = refusal(incoming, self.max_age_s)
        if problem is None and incoming.command not in COMMANDS:
            problem = f"unknown command {incoming.command!r}; allowed: {ALLOWED}"
        if problem:
            log.warning("command %r refused: %s", incoming.command, problem)
            self._reply(incoming, error=problem)
            return
        try:
            result = COMMANDS[incoming.command](self.ctx, incoming.request.args)
        except CommandError as exc:
            self._reply(incoming, error=f"{incoming.command}: {exc}")
            return
        log.info("command %r run (reply to %s)", incoming.command, shown_topic(incoming.response_topic or ""))
        self._reply(incoming, result=result)

    def _reply(self, incoming: Incoming, result: dict | None = None, error: str | None = None) -> None:
        cfg = self.ctx.view.cfg
        reply = CommandReply(msg_id=new_msg_id(), site=cfg.site.id, room=cfg.site.room, command=incoming.command,
                             ok=error is None, result=result, error=error, boot_id=self.ctx.view.boot_id)
        sent = self.ctx.view.publisher.publish_direct(incoming.response_topic, reply.to_json_bytes(),
                                                      reply_properties(incoming.correlation, reply.msg_id))
        if not sent:
            log.warning("reply to command %r not sent: not connected", incoming.command)
