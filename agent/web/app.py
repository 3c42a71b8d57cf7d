"""The Flask app: health endpoints and Prometheus metrics, the sign-in form, and the access rules of agent.web.access
(Host check, room token or session for other hosts, same-origin and CSRF checks on writes).

Local probes, `doctor` and a browser on the room PC need no token. Later pages register as blueprints and find the
view in `app.extensions["xray_agent"]`.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent import __version__
from agent.health.checks import liveness, readiness
from agent.health.view import AgentView
from agent.web.access import Access
from agent.web.login import register_login
from agent.web.metrics import metrics_registry


def create_app(view: AgentView, token: str | None = None, cli_token: str | None = None,
               public_names: list[str] | tuple[str, ...] = (), max_body_bytes: int | None = None) -> Flask:
    """The app for one agent. token: the room token (None: only the room PC may use it); cli_token: the local CLI
    credential; public_names: the names other hosts reach the server by (web.public_names)."""
    app = Flask("xray_agent")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes  # waitress bounds it too; this covers any other server
    app.extensions["xray_agent"] = view
    registry = metrics_registry(view)
    access = Access(token, cli_token, public_names)
    registry.register(access.collector())
    register_login(app, access)

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
