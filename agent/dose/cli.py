"""The dose programme's `xray-agent` commands: `lookup` (agent.dose.lookup) and `drl-audit` (publish the DRL audit of a
period now, through the outbox, and keep its figures in the history)."""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.dose.lookup import add_lookup_command


def _month(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a month as YYYY-MM") from None


def cmd_drl_audit(args: argparse.Namespace) -> int:
    from agent.cli import _load_or_exit
    from agent.dose.audit import next_month
    from agent.dose.history import HistoryError
    from agent.dose.monitor import dose_monitor
    from agent.outbox import Outbox, OutboxError
    from agent.sink import Sink
    from agent.topics import Topics

    cfg = _load_or_exit(args.config)
    o = cfg.outbox
    outbox = Outbox(o.path, max_bytes=o.max_bytes, telemetry_max_age_s=o.telemetry_max_age_s,
                    dedupe_days=o.dedupe_days)
    monitor = dose_monitor(cfg, Sink(outbox, Topics(cfg.mqtt.topic_prefix, cfg.site.id, cfg.site.room)))
    if monitor is None:
        print("dose monitoring is disabled in this config (dose.enabled = false)", file=sys.stderr)
        return 1
    zone = ZoneInfo(cfg.site.timezone)
    start = end = None
    if args.month:
        start = datetime.combine(args.month.replace(day=1), time(0, 0), tzinfo=zone)
        end = next_month(start, zone)
    outbox.start()
    monitor.start()
    try:
        audit = monitor.request_audit(start, end)
    except (OutboxError, HistoryError) as exc:
        print(f"DRL audit not stored: {exc}", file=sys.stderr)
        return 1
    finally:
        monitor.stop()
        outbox.stop()
    from agent.dose.readable import audit_lines
    for line in audit_lines(audit.model_dump(mode="json", by_alias=True)):
        print(line)
    return 0


def add_dose_commands(sub, default_config: Path) -> None:
    add_lookup_command(sub, default_config)
    p = sub.add_parser("drl-audit", help="publish the DRL audit (median per examination vs DRL) of this month so far, "
                                         "or of --month, on drl-audit, and print it")
    p.add_argument("--config", type=Path, default=default_config)
    p.add_argument("--month", type=_month, help="a calendar month, YYYY-MM (default: this month so far)")
    p.set_defaults(func=cmd_drl_audit)
