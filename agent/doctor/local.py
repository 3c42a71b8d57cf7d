"""Checks of this machine: secret files, serial ports, listening ports, state folder and disk, clock."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
from pathlib import Path

import psutil

from agent.config import Config, secret_files
from agent.doctor.access import ServiceUser, can_access, describe_node, reachable
from agent.doctor.report import Result, fail, ok, warn
from agent.health.clock import clock_state
from agent.health.host import existing_parent
from agent.secretfile import SecretFileError, check_secret_file

# Device groups the unit's DevicePolicy=closed lets through (systemd/xray-agent.service, DeviceAllow=char-...).
UNIT_DEVICE_GROUPS = ("ttyUSB", "ttyACM", "ttyS", "ttyAMA")
DROPIN_DIR = Path("/etc/systemd/system/xray-agent.service.d")
MIB = 1024 * 1024


def check_secrets(cfg: Config, user: ServiceUser) -> list[Result]:
    """Each secret file exists, is private, and the service user can read it."""
    results = []
    for key, path in secret_files(cfg).items():
        name = f"secret {key}"
        try:
            check_secret_file(key, path)
        except SecretFileError as exc:
            missing = not os.path.lexists(path)
            hint = ({"site.secret_key_file": f"xray-agent new-secret {path}",
                     "web.token_file": f"xray-agent new-token {path}"}.get(key, f"create {path}") if missing
                    else f"point {key} at a regular file of at most 4 KiB holding the secret")
            results.append(fail(name, str(exc).removeprefix(f"{key}: "), hint))
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o007:
            results.append(fail(name, f"{path} is accessible by other users ({describe_node(path)})",
                                f"chmod 0600 {path} (0640 if owned by root:{user.name})"))
        elif not (reachable(path, user) and can_access(path, user)):
            results.append(fail(name, f"user {user.name} cannot read {path} ({describe_node(path)})",
                                f"chown {user.name} {path}, and let {user.name} search {path.parent}"))
        else:
            results.append(ok(name, f"{path} private ({describe_node(path)}), readable by {user.name}"))
    return results


def device_groups(device: str) -> list[str]:
    """The names /proc/devices gives the device's major number (ttyUSB, ttyACM, pts...): systemd's DeviceAllow=char-NAME
    allows by major number, and one major may carry several names (4: tty and ttyS)."""
    try:
        major = os.major(os.stat(device).st_rdev)
        lines = Path("/proc/devices").read_text().split("Block devices:")[0].splitlines()
    except OSError:
        return []
    return [parts[1] for parts in map(str.split, lines)
            if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) == major]


def check_serial(cfg: Config, user: ServiceUser) -> list[Result]:
    """Each instrument's port is present, a character device, readable and writable by the service user, and of a
    kind the unit's device policy lets through."""
    return [_check_instrument_port(f"serial {inst.id}", inst.port, user) for inst in cfg.instruments]


def _check_instrument_port(name: str, selector: str, user: ServiceUser) -> Result:
    from drivers.ports import find_port  # pyserial's port list, only when instruments exist

    plug = "plug the adapter in; list ports with: ls -l /dev/serial/by-id/"
    try:
        device = os.path.realpath(find_port(selector))
    except LookupError as exc:
        return fail(name, str(exc), plug)
    if not os.path.exists(device):
        return fail(name, f"{selector} is not present", plug)
    if not stat.S_ISCHR(os.stat(device).st_mode):
        return fail(name, f"{device} is not a character device", "point port at the serial device")
    if not can_access(Path(device), user, read=True, write=True):
        return fail(name, f"user {user.name} (groups {user.group_names()}) cannot open {device} "
                          f"({describe_node(Path(device))})",
                    f"usermod -aG {_group_of(device)} {user.name}, or a udev rule giving the port to group dialout")
    groups = device_groups(device)
    if not set(groups) & set(UNIT_DEVICE_GROUPS):
        kind = groups[0] if groups else "unknown"
        return warn(name, f"{device} ({kind}) is usable by {user.name}, but the systemd unit only allows "
                          f"{', '.join(UNIT_DEVICE_GROUPS)}",
                    f"add 'DeviceAllow=char-{kind} rw' in a drop-in: systemctl edit xray-agent")
    return ok(name, f"{selector} -> {device} ({describe_node(Path(device))}), usable by {user.name}")


def _group_of(device: str) -> str:
    import grp
    try:
        return grp.getgrgid(os.stat(device).st_gid).gr_name
    except KeyError:
        return str(os.stat(device).st_gid)


def _listener_process(port: int) -> psutil.Process | None:
    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    except (psutil.Error, OSError):
        pass
    return None


def is_agent(process: psutil.Process) -> bool:
    """True for an `xray-agent run` process (installed script or `python -m agent run`)."""
    try:
        args = process.cmdline()
    except psutil.Error:
        return False
    starts = [i for i, a in enumerate(args) if a.endswith("xray-agent") or (a == "agent" and args[i - 1] == "-m")]
    return any("run" in args[i + 1:] for i in starts)


def check_port(name: str, bind: str, port: int, key: str) -> Result:
    """The port is free, or held by the running agent."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listeners do: TIME_WAIT is no conflict
        try:
            sock.bind((bind, port))
        except OSError as exc:
            return _port_taken(name, bind, port, key, exc)
    return _privileged(name, port) or ok(name, f"{bind}:{port} is free")


def _port_taken(name: str, bind: str, port: int, key: str, exc: OSError) -> Result:
    if exc.errno == errno.EADDRINUSE:
        owner = _listener_process(port)
        if owner is not None and is_agent(owner):
            return ok(name, f"{bind}:{port} is bound by the running agent (pid {owner.pid})")
        who = f"{owner.name()} (pid {owner.pid})" if owner is not None else "another program"
        return fail(name, f"{bind}:{port} is in use by {who}", f"stop it, or choose another {key}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return fail(name, f"{bind} is not an address of this machine", f"set {key.rsplit('.', 1)[0]}.bind to one "
                                                                       "of its addresses or 0.0.0.0")
    if exc.errno == errno.EACCES:
        return fail(name, f"port {port} needs privileges to bind", "run doctor as root, and see README "
                                                                   "'Deployment' for port 104")
    return fail(name, f"cannot bind {bind}:{port}: {exc.strerror}", f"check {key}")


def _privileged(name: str, port: int) -> Result | None:
    try:
        first_free = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        first_free = 1024
    if port >= first_free:
        return None
    granted = any("CAP_NET_BIND_SERVICE" in f.read_text() and "AmbientCapabilities" in f.read_text()
                  for f in sorted(DROPIN_DIR.glob("*.conf")))
    if granted:
        return ok(name, f"port {port} is free; the unit's drop-in grants CAP_NET_BIND_SERVICE")
    return warn(name, f"port {port} is free but below {first_free}: the service user cannot bind it",
                "add AmbientCapabilities=CAP_NET_BIND_SERVICE in a drop-in (README 'Deployment', port 104)")


def check_state(cfg: Config, user: ServiceUser) -> list[Result]:
    """The outbox's folder is writable by the service user and its disk above the readiness floor."""
    folder = cfg.outbox.path.parent
    results = []
    if not folder.is_dir():
        results.append(warn("state", f"{folder} does not exist yet", "systemd creates /var/lib/xray-agent "
                            "(StateDirectory); for another path run: install -d -o xray-agent " + str(folder)))
    elif not (reachable(folder, user) and can_access(folder, user, write=True, search=True)):
        results.append(fail("state", f"user {user.name} cannot write {folder} ({describe_node(folder)})",
                            f"chown {user.name}: {folder}"))
    else:
        results.append(ok("state", f"{folder} writable by {user.name}"))
    floor = cfg.health.disk_floor_mib * MIB
    free = shutil.disk_usage(existing_parent(folder)).free
    detail = f"{free // MIB} MiB free for {folder} (health.disk_floor_mib {floor // MIB})"
    if free < floor:
        results.append(fail("disk", detail, "free some space; /readyz fails below the floor"))
    elif free < 2 * floor:
        results.append(warn("disk", detail, "free some space soon"))
    else:
        results.append(ok("disk", detail))
    return results


def check_clock() -> Result:
    """The system clock is NTP-synchronised."""
    state = clock_state(max_age_s=0)
    if state.sync == "synchronized":
        return ok("clock", f"synchronised (from {state.source})")
    fix = "enable NTP: timedatectl set-ntp true, or point chrony at the hospital's NTP server"
    if state.sync == "unsynchronized":
        return warn("clock", f"not synchronised (from {state.source}): message times may drift", fix)
    return warn("clock", "synchronisation state unknown (neither adjtimex nor timedatectl answered)", fix)
