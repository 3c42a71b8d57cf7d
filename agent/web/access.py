"""Who may use the web server and how: the Host check, sign-in sessions, the same-origin and CSRF checks.

Every request, in this order (`Access.check`, a `before_request` hook):

1. Host. The Host header must name this server: a loopback name or address (localhost, 127.0.0.0/8, ::1) or one of
   `web.public_names`, with the server's port. Anything else is answered 421 Misdirected Request (RFC 9110 section
   15.5.20): a page on another web site whose name was re-pointed at 127.0.0.1 (DNS rebinding) sends its own name.
2. Who. `Authorization: Bearer` with the room token (web.token_file) or the local CLI credential (agent.web.credential)
   is a script; a valid session cookie is a browser that signed in with the room token at /login; a request from this
   machine (loopback source) naming a loopback host is the room PC itself, which needs no sign-in. Anyone else is sent
   to /login (pages) or answered 401 (API, health).
3. Writes. A state-changing request (anything but GET/HEAD/OPTIONS) from a browser (session or room PC) must come from
   a page of this server (Origin, else Sec-Fetch-Site, else Referer) and carry the page's CSRF token (header
   X-CSRF-Token or form field csrf_token), from loopback too; 403 otherwise. A Bearer request needs neither: a browser
   cannot add that header to a cross-site request without a CORS preflight, which this server never grants.

The session cookie is HttpOnly, SameSite=Strict, and Secure when the request came over TLS. Sessions live in memory:
a restart signs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from collections import Counter
from typing import Iterable
from urllib.parse import quote, urlsplit

from flask import Response, g, jsonify, redirect, request
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

SESSION_COOKIE = "xray_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SESSION_IDLE_S = 12 * 3600  # a shift; a browser left signed in overnight signs in again
SESSIONS_MAX = 64  # sign-ins held at once; the least recently used goes first
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_PATHS = ("/login", "/qc/static/")  # the sign-in form and its style sheet
REFUSALS = ("host", "auth", "origin", "csrf", "login", "login-limit")
# Wrong sign-ins per source address: after LOGIN_FAILURES_MAX in LOGIN_WINDOW_S, that address is answered 429 until
# the window ends. The room token is at least 32 characters (web.token_file), so guessing is hopeless anyway; the
# limit keeps a guessing script from costing CPU and filling the refusal counter, and does not lock out other
# addresses (the physicist's browser). At most LOGIN_SOURCES_MAX addresses are tracked: the oldest window goes first.
LOGIN_FAILURES_MAX = 10
LOGIN_WINDOW_S = 60.0
LOGIN_SOURCES_MAX = 1024


def _host_name(host: str) -> tuple[str, int | None] | None:
    """('name', port) of a Host header value (lower case, no brackets, no trailing dot), None when malformed."""
    try:
        parts = urlsplit(f"//{host}")
        return (parts.hostname or "").rstrip("."), parts.port
    except ValueError:
        return None


def _is_loopback_name(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Access:
    """The rules above for one app. token: the room token (None: only this machine may use the server);
    cli_token: the local CLI credential (None: none written)."""

    def __init__(self, token: str | None, cli_token: str | None = None, public_names: Iterable[str] = (),
                 clock=time.monotonic) -> None:
        self.token, self.cli_token = token, cli_token
        self.public_names = frozenset(n.lower().strip("[]").rstrip(".") for n in public_names)
        self._key = secrets.token_bytes(32)  # CSRF tokens are valid for this process's life only
        self._sessions: dict[str, float] = {}  # session id -> last use (clock)
        self._lock = threading.Lock()
        self._clock = clock
        self.refused: Counter[str] = Counter()
        self._failures: dict[str, tuple[float, int]] = {}  # source address -> (window end, wrong sign-ins)

    # ---- the hook ----------------------------------------------------------------------------------------------------
    def check(self) -> Response | tuple | None:
        """Flask before_request: None to go on, or the refusal."""
        where = self.host_kind(request.host, request.environ.get("SERVER_PORT"))
        if where is None:
            return self._refuse("host", 421, "this server is not reached by that name: use the address of the room "
                                             "PC listed in web.public_names (or 127.0.0.1 on the room PC itself)")
        g.xray_principal = None
        if request.path == "/login" or request.path.startswith(OPEN_PATHS[1]):
            return None
        principal = self._principal(where)
        if principal is None:
            if request.headers.get("Authorization"):
                return self._refuse("auth", 401, "wrong access token: send 'Authorization: Bearer TOKEN' with the "
                                                 "contents of web.token_file")
            if self._wants_page():
                self.refused["auth"] += 1
                # the path as requested, percent-encoded: a decoded CR/LF or space must not reach the header
                target = quote(request.full_path.rstrip("?"), safe="/?&=%:@!$'()*+,;~-._")
                return redirect(f"/login?next={quote(target, safe='/')}", 303)
            return self._refuse("auth", 401, "sign in at /login, or send 'Authorization: Bearer TOKEN' with the "
                                             "contents of web.token_file")
        g.xray_principal = principal
        if request.method not in SAFE_METHODS and principal != "bearer":
            if not self.same_origin():
                return self._refuse("origin", 403, "cross-origin write refused: use the page of this server")
            if not self.csrf_ok(request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)):
                return self._refuse("csrf", 403, "missing or stale CSRF token: reload the page and try again")
        return None

    def host_kind(self, host: str | None, server_port: str | None) -> str | None:
        """'loopback' or 'public' for a Host header naming this server, None otherwise. The port must be the
        server's (a browser omits it only for the scheme's default port)."""
        parsed = _host_name(host or "")
        if parsed is None or not parsed[0]:
            return None
        name, port = parsed
        default = 443 if request.scheme == "https" else 80
        if server_port and str(port or default) != str(server_port):
            return None
        if name in self.public_names:
            return "public"
        return "loopback" if _is_loopback_name(name) else None

    def _principal(self, where: str) -> str | None:
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, given = header.partition(" ")
            given = given.strip().encode()
            ok = scheme.lower() == "bearer" and any(
                t and hmac.compare_digest(given, t.encode()) for t in (self.token, self.cli_token))
            return "bearer" if ok else None
        if self.session_valid(request.cookies.get(SESSION_COOKIE)):
            return "session"
        if self._loopback_source() and (where == "loopback" or self.token is None):
            return "local"
        return None

    @staticmethod
    def _loopback_source() -> bool:
        try:
            return ipaddress.ip_address(request.remote_addr or "").is_loopback
        except ValueError:
            return False

    @staticmethod
    def _wants_page() -> bool:
        return request.method == "GET" and request.accept_mimetypes.accept_html and not request.path.startswith(
            "/api/")

    def _refuse(self, reason: str, status: int, message: str):
        self.refused[reason] += 1
        if self.refused[reason] == 1:  # the first of each kind is logged; all are counted in /metrics
            log.warning("web request refused (%s, %d): %s %s from %s; further refusals are only counted "
                        "(xray_agent_web_refused_total)", reason, status, request.method, request.path,
                        request.remote_addr)
        return jsonify(error=message), status

    # ---- origin and CSRF ---------------------------------------------------------------------------------------------
    @staticmethod
    def same_origin() -> bool:
        """The request was made by a page of this server: Origin, else Sec-Fetch-Site, else Referer."""
        expected = f"{request.scheme}://{request.host}".lower()
        origin = request.headers.get("Origin")
        if origin is not None:
            return origin.lower() == expected
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None:
            return site == "same-origin"
        referer = urlsplit(request.headers.get("Referer", ""))
        return bool(referer.netloc) and f"{referer.scheme}://{referer.netloc}".lower() == expected

    def csrf_token(self, purpose: str | None = None) -> str:
        """The token pages embed: bound to the session (or to 'local' for the room PC, 'login' for the form)."""
        if purpose is None:
            session = g.get("xray_principal") == "session"
            purpose = f"session\x1f{request.cookies.get(SESSION_COOKIE)}" if session else "local"
        return hmac.new(self._key, f"csrf\x1f{purpose}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, given: str | None, purpose: str | None = None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.csrf_token(purpose).encode())

    # ---- sessions ----------------------------------------------------------------------------------------------------
    def login_retry_after(self, source: str | None) -> int:
        """Seconds until `source` may try to sign in again (0: now)."""
        with self._lock:
            end, count = self._failures.get(source or "", (0.0, 0))
            left = end - self._clock()
            if left <= 0 or count < LOGIN_FAILURES_MAX:
                return 0
        self.refused["login-limit"] += 1
        return max(1, int(left + 0.999))

    def _failed(self, source: str | None) -> None:
        now = self._clock()
        with self._lock:
            end, count = self._failures.get(source or "", (0.0, 0))
            if end <= now:
                end, count = now + LOGIN_WINDOW_S, 0
            self._failures[source or ""] = (end, count + 1)
            if len(self._failures) > LOGIN_SOURCES_MAX:
                del self._failures[min(self._failures, key=lambda a: self._failures[a][0])]

    def sign_in(self, given: str, source: str | None = None) -> str | None:
        """A new session id when `given` is the room token, else None (counted against `source`, the address)."""
        if not self.token or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            self.refused["login"] += 1
            self._failed(source)
            return None
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._expire()
            while len(self._sessions) >= SESSIONS_MAX:
                del self._sessions[min(self._sessions, key=self._sessions.get)]
            self._sessions[sid] = self._clock()
        return sid

    def sign_out(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)

    def session_valid(self, sid: str | None) -> bool:
        if not sid:
            return False
        with self._lock:
            self._expire()
            if sid not in self._sessions:
                return False
            self._sessions[sid] = self._clock()
            return True

    def _expire(self) -> None:
        cutoff = self._clock() - SESSION_IDLE_S
        for sid in [s for s, seen in self._sessions.items() if seen < cutoff]:
            del self._sessions[sid]

    # ---- metrics -----------------------------------------------------------------------------------------------------
    def collector(self) -> Collector:
        """`xray_agent_web_refused_total{reason}`: requests refused by host, auth, origin, csrf, a wrong sign-in
        (login) or a source over the sign-in limit (login-limit)."""
        access = self

        class _Refused(Collector):
            def collect(self):
                family = CounterMetricFamily("xray_agent_web_refused", "Web requests refused, by reason",
                                             labels=["reason"])
                for reason in REFUSALS:
                    family.add_metric([reason], access.refused[reason])
                yield family

        return _Refused()
