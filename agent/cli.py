"""The `xray-agent` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from agent import __version__
from agent.config import Config, ConfigError, check_files, load_config
from agent.dose.cli import add_dose_commands
from agent.qc.cli import add_qc_commands

DEFAULT_CONFIG = Path("/etc/xray-agent/agent.toml")
PRIVATE_UMASK = 0o077  # the running agent's files: its user only
EXIT_CONFIG = 2  # a config the agent cannot use: fix the file, do not restart in a loop (systemd RestartPreventExitStatus)
EXIT_RUNNING = 1  # another agent already runs on this outbox
MQTT311_NOTE = ("mqtt.protocol = 3.1.1 cannot tell the agent that the broker denied a publish: an ACL refusal is "
                "acknowledged and dropped, so those messages are lost (only MQTT 5 answers with a reason code and "
                "the agent parks the message); nor does it announce the broker's maximum packet size: a message too "
                "large is found only by the broker closing the connection on it (parked after two tries). Use "
                "protocol = \"5\" where the broker supports it.")


def _load_or_exit(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(EXIT_CONFIG)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load_or_exit(args.config)
    from agent.listeners import listen_problems

    errors, warnings = check_files(cfg)
    errors += listen_problems(cfg, ports=False)  # the ports may be the running agent's own: `run` checks them
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if errors:
        return EXIT_CONFIG
    if cfg.mqtt.protocol == "3.1.1":
        print(f"note: {MQTT311_NOTE}", file=sys.stderr)
    print(f"{args.config}: OK (site {cfg.site.id}, room {cfg.site.room}, broker {cfg.mqtt.url}, "
          f"outbox {cfg.outbox.path}, config hash {cfg.config_hash})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Exit 2 on any configuration error (systemd does not restart on it), 1 when another agent holds the outbox."""
    from agent.daemon import build_agent
    from agent.instance import AlreadyRunning, InstanceLock
    from agent.listeners import BIND_ERRNOS, listen_problems
    from agent.logs import setup_logging

    cfg = _load_or_exit(args.config)
    try:  # before the broker and any port: a second agent must not knock the first off either
        lock = InstanceLock(cfg.outbox.path.parent).acquire()
    except AlreadyRunning as exc:
        print(exc, file=sys.stderr)
        return EXIT_RUNNING
    except OSError as exc:
        print(f"error: outbox.path: cannot use the state folder {cfg.outbox.path.parent}: {exc.strerror}",
              file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(args.log_level or cfg.logging.level)
    errors, warnings = check_files(cfg)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    errors += listen_problems(cfg, ports=True)
    if errors:
        for line in errors:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    os.umask(PRIVATE_UMASK)  # whatever else the agent writes is its own too (state files set their modes anyway)
    try:
        return build_agent(cfg).run()  # 0, or 3 when a service could not be kept running (agent.supervisor)
    except OSError as exc:
        if exc.errno not in BIND_ERRNOS:
            raise
        print(f"error: cannot listen: {exc} (check dicom.bind/port and web.bind/port)", file=sys.stderr)
        return EXIT_CONFIG  # a port taken between the check above and the listener's start
    finally:
        lock.release()


def _open_outbox(cfg: Config):
    from agent.outbox import Outbox

    if not cfg.outbox.path.exists():
        print(f"no outbox at {cfg.outbox.path} yet (the agent creates it on first start)", file=sys.stderr)
        return None
    return Outbox(cfg.outbox.path, max_bytes=cfg.outbox.max_bytes, shares=cfg.outbox.shares.model_dump())


def cmd_outbox_stats(args: argparse.Namespace) -> int:
    cfg = _load_or_exit(args.config)
    box = _open_outbox(cfg)
    if box is None:
        return 1
    try:
        stats, parked = box.stats(), box.parked_messages()
    except Exception as exc:  # noqa: BLE001 - report any unreadable file plainly
        print(f"cannot read outbox {cfg.outbox.path}: {exc}", file=sys.stderr)
        return 1
    if box.damage is not None:
        print(f"outbox {cfg.outbox.path} is damaged ({box.damage}); the agent moves it aside and rebuilds it from its "
              "readable rows at its next check or start", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"depth_by_topic": stats.depth_by_topic, "depth": sum(stats.depth_by_topic.values()),
                          "oldest_age_s": stats.oldest_age_s, "bytes_used": stats.bytes_used,
                          "max_bytes": stats.max_bytes, "counters": stats.counters, "parked": stats.parked_now,
                          "parked_messages": [p._asdict() for p in parked], "share_bytes": stats.share_bytes,
                          "share_max_bytes": stats.share_max_bytes}))
        return 0
    print(f"outbox {cfg.outbox.path}")
    print(f"  undelivered: {sum(stats.depth_by_topic.values())} messages, {stats.bytes_used} of {stats.max_bytes} "
          f"bytes ({100 * stats.bytes_used / stats.max_bytes:.1f}%)")
    age = "-" if stats.oldest_age_s is None else f"{stats.oldest_age_s:.1f} s"
    print(f"  oldest undelivered: {age}")
    for topic, depth in stats.depth_by_topic.items():
        print(f"  {depth:>8}  {topic}")
    for name, bound in stats.share_max_bytes.items():
        print(f"  share {name}: {stats.share_bytes.get(name, 0)} of {bound} bytes")
    for name, value in sorted(stats.counters.items()):
        print(f"  {name}: {value}")
    refusing = sorted(n.removeprefix("refusing:") or "all" for n, v in stats.counters.items()
                      if n.startswith("refusing:") and v)
    if refusing:
        print(f"  REFUSING {', '.join(refusing)} messages: no room left in their share of the outbox; check the broker "
              "link (xray-agent doctor)")
    if stats.parked_now:
        print(f"  PARKED: {stats.parked_now} messages the broker would not take (oldest first):")
        for p in parked:
            print(f"    {p.msg_id}  {p.topic}  {p.size_bytes} bytes: {p.reason}")
        print("  fix the broker (ACL, max_packet_size), then run: xray-agent outbox retry")
    return 0


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    """Put parked messages back into the delivery order; the running agent sends them within a second."""
    cfg = _load_or_exit(args.config)
    box = _open_outbox(cfg)
    if box is None:
        return 1
    try:
        box.start()
        try:
            released = box.retry_parked()
        finally:
            box.stop()
    except Exception as exc:  # noqa: BLE001 - an unwritable file: say so plainly
        print(f"cannot update outbox {cfg.outbox.path}: {exc}", file=sys.stderr)
        return 1
    print(f"{released} parked message(s) put back into the delivery order")
    return 0


def _ingest_files(paths: list[Path]):
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            yield path


def cmd_ingest(args: argparse.Namespace) -> int:
    """Run files through the agent's own intake (agent.dicom.dryrun), printing what it would publish as JSON lines."""
    import logging

    from agent.config import DicomConfig
    from agent.dicom.dryrun import DEFAULT_MAX_OBJECT_BYTES, dry_run
    from agent.dose.config import DoseConfig
    from agent.privacy.config import PrivacyConfig
    from agent.pseudonym import load_secret, throwaway_secret

    if args.config:
        cfg = _load_or_exit(args.config)
        site, room, zone, age_sex = cfg.site.id, cfg.site.room, cfg.site.timezone, cfg.dicom.include_age_sex
        try:
            secret = load_secret(cfg.site.secret_key_file)
        except ValueError as exc:  # SecretFileError or a too short secret: the message names the key
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        dose_cfg, privacy, max_object_bytes = cfg.dose, cfg.privacy, cfg.dicom.max_object_bytes
        not_a_patient = tuple(cfg.dicom.not_a_patient)
    else:
        patterns = {}
        site, room, zone, age_sex, secret = "local", "local", args.timezone, True, throwaway_secret()
        dose_cfg = DoseConfig()  # the agent's defaults: built-in DI bands and NCRP 168 levels, no DRLs
        privacy, max_object_bytes = PrivacyConfig(), DEFAULT_MAX_OBJECT_BYTES
        not_a_patient = tuple(DicomConfig().not_a_patient)
        print("no --config: using a throwaway key, so study_ref/event_ref differ from the agent's", file=sys.stderr)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    printed = []

    def publish(payload) -> None:
        printed.append(payload)
        sys.stdout.write(payload.to_json_bytes().decode() + "\n")

    outcomes = dry_run(_ingest_files(args.paths), site=site, room=room, secret=secret, timezone=zone,
                       include_age_sex=age_sex, dose_cfg=dose_cfg, published=publish, privacy=privacy,
                       max_object_bytes=max_object_bytes, not_a_patient=not_a_patient)
    for outcome in outcomes:
        if outcome.failed:
            print(f"{outcome.path}: cannot interpret ({outcome.describe()})", file=sys.stderr)
    failed = sum(outcome.failed for outcome in outcomes)
    print(f"{len(outcomes)} file(s), {len(printed)} payload(s), {failed} failed", file=sys.stderr)
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


def cmd_new_token(args: argparse.Namespace) -> int:
    from agent.web.credential import new_token_file

    try:
        new_token_file(args.path)
    except FileExistsError:
        print(f"{args.path} exists; not overwriting a room token (browsers and scrapers use it)", file=sys.stderr)
        return 1
    print(f"wrote a new room access token to {args.path} (mode 0600); set web.token_file to it, and let the agent's "
          f"group read it: chown root:xray-agent {args.path} && chmod 0640 {args.path}")
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
    s = osub.add_parser("retry", help="send the parked messages (refused by the broker or too large) again")
    s.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    s.set_defaults(func=cmd_outbox_retry)

    p = sub.add_parser("ingest", help="print the events the agent would publish for DICOM files (no broker needed)")
    p.add_argument("paths", type=Path, nargs="+", metavar="FILE_OR_FOLDER")
    p.add_argument("--config", type=Path, help="use this config's site, secret, zone and dose rules (default: a "
                                               "throwaway key and the built-in dose rules)")
    p.add_argument("--timezone", default="UTC", help="zone for times without offset when no --config is given")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("schema", help="write the JSON Schemas of every published payload")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("new-secret", help="create a per-site secret key file for pseudonymous references")
    p.add_argument("path", type=Path)
    p.set_defaults(func=cmd_new_secret)

    p = sub.add_parser("new-token", help="create a room access token file for the web page and API (web.token_file)")
    p.add_argument("path", type=Path)
    p.set_defaults(func=cmd_new_token)

    add_qc_commands(sub, DEFAULT_CONFIG)
    add_dose_commands(sub, DEFAULT_CONFIG)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
