"""The agent's local web server: /livez, /readyz, /metrics, the QC page and its API, the sign-in form.

`create_app(view, token, ...)` builds the Flask app from the running agent's parts; `WebService` serves it with
waitress in a thread under the supervisor. Both are imported on first use, so `agent.web.credential` (used by the CLI)
does not load flask.
"""

__all__ = ["create_app", "WebService"]


def __getattr__(name: str):
    if name == "create_app":
        from agent.web.app import create_app
        return create_app
    if name == "WebService":
        from agent.web.service import WebService
        return WebService
    raise AttributeError(name)
