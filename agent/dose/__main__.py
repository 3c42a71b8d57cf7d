"""Dose monitoring tools, run beside (or without) the agent:

    python -m agent.dose summary --config /etc/xray-agent/agent.toml   # publish the day so far, print it as JSON
    python -m agent.dose check-rules config/dose-rules.example.toml     # validate a rules file, list its rules

`summary` reads the agent's dose history (as the agent last committed it, about a second behind at most) and stores
the summary in the agent's outbox (SQLite lets both processes use the files at once); the running agent publishes it
within a second, or when it next starts. It is the same path the
command topic will use in-process (DoseMonitor.request_summary).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.config import ConfigError, load_config

DEFAULT_CONFIG = Path("/etc/xray-agent/agent.toml")


def cmd_summary(args: argparse.Namespace) -> int:
    from agent.dose.monitor import dose_monitor
    from agent.outbox import Outbox, OutboxError
    from agent.sink import Sink
    from agent.topics import Topics

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    o = cfg.outbox
    outbox = Outbox(o.path, max_bytes=o.max_bytes, telemetry_max_age_s=o.telemetry_max_age_s,
                    dedupe_days=o.dedupe_days, shares=o.shares.model_dump())
    monitor = dose_monitor(cfg, Sink(outbox, Topics(cfg.mqtt.topic_prefix, cfg.site.id, cfg.site.room)))
    if monitor is None:
        print("dose monitoring is disabled in this config (dose.enabled = false)", file=sys.stderr)
        return 1
    outbox.start()
    monitor.start()
    try:
        summary = monitor.request_summary()
    except OutboxError as exc:
        print(f"summary not stored: {exc}", file=sys.stderr)
        return 1
    finally:
        monitor.stop()
        outbox.stop()
    print(summary.to_json_bytes().decode())
    return 0


def cmd_check_rules(args: argparse.Namespace) -> int:
    from agent.dose.rules import load_rules

    try:
        rules = load_rules(args.rules)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    for rule in rules.notification_level:
        band = f" band {rule.band}" if rule.banded else ""
        levels = ", ".join(f"{name} {value:g}" for name, value in (("DAP Gy·cm²", rule.dap_gy_cm2),
                                                                    ("ESD mGy", rule.entrance_dose_mgy)) if value)
        print(f"notification level {rule.id}:{band} {levels}")
    for rule in rules.diagnostic_reference_level:
        band = f" band {rule.band}" if rule.banded else ""
        print(f"DRL {rule.id} ({rule.exam_name}):{band} median DAP per examination {rule.dap_gy_cm2:g} Gy·cm²")
    print(f"DRL audit: {rules.audit.period}, at least {rules.audit.min_examinations} examinations")
    for t in rules.cumulative:
        step = f", then every {t.every:g}" if t.every else ""
        plane = "" if t.plane == "total" else f" (plane {t.plane})"
        print(f"cumulative {t.id}: {t.quantity} > {t.level:g}{step}{plane}")
    for t in rules.patient_cumulative:
        print(f"patient {t.id}: {t.quantity} > {t.level:g} over {t.window_days} days")
    b = rules.deviation_index
    print(f"deviation index: excessive > {b.excessive_above:g}, over > {b.over_above:g}, under < {b.under_below:g}, "
          f"excessively under < {b.excessively_under_below:g}; alerts: {', '.join(b.alert) or 'none'}")
    print(f"repeats: {', '.join(rules.repeats.key)} within {rules.repeats.window_s:g} s "
          f"({', '.join(rules.repeats.modalities)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.dose", description="Dose monitoring tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("summary", help="publish the room summary of the day so far (through the outbox)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_summary)
    p = sub.add_parser("check-rules", help="validate a dose rules file and list its rules")
    p.add_argument("rules", type=Path)
    p.set_defaults(func=cmd_check_rules)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
