"""The `xray-agent` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent import __version__
from agent.config import Config, ConfigError, check_files, load_config
from agent.qc.cli import add_qc_commands

DEFAULT_CONFIG = Path("/etc/xray-agent/agent.toml")
EXIT_CONFIG = 2  # a config the agent cannot use: fix the file, do not restart in a loop (systemd RestartPreventExitStatus)


def _load_or_exit(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(EXIT_CONFIG)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load_or_exit(args.config)
    errors, warnings = check_files(cfg)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if errors:
        return EXIT_CONFIG
    print(f"{args.config}: OK (site {cfg.site.id}, room {cfg.site.room}, broker {cfg.mqtt.url}, "
          f"outbox {cfg.outbox.path}, config hash {cfg.config_hash})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.daemon import build_agent
    from agent.logs import setup_logging

    cfg = _load_or_exit(args.config)
    setup_logging(args.log_level or cfg.logging.level)
    errors, warnings = check_files(cfg)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if errors:
        for line in errors:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    build_agent(cfg).run()
    return 0


def cmd_outbox_stats(args: argparse.Namespace) -> int:
    from agent.outbox import Outbox, OutboxError

    cfg = _load_or_exit(args.config)
    if not cfg.outbox.path.exists():
        print(f"no outbox at {cfg.outbox.path} yet (the agent creates it on first start)", file=sys.stderr)
        return 1
    try:
        stats = Outbox(cfg.outbox.path, max_bytes=cfg.outbox.max_bytes).stats()
    except (OutboxError, Exception) as exc:  # noqa: BLE001 - report any unreadable file plainly
        print(f"cannot read outbox {cfg.outbox.path}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"depth_by_topic": stats.depth_by_topic, "depth": sum(stats.depth_by_topic.values()),
                          "oldest_age_s": stats.oldest_age_s, "bytes_used": stats.bytes_used,
                          "max_bytes": stats.max_bytes, "counters": stats.counters}))
        return 0
    print(f"outbox {cfg.outbox.path}")
    print(f"  undelivered: {sum(stats.depth_by_topic.values())} messages, {stats.bytes_used} of {stats.max_bytes} "
          f"bytes ({100 * stats.bytes_used / stats.max_bytes:.1f}%)")
    age = "-" if stats.oldest_age_s is None else f"{stats.oldest_age_s:.1f} s"
    print(f"  oldest undelivered: {age}")
    for topic, depth in stats.depth_by_topic.items():
        print(f"  {depth:>8}  {topic}")
    for name, value in sorted(stats.counters.items()):
        print(f"  {name}: {value}")
    if stats.counters.get("refusing"):
        print("  REFUSING exposure-class messages: the outbox is full; check the broker link (xray-agent doctor)")
    return 0


def _ingest_files(paths: list[Path]):
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            yield path


def cmd_ingest(args: argparse.Namespace) -> int:
    """Extract events from files exactly as the agent would, printing the payloads as JSON lines."""
    from agent.dicom.extract import ExtractContext, ExtractionError, extract
    from agent.dicom.reading import read_file
    from agent.payloads.base import utc_now
    from agent.pseudonym import load_secret, throwaway_secret

    if args.config:
        cfg = _load_or_exit(args.config)
        site, room, zone, age_sex = cfg.site.id, cfg.site.room, cfg.site.timezone, cfg.dicom.include_age_sex
        secret = load_secret(cfg.site.secret_key_file)
        patterns = {"not_a_patient": tuple(cfg.dicom.not_a_patient)}
    else:
        patterns = {}
        site, room, zone, age_sex, secret = "local", "local", args.timezone, True, throwaway_secret()
        print("no --config: using a throwaway key, so study_ref/event_ref differ from the agent's", file=sys.stderr)
    files = events = failed = 0
    for path in _ingest_files(args.paths):
        files += 1
        try:
            ds = read_file(path)
            ctx = ExtractContext(site=site, room=room, secret=secret, timezone=zone, include_age_sex=age_sex,
                                 received_at=utc_now(), **patterns)
            extraction = extract(ds, ctx)
            payloads = extraction.payloads()
        except ExtractionError as exc:
            failed += 1
            print(f"{path}: cannot interpret: {exc.reason}", file=sys.stderr)
            continue
        except Exception as exc:  # noqa: BLE001 - unreadable file: say so and go on
            failed += 1
            print(f"{path}: cannot read: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        for payload in payloads:
            sys.stdout.write(payload.to_json_bytes().decode() + "\n")
        events += len(payloads)
        if extraction.not_for_room:
            print(f"{path}: {extraction.not_for_room}", file=sys.stderr)
        elif not payloads:
            print(f"{path}: no exposure recorded in this object (not an image or dose report)", file=sys.stderr)
    print(f"{files} file(s), {events} payload(s), {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_schema(args: argparse.Namespace) -> int:
    from agent.schemas import write_schemas

    written = write_schemas(args.out)
    for path in written:
        print(path)
    return 0


def cmd_new_secret(args: argparse.Namespace) -> int:
    from agent.pseudonym import new_secret_file

    try:
        new_secret_file(args.path)
    except FileExistsError:
        print(f"{args.path} exists; not overwriting a site secret (references would change)", file=sys.stderr)
        return 1
    print(f"wrote a new site secret to {args.path} (mode 0600); use the same file for every room of the site")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check this machine's wiring for the agent; one line per check."""
    from agent.doctor import run_doctor

    return run_doctor(args.config, service_user=args.user)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xray-agent", description="Edge agent for an X-ray room.")
    parser.add_argument("--version", action="version", version=f"xray-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the agent in the foreground (systemd-friendly)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file; exit 2 naming each bad key")
    p.add_argument("config", type=Path, nargs="?", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("doctor", help="check config, serial ports, DICOM port, broker and TLS, clock, disk and "
                                      "secret files; exit 1 when a check fails")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--user", default="xray-agent", help="service user whose permissions count when run as root")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("outbox", help="inspect the durable outbox")
    osub = p.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    s = osub.add_parser("stats", help="depth per topic, oldest undelivered age, bytes used")
    s.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_outbox_stats)

    p = sub.add_parser("ingest", help="print the events the agent would publish for DICOM files (no broker needed)")
    p.add_argument("paths", type=Path, nargs="+", metavar="FILE_OR_FOLDER")
    p.add_argument("--config", type=Path, help="use this config's site, secret and zone (default: a throwaway key)")
    p.add_argument("--timezone", default="UTC", help="zone for times without offset when no --config is given")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("schema", help="write the JSON Schemas of every published payload")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("new-secret", help="create a per-site secret key file for pseudonymous references")
    p.add_argument("path", type=Path)
    p.set_defaults(func=cmd_new_secret)

    add_qc_commands(sub, DEFAULT_CONFIG)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
