"""The sign-in form (/login) and sign-out (/logout) for browsers on other hosts (agent.web.access has the rules).

A person types the room token once; the answer is a session cookie (HttpOnly, SameSite=Strict, Secure over TLS)
that the page's own requests then carry. The form itself is protected like any write: same origin and a CSRF token.
"""

from __future__ import annotations

import re

from flask import Blueprint, Flask, current_app, g, redirect, render_template, request

from agent.web.access import CSRF_FIELD, SESSION_COOKIE, Access

EXTENSION = "xray_agent_access"
LOGIN_PURPOSE = "login"

bp = Blueprint("login", __name__, template_folder="templates")


def register_login(app: Flask, access: Access) -> None:
    """Add /login and /logout, the access hook, and the template helpers csrf_token() and signed_in()."""
    app.extensions[EXTENSION] = access
    app.before_request(access.check)
    app.jinja_env.globals.update(csrf_token=access.csrf_token,
                                 signed_in=lambda: g.get("xray_principal") == "session")
    app.register_blueprint(bp)


def _access() -> Access:
    return current_app.extensions[EXTENSION]


# A path on this server: printable ASCII without spaces or a backslash. Browsers drop tab, CR and LF inside a URL
# and read a backslash as "/" (WHATWG URL standard, "basic URL parser"): "/<TAB>/evil" would be followed as "//evil".
LOCAL_PATH = re.compile(r"/(?![/\\])[!-~]*")


def _next_path() -> str:
    """Where to go after signing in: a path on this server only (never //host, a URL, or one hiding either)."""
    target = request.values.get("next") or "/qc"
    return target if LOCAL_PATH.fullmatch(target) and "\\" not in target else "/qc"


@bp.get("/login")
def form():
    """The sign-in form."""
    return _form()


def _form(message: str = "", status: int = 200):
    access, cfg = _access(), current_app.extensions["xray_agent"].cfg
    html = render_template("login.html", site=cfg.site.id, room=cfg.site.room, message=message, next=_next_path(),
                           login_csrf=access.csrf_token(LOGIN_PURPOSE), has_token=access.token is not None)
    return html, status


@bp.post("/login")
def sign_in():
    """Check the token; a session cookie and the page on success, the form again (401) otherwise."""
    access = _access()
    if not access.same_origin() or not access.csrf_ok(request.form.get(CSRF_FIELD), LOGIN_PURPOSE):
        access.refused["origin"] += 1
        return _form("This form must be sent from this server's own sign-in page: reload it and try again.", 403)
    wait_s = access.login_retry_after(request.remote_addr)
    if wait_s:
        html, status = _form(f"Too many wrong tokens from this address: try again in {wait_s} s.", 429)
        return html, status, {"Retry-After": str(wait_s)}
    sid = access.sign_in(request.form.get("token", ""), request.remote_addr)
    if sid is None:
        return _form("That is not this room's token.", 401)
    response = redirect(_next_path(), 303)
    response.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="Strict", secure=request.is_secure, path="/")
    return response


@bp.post("/logout")
def sign_out():
    """End the session (the access hook already checked origin and CSRF token)."""
    _access().sign_out(request.cookies.get(SESSION_COOKIE))
    response = redirect("/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict", secure=request.is_secure)
    return response
