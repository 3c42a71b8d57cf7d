"""Serves the web app with waitress in one thread, as a supervised service (start/stop/alive)."""

from __future__ import annotations

import logging
import threading

from waitress import wasyncore

from agent.web.bounded import create_bounded_server

log = logging.getLogger(__name__)

THREADS = 2  # a probe, a scrape and a person at the QC page at once is the most a room sees
STOP_JOIN_S = 3.0


class WebService:
    """Binds in start() (so a port in use fails the start, loudly) and serves until stop()."""

    def __init__(self, app, bind: str, port: int, max_connections: int = 64, request_timeout_s: int = 10,
                 max_body_bytes: int = 65536) -> None:
        """app: a WSGI app (agent.web.create_app); the bounds as in [web] (agent.web.bounded)."""
        self.app, self.bind, self.port = app, bind, port
        self.limits = {"max_connections": max_connections, "request_timeout_s": request_timeout_s,
                       "max_body_bytes": max_body_bytes}
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the socket and serve in a thread."""
        self._server = create_bounded_server(self.app, host=self.bind, port=self.port, threads=THREADS,
                                             **self.limits)
        self.port = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._serve, args=(self._server,), name="web", daemon=True)
        self._thread.start()
        log.info("health endpoints on http://%s:%d/ (livez, readyz, metrics)", self.bind, self.port)

    def _serve(self, server) -> None:
        try:
            server.run()
        except OSError:
            if self._server is server:  # a socket closed under the loop by stop() is expected; anything else is not
                raise

    def stop(self) -> None:
        """Close the listening socket and every connection, then stop the worker threads."""
        server, self._server = self._server, None
        if server is None:
            return
        # waitress's loop runs while its socket map is not empty: emptying it (as waitress's own close does for
        # several sockets) ends the loop within its 1 s poll timeout.
        server.task_dispatcher.shutdown()
        wasyncore.close_all(server._map, ignore_all=True)
        if self._thread is not None:
            self._thread.join(STOP_JOIN_S)
            self._thread = None

    def alive(self) -> bool:
        """True while the server thread runs (it holds the listening socket)."""
        return self._thread is not None and self._thread.is_alive()
