"""The agent's local web server: /livez, /readyz and /metrics now, the QC page later (as a blueprint on the same app).

`create_app(view, token)` builds the Flask app from the running agent's parts; `WebService` serves it with waitress in
a thread under the supervisor.
"""

from agent.web.app import create_app
from agent.web.service import WebService

__all__ = ["create_app", "WebService"]
