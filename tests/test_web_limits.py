"""Connection limits of the real agent's web server, with real sockets on loopback: 150 unfinished requests do not make
/livez, /readyz, /metrics or /qc unreachable; a request trickled byte by byte is cut at web.request_timeout_s; bodies
and headers beyond the bounds are refused. Every loop here is bounded and every socket closed."""

from __future__ import annotations

import select
import socket
import time
import tomllib
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.integration

SLOW_CLIENTS = 150
TIMEOUT_S = 3  # web.request_timeout_s for this test


def port_of(agent) -> int:
    return tomllib.loads(agent.config.read_text())["web"]["port"]


def status(port: int, path: str, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def unfinished(port: int) -> socket.socket:
    """A connection that sent half a request and waits."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"GET /livez HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode())
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (BlockingIOError, socket.timeout):
        return False


def raw_status(port: int, head: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        return sock.recv(4096).split(b"\r\n", 1)[0].decode()


def test_unfinished_requests_do_not_block_the_endpoints(broker, agent_factory):
    agent = agent_factory(broker.port, web={"request_timeout_s": TIMEOUT_S})
    port = port_of(agent)
    deadline = time.monotonic() + 20
    while status(port, "/livez") != 200:
        assert time.monotonic() < deadline, "the agent's /livez never answered"
        time.sleep(0.1)
    slow: list[socket.socket] = []
    try:
        for _ in range(SLOW_CLIENTS):
            slow.append(unfinished(port))
        latencies = {}
        for path in ("/livez", "/readyz", "/metrics", "/qc"):
            started = time.monotonic()
            code = status(port, path)
            latencies[path] = time.monotonic() - started
            assert code in ((200, 503) if path == "/readyz" else (200,)), (path, code)
        assert max(latencies.values()) < 3, latencies
        # The unfinished requests are closed by the server once web.request_timeout_s has passed.
        waited_until = time.monotonic() + TIMEOUT_S + 5
        open_socks = list(slow)
        while open_socks and time.monotonic() < waited_until:
            readable, _, _ = select.select(open_socks, [], [], 0.5)
            for sock in readable:
                sock.setblocking(False)
                if closed_by_server(sock):
                    open_socks.remove(sock)
        assert not open_socks, f"{len(open_socks)} unfinished requests still open after {TIMEOUT_S + 5} s"
        assert status(port, "/livez") == 200
    finally:
        for sock in slow:
            sock.close()


def test_trickled_request_is_cut_and_big_bodies_and_headers_are_refused(broker, agent_factory):
    agent = agent_factory(broker.port, web={"request_timeout_s": TIMEOUT_S, "max_body_bytes": 4096})
    port = port_of(agent)
    deadline = time.monotonic() + 20
    while status(port, "/livez") != 200:
        assert time.monotonic() < deadline, "the agent's /livez never answered"
        time.sleep(0.1)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET /livez HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
        started, cut = time.monotonic(), None
        for _ in range(int((TIMEOUT_S + 5) / 0.3)):  # one header byte every 0.3 s: never idle, never complete
            try:
                sock.sendall(b"X")
            except OSError:
                cut = time.monotonic() - started
                break
            sock.setblocking(False)
            if closed_by_server(sock):
                cut = time.monotonic() - started
                break
            sock.setblocking(True)
            time.sleep(0.3)
        assert cut is not None and cut < TIMEOUT_S + 2.5, f"a trickled request stayed open ({cut})"
    big_body = raw_status(port, f"POST /api/qc/sessions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                                f"Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{{".encode())
    assert big_body.split(" ")[1] == "413", big_body
    big_head = raw_status(port, f"GET /livez HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Big: {'a' * 20000}\r\n\r\n"
                          .encode())
    assert big_head.split(" ")[1] in ("431", "400"), big_head
    assert status(port, "/livez") == 200
