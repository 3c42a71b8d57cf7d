"""The Flask app: health endpoints and Prometheus metrics, with an optional per-room access token.

The token (web.token_file) is asked of every request that does not come from this machine: local probes, `doctor`
and a browser on the room PC need none. Later pages register as blueprints and find the view in
`app.extensions["xray_agent"]`.
"""

from __future__ import annotations

import hmac
import ipaddress

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent import __version__
from agent.health.checks import liveness, readiness
from agent.health.view import AgentView
from agent.web.metrics import metrics_registry


def _local(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _authorised(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def create_app(view: AgentView, token: str | None = None) -> Flask:
    """The app for one agent; token None: no token asked (the server should then bind loopback only)."""
    app = Flask("xray_agent")
    app.extensions["xray_agent"] = view
    registry = metrics_registry(view)

    @app.before_request
    def _check_token():
        if token and not _local(request.remote_addr) and not _authorised(request.headers.get("Authorization"), token):
            return jsonify(error="missing or wrong access token: send 'Authorization: Bearer TOKEN' with the "
                                 "contents of web.token_file"), 401
        return None

    @app.get("/livez")
    def livez():
        """200 while the supervisor loop ticks, else 503."""
        check = liveness(view)
        body = {"live": check.ok, "detail": check.detail, "boot_id": view.boot_id, "version": __version__}
        return jsonify(body), 200 if check.ok else 503

    @app.get("/readyz")
    def readyz():
        """200 when every readiness check passes, else 503 naming the failing ones."""
        checks = readiness(view)
        failing = [c.name for c in checks if not c.ok]
        body = {"ready": not failing, "failing": failing,
                "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}}
        return jsonify(body), 503 if failing else 200

    @app.get("/metrics")
    def metrics():
        """Prometheus text exposition, read from the live agent now."""
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    return app
