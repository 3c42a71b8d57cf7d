"""Can the agent listen where its config says? Checked by `check-config` and before `run` starts anything.

A bind address that is not this machine's, a port another program holds, or a privileged port without the capability
are configuration errors (exit 2, which the systemd unit does not restart on), not crashes at start.
"""

from __future__ import annotations

import errno
import socket

from agent.config import Config


WILDCARDS = {"0.0.0.0", "::", ""}


def listeners(cfg: Config) -> list[tuple[str, str, int]]:
    """(config section, bind address, port) of each enabled listener."""
    found = []
    if cfg.dicom.enabled:
        found.append(("dicom", cfg.dicom.bind, cfg.dicom.port))
    if cfg.web.enabled:
        found.append(("web", cfg.web.bind, cfg.web.port))
    return found


def listen_problems(cfg: Config, *, ports: bool) -> list[str]:
    """One printable line per listener that cannot bind. With `ports=False` only the addresses are checked (port 0):
    `check-config` runs beside a running agent, whose own ports are in use."""
    problems = []
    found = listeners(cfg)
    # Each listener alone can bind, so probing them one by one misses two on one port: at run the second finds it
    # taken by the first. A wildcard address (0.0.0.0, ::) overlaps every address of its family, so count it too.
    for i, (section, host, port) in enumerate(found):
        for other, other_host, other_port in found[:i]:
            if port == other_port and (host == other_host or WILDCARDS & {host, other_host}):
                problems.append(f"{section}.port: {port} is also {other}.port ({other_host}:{other_port}); "
                                f"give {section} and {other} different ports")
    for section, host, port in found:
        problem = _try_bind(host, port if ports else 0)
        if problem is None:
            continue
        kind, text = problem
        key = f"{section}.port" if kind == "port" else f"{section}.bind"
        problems.append(f"{key}: cannot listen on {host}:{port}: {text}")
    return problems


def _try_bind(host: str, port: int) -> tuple[str, str] | None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return "bind", f"not an address of this machine ({exc.strerror})"
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
        try:
            sock.bind(address)
        except OSError as exc:
            return describe_bind_error(exc, port)
    return None


def describe_bind_error(exc: OSError, port: int) -> tuple[str, str]:
    """('bind' | 'port', reason) for an OSError from bind()."""
    if exc.errno == errno.EADDRINUSE:
        return "port", f"port {port} is in use by another program (see: ss -ltnp 'sport = :{port}')"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "bind", "not an address of this machine (use 0.0.0.0 for all, or one of `ip -br addr`)"
    if exc.errno == errno.EACCES:
        return "port", (f"port {port} is below 1024 and needs CAP_NET_BIND_SERVICE (README \"Deployment\"), "
                        "or use a port above 1023")
    return "bind", exc.strerror or str(exc)


BIND_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})
