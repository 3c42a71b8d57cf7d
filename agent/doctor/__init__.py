"""`xray-agent doctor`: is this room PC wired correctly for the agent? One line per check, what to do when it fails,
exit status 1 when any check fails (2 when the config itself is unusable)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from agent.config import ConfigError, check_files, load_config, secret_files
from agent.doctor.access import ServiceUser
from agent.doctor.report import Result, fail, ok, warn

EXIT_FAILED, EXIT_CONFIG = 1, 2


def _who(service_user: str) -> tuple[ServiceUser, list[Result]]:
    """Whose permissions count: the service user when run as root and it exists, else whoever runs doctor."""
    if os.geteuid() == 0:
        user = ServiceUser.lookup(service_user)
        if user is not None:
            return user, [ok("user", f"checking as service user {user.name} (groups {user.group_names()})")]
        return ServiceUser.current(), [warn("user", f"service user {service_user} does not exist; checking as root",
                                            "scripts/install.sh creates it (in group dialout)")]
    me = ServiceUser.current()
    return me, [warn("user", f"not root: checking as {me.name}, not as service user {service_user}",
                     "run doctor as root (sudo) to check what the service user meets")]


def run_doctor(config_path: Path, service_user: str = "xray-agent", emit: Callable[[str], None] = print) -> int:
    """Run every check, printing each result as it comes; returns the exit status."""
    from agent.doctor.broker import check_broker
    from agent.doctor.local import check_clock, check_port, check_secrets, check_serial, check_state

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            emit(fail("config", line, "fix the file (xray-agent check-config names every bad key)").line())
        return EXIT_CONFIG
    failed = False

    def report(results: list[Result]) -> None:
        nonlocal failed
        for result in results:
            failed |= result.level == "FAIL"
            emit(result.line())

    report([ok("config", f"{config_path} is valid (site {cfg.site.id}, room {cfg.site.room}, hash {cfg.config_hash})")])
    report(_config_file_results(cfg))
    user, results = _who(service_user)
    report(results)
    report(check_secrets(cfg, user))
    report(check_serial(cfg, user))
    if cfg.instruments:
        from agent.doctor.hotplug import check_this_machine
        report([check_this_machine()])
    if cfg.dicom.enabled:
        report([check_port("dicom port", cfg.dicom.bind, cfg.dicom.port, "dicom.port")])
    if cfg.web.enabled:
        report([check_port("web port", cfg.web.bind, cfg.web.port, "web.port")])
    report(check_broker(cfg))
    report([check_clock()])
    report(check_state(cfg, user))
    return EXIT_FAILED if failed else 0


def _config_file_results(cfg) -> list[Result]:
    """check-config's file findings, except those about secret files (their own check covers them)."""
    errors, warnings = check_files(cfg)
    secret_keys = tuple(f"{key}:" for key in secret_files(cfg))
    return ([fail("config", e, "fix the file or the path") for e in errors if not e.startswith(secret_keys)]
            + [warn("config", w) for w in warnings if not w.startswith(secret_keys)])
