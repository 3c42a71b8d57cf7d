"""The allow-list: each remote command is a plain function over the agent's live state, returning a JSON object.

Nothing here runs a program, reads or writes a file named by the request, or evaluates anything it sent: the only
argument taken from a request is a log level checked against a fixed list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from agent import __version__
from agent.health.sampler import HealthReporter
from agent.health.view import AgentView
from agent.instruments.reporter import EquipmentReporter
from agent.logs import set_level
from agent.outbox import OutboxError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class CommandError(Exception):
    """The command cannot run with these arguments (or failed); the message goes into the error reply."""


@dataclass
class CommandContext:
    """What commands act on."""

    view: AgentView
    health: HealthReporter
    equipment: EquipmentReporter
    dose: Any = None  # agent.dose.monitor.DoseMonitor when dose monitoring runs (set once it is built)


def _no_args(args: dict) -> None:
    if args:
        raise CommandError(f"takes no arguments (got {', '.join(sorted(args))})")


def ping(ctx: CommandContext, args: dict) -> dict[str, Any]:
    """Proof of life: version, boot id and uptime."""
    _no_args(args)
    v = ctx.view
    return {"pong": True, "version": __version__, "boot_id": v.boot_id, "uptime_s": round(v.uptime_s(), 3)}


def health(ctx: CommandContext, args: dict) -> dict[str, Any]:
    """Take a health sample now, store it for the `health` topic and return it."""
    _no_args(args)
    sample = ctx.health.sampler.sample()
    try:
        ctx.health.sink.emit(sample)
        stored = True
    except OutboxError:
        stored = False
    return {"sample": sample.model_dump(mode="json", by_alias=True), "stored": stored}


def republish_status(ctx: CommandContext, args: dict) -> dict[str, Any]:
    """Publish the retained status (birth/update) and every equipment state again."""
    _no_args(args)
    ctx.view.publisher.request_status()
    ctx.equipment.republish()
    return {"status": "requested", "equipment_devices": len(ctx.view.board.trackers)}


def flush_outbox(ctx: CommandContext, args: dict) -> dict[str, Any]:
    """Try to deliver the outbox now: wake the publisher, and end a reconnect backoff early."""
    _no_args(args)
    depth = ctx.view.outbox.depth()
    ctx.view.publisher.wake()
    return {"depth": depth, "connected": ctx.view.publisher.state.connected}


def retry_parked(ctx: CommandContext, args: dict) -> dict[str, Any]:
    """Put the messages the broker would not take back into the delivery order (after fixing its ACL or packet
    size); returns how many."""
    _no_args(args)
    try:
        released = ctx.view.outbox.retry_parked()
    except OutboxError as exc:
        raise CommandError(f"parked messages not released: {exc}") from None
    ctx.view.publisher.wake()
    return {"released": released, "connected": ctx.view.publisher.state.connected}


def set_log_level(ctx: CommandContext, args: dict) -> dict[str, Any]:
    """Change the log level until the next restart: args {"level": "DEBUG" | "INFO" | "WARNING" | "ERROR"}."""
    level = str(args.get("level", "")).upper()
    if set(args) != {"level"} or level not in LOG_LEVELS:
        raise CommandError(f'expects args {{"level": one of {", ".join(LOG_LEVELS)}}}')
    return {"previous": set_level(level), "level": level}


def dose_summary(ctx: CommandContext, args: dict) -> dict[str, Any]:
    """Publish the room's dose summary of the day so far on `summary` now, and return it."""
    _no_args(args)
    if ctx.dose is None:
        raise CommandError("dose monitoring is not running in this agent")
    try:
        summary = ctx.dose.request_summary()
    except Exception as exc:  # noqa: BLE001 - outbox full or history unreadable: say so in the reply
        raise CommandError(f"summary not published: {exc}") from None
    return {"summary": summary.model_dump(mode="json", by_alias=True)}


def drl_audit(ctx: CommandContext, args: dict) -> dict[str, Any]:
    """Publish the DRL audit of the month so far on `drl-audit` now, and return it."""
    _no_args(args)
    if ctx.dose is None:
        raise CommandError("dose monitoring is not running in this agent")
    try:
        audit = ctx.dose.request_audit()
    except Exception as exc:  # noqa: BLE001 - outbox full or history unreadable: say so in the reply
        raise CommandError(f"DRL audit not published: {exc}") from None
    return {"drl_audit": audit.model_dump(mode="json", by_alias=True)}


COMMANDS: dict[str, Callable[[CommandContext, dict], dict[str, Any]]] = {
    "ping": ping,
    "health": health,
    "republish-status": republish_status,
    "flush-outbox": flush_outbox,
    "set-log-level": set_log_level,
    "dose-summary": dose_summary,
    "retry-parked": retry_parked,
    "drl-audit": drl_audit,
}
