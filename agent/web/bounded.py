"""Waitress with bounds that keep /livez answering under many slow or unfinished requests.

Waitress alone stops accepting at `connection_limit` and closes a connection only after `channel_timeout` seconds of
silence, so 150 clients each sending half a request (or one byte every few seconds) take every slot and every probe
waits. Here:

- a request must arrive complete within `request_timeout_s` of its first byte, however it trickles (the parser
  records when it started; the server's maintenance, run every second, closes late ones);
- an idle keep-alive connection is closed after `request_timeout_s` (waitress's channel_timeout);
- past `max_connections` the server keeps accepting: each new connection closes the connection that has waited
  longest without a complete request (never one whose request is being answered), so a probe still gets in;
- bodies above `max_body_bytes` and headers above MAX_HEADER_BYTES are answered 413/431 by waitress.
"""

from __future__ import annotations

import time

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer

MAX_HEADER_BYTES = 16 * 1024
CLEANUP_INTERVAL_S = 1
HEADROOM = 8  # waitress's own limit sits above ours, so eviction acts first


class _TimedParser(HTTPRequestParser):
    """A request parser that remembers when its first byte came."""

    def __init__(self, adj) -> None:
        super().__init__(adj)
        self.started = time.time()


class _BoundedChannel(HTTPChannel):
    parser_class = _TimedParser

    def waiting_since(self) -> float | None:
        """Since when this connection waits without a complete request (None: a request is being answered)."""
        if self.requests:
            return None
        return self.request.started if self.request is not None else self.last_activity


class BoundedServer(TcpWSGIServer):
    """TcpWSGIServer with the per-request deadline and eviction above; `max_connections` and `request_timeout_s`
    are keyword arguments next to waitress's own."""

    channel_class = _BoundedChannel

    def __init__(self, application, *, max_connections: int, request_timeout_s: int, **kw) -> None:
        self.max_connections, self.request_timeout_s = max_connections, request_timeout_s
        self.closed_late = self.evicted = 0
        super().__init__(application, connection_limit=max_connections + HEADROOM, channel_timeout=request_timeout_s,
                         cleanup_interval=CLEANUP_INTERVAL_S, max_request_header_size=MAX_HEADER_BYTES, **kw)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle connections past channel_timeout
        cutoff = now - self.request_timeout_s
        for channel in list(self.active_channels.values()):
            parser = channel.request
            if parser is not None and not channel.requests and parser.started < cutoff and not channel.will_close:
                channel.will_close = True
                self.closed_late += 1

    def handle_accept(self) -> None:
        if len(self.active_channels) >= self.max_connections:
            self._evict_one()
        super().handle_accept()

    def _evict_one(self) -> None:
        waiting = [(since, channel) for channel in list(self.active_channels.values())
                   if not channel.will_close and (since := channel.waiting_since()) is not None]
        if waiting:
            _since, channel = min(waiting, key=lambda item: item[0])
            channel.will_close = True
            channel.handle_close()  # now, not at the next loop turn: its slot goes to the new connection
            self.evicted += 1


def create_bounded_server(app, *, host: str, port: int, threads: int, max_connections: int, request_timeout_s: int,
                          max_body_bytes: int) -> BoundedServer:
    """A bound, listening BoundedServer (call .run() to serve)."""
    return BoundedServer(app, host=host, port=port, threads=threads, ident="xray-agent",
                         clear_untrusted_proxy_headers=True, max_connections=max_connections,
                         request_timeout_s=request_timeout_s, max_request_body_size=max_body_bytes)
