"""A small client of the running agent's QC API (/api/qc/...), for `xray-agent qc ...`; standard library only."""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from typing import Any

from agent.config import Config
from agent.secretfile import SecretFileError, read_secret_text
from agent.web.credential import cli_token_path, read_cli_token

TIMEOUT_S = 10.0


class ClientError(Exception):
    """A request that failed; the message says what to do."""


def agent_address(cfg: Config) -> tuple[str, int]:
    """Where this machine reaches the agent's web server: its bind address, or loopback when it binds all."""
    ip = ipaddress.ip_address(cfg.web.bind)
    host = ("127.0.0.1" if ip.version == 4 else "::1") if ip.is_unspecified else cfg.web.bind
    return host, cfg.web.port


class QcClient:
    """GET/POST JSON to the agent; every failure becomes a ClientError with a readable message."""

    def __init__(self, cfg: Config) -> None:
        """From the config's [web] section (and its token file, needed when the agent binds a non-local address)."""
        if not cfg.web.enabled:
            raise ClientError(f"the agent's web server is off (web.enabled = false in {cfg.source_path}); the qc "
                              "commands talk to it: set web.enabled = true and restart the agent")
        host, port = agent_address(cfg)
        self.where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.base = f"http://{self.where}"
        self.token = _read_token(cfg)
        self.credential = cli_token_path(cfg)

    def get(self, path: str) -> Any:
        """GET path, the decoded JSON answer."""
        return self._request(urllib.request.Request(self.base + path))

    def post(self, path: str, body: dict | None = None) -> Any:
        """POST a JSON body, the decoded JSON answer."""
        request = urllib.request.Request(self.base + path, data=json.dumps(body or {}).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        return self._request(request)

    def _request(self, request: urllib.request.Request) -> Any:
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise ClientError(_http_error(exc, self.where, self.credential)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"agent not running on {self.where} ({reason}) — start it with `xray-agent run` "
                              "(or `systemctl start xray-agent`), or check web.bind/web.port in the config") from None


def _http_error(exc: urllib.error.HTTPError, where: str, credential) -> str:
    try:
        message = json.loads(exc.read()).get("error")
    except (ValueError, AttributeError, OSError):
        message = None
    if exc.code == 404 and message is None:
        return f"the agent on {where} has no QC API (an older version?): update and restart it"
    if exc.code in (401, 403):
        return (f"the agent on {where} refused the request ({message}): run this as root or as a member of the "
                f"agent's group, which may read its local credential {credential} (or web.token_file)")
    return message or f"the agent answered {exc.code} {exc.reason}"


def _read_token(cfg: Config) -> str | None:
    """The local CLI credential the running agent wrote, else the room token; None when neither is readable (reads
    still work from this machine, writes are then refused with a message saying why)."""
    token = read_cli_token(cfg)
    if token is None and cfg.web.token_file is not None:
        try:
            token = read_secret_text("web.token_file", cfg.web.token_file) or None
        except SecretFileError:
            token = None
    return token
