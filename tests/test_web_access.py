"""The web server's access rules (agent.web.access) through Flask's test client: the Host check, the room PC without
sign-in, Bearer scripts, sign-in with the room token and its session cookie, same-origin and CSRF checks on writes."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from flask import jsonify, request

from agent.web.access import SESSION_COOKIE
from agent.web.app import create_app

TOKEN, CLI_TOKEN = "r" * 43, "c" * 43
PORT = 8080
LOCAL = f"http://127.0.0.1:{PORT}"
PUBLIC = f"http://xr-03.lan:{PORT}"
REMOTE = {"REMOTE_ADDR": "10.9.8.7"}


def view():
    cfg = SimpleNamespace(site=SimpleNamespace(id="site", room="room"))
    return SimpleNamespace(cfg=cfg, boot_id="b")


@pytest.fixture
def app():
    app = create_app(view(), TOKEN, CLI_TOKEN, ["xr-03.lan", "10.1.2.3"], max_body_bytes=4096)
    app.writes = []

    @app.route("/api/thing", methods=["GET", "POST"])
    def thing():
        if request.method == "POST":
            app.writes.append(request.get_json(silent=True))
        return jsonify(ok=True)

    @app.get("/qc")
    def page():  # the QC page's token, as its template embeds it
        from flask import render_template_string
        return render_template_string('<meta name="csrf-token" content="{{ csrf_token() }}">'
                                      '{% if signed_in() %}signed in{% endif %}')

    return app


def token_of(page: str) -> str:
    return re.search(r'name="csrf-token" content="([0-9a-f]+)"', page).group(1)


def test_host_must_name_this_server(app):
    client = app.test_client()
    for host in ("evil.example", f"evil.example:{PORT}", "127.0.0.1:9999", "localhost.evil.example:8080",
                 "xr-03.lan.evil:8080", "[::1", ""):
        answer = client.get("/api/thing", base_url=LOCAL, headers={"Host": host})
        assert answer.status_code == 421, host
    for host in (f"127.0.0.1:{PORT}", f"localhost:{PORT}", f"[::1]:{PORT}", f"127.0.0.2:{PORT}", f"LOCALHOST.:{PORT}"):
        assert client.get("/api/thing", base_url=LOCAL, headers={"Host": host}).status_code == 200, host
    # public names need the token even from loopback; other hosts' Host is checked the same way
    assert client.get("/api/thing", base_url=PUBLIC).status_code == 401
    foreign = client.get("/api/thing", base_url=PUBLIC, environ_base=REMOTE, headers={"Host": "evil:8080"})
    assert foreign.status_code == 421
    assert client.get("/livez", base_url=LOCAL, headers={"Host": f"rebound.example:{PORT}"}).status_code == 421
    assert client.get("/metrics", base_url=LOCAL, headers={"Host": f"rebound.example:{PORT}"}).status_code == 421


def test_room_pc_writes_need_same_origin_and_csrf_token(app):
    client = app.test_client()
    page = client.get("/qc", base_url=LOCAL).get_data(as_text=True)
    csrf = token_of(page)
    post = lambda **headers: client.post("/api/thing", base_url=LOCAL, json={"n": 1}, headers=headers)  # noqa: E731
    assert post().status_code == 403  # no origin information at all
    assert post(Origin=LOCAL).status_code == 403  # no token
    assert post(Origin="http://evil.example", **{"X-CSRF-Token": csrf}).status_code == 403
    assert post(Origin="null", **{"X-CSRF-Token": csrf}).status_code == 403
    assert post(Origin=LOCAL, **{"X-CSRF-Token": "0" * 64}).status_code == 403
    assert post(**{"Sec-Fetch-Site": "cross-site", "X-CSRF-Token": csrf}).status_code == 403
    assert post(Referer="http://evil.example/x", **{"X-CSRF-Token": csrf}).status_code == 403
    assert app.writes == []
    assert post(Origin=LOCAL, **{"X-CSRF-Token": csrf}).status_code == 200
    assert post(**{"Sec-Fetch-Site": "same-origin", "X-CSRF-Token": csrf}).status_code == 200
    assert post(Referer=f"{LOCAL}/qc", **{"X-CSRF-Token": csrf}).status_code == 200
    assert len(app.writes) == 3
    from prometheus_client import CollectorRegistry, generate_latest
    registry = CollectorRegistry()
    registry.register(app.extensions["xray_agent_access"].collector())  # part of the app's /metrics
    refused = generate_latest(registry).decode()
    assert 'xray_agent_web_refused_total{reason="origin"} 5.0' in refused
    assert 'xray_agent_web_refused_total{reason="csrf"} 2.0' in refused


def test_bearer_scripts_need_no_csrf_and_a_wrong_token_is_401(app):
    client = app.test_client()
    for token in (TOKEN, CLI_TOKEN):
        answer = client.post("/api/thing", base_url=LOCAL, environ_base=REMOTE, json={},
                             headers={"Authorization": f"Bearer {token}", "Host": f"10.1.2.3:{PORT}"})
        assert answer.status_code == 200
    wrong = client.get("/api/thing", base_url=LOCAL, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong access token" in wrong.json["error"]


def test_another_host_signs_in_with_the_room_token_then_works_and_signs_out(app):
    client = app.test_client()
    get = lambda path, **kw: client.get(path, base_url=PUBLIC, environ_base=REMOTE, **kw)  # noqa: E731
    assert get("/api/thing").status_code == 401
    page = get("/qc", headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["Location"] == "/login?next=/qc"
    form = get("/login?next=/qc").get_data(as_text=True)
    login_csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form).group(1)

    def sign_in(token, csrf=login_csrf, origin=PUBLIC):
        return client.post("/login", base_url=PUBLIC, environ_base=REMOTE, headers={"Origin": origin},
                           data={"token": token, "csrf_token": csrf, "next": "/qc"})

    assert sign_in(TOKEN, origin="http://evil.example").status_code == 403
    assert sign_in(TOKEN, csrf="0" * 64).status_code == 403
    wrong = sign_in("x" * 43)
    assert wrong.status_code == 401 and "not this room" in wrong.get_data(as_text=True)
    assert client.get_cookie(SESSION_COOKIE, domain="xr-03.lan") is None
    assert sign_in(CLI_TOKEN).status_code == 401  # the local CLI credential is not a sign-in token
    ok = sign_in(TOKEN)
    assert ok.status_code == 303 and ok.headers["Location"] == "/qc"
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie and "Path=/" in cookie

    page = get("/qc").get_data(as_text=True)
    assert "signed in" in page
    csrf = token_of(page)
    post = lambda **headers: client.post("/api/thing", base_url=PUBLIC, environ_base=REMOTE, json={},  # noqa: E731
                                         headers=headers)
    assert post(Origin=PUBLIC).status_code == 403
    assert post(Origin=PUBLIC, **{"X-CSRF-Token": token_of(client.get("/qc", base_url=LOCAL).get_data(
        as_text=True))}).status_code in (403,)  # another session's (or the room PC's) token does not fit
    assert post(Origin=PUBLIC, **{"X-CSRF-Token": csrf}).status_code == 200

    assert client.post("/logout", base_url=PUBLIC, environ_base=REMOTE, headers={"Origin": PUBLIC},
                       data={}).status_code == 403  # sign-out is a write: the token too
    out = client.post("/logout", base_url=PUBLIC, environ_base=REMOTE, headers={"Origin": PUBLIC},
                      data={"csrf_token": csrf})
    assert out.status_code == 303 and out.headers["Location"] == "/login"
    assert get("/api/thing").status_code == 401


def test_session_cookie_is_secure_over_tls_and_next_stays_on_this_server(app):
    client = app.test_client()
    base = "https://xr-03.lan:8443"
    form = client.get("/login", base_url=base, environ_base={**REMOTE, "SERVER_PORT": "8443"}).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form).group(1)
    answer = client.post("/login", base_url=base, environ_base={**REMOTE, "SERVER_PORT": "8443"},
                         headers={"Origin": base}, data={"token": TOKEN, "csrf_token": csrf,
                                                          "next": "//evil.example/x"})
    assert answer.status_code == 303 and answer.headers["Location"] == "/qc"
    assert "Secure" in answer.headers["Set-Cookie"]


def test_without_a_room_token_other_hosts_are_refused_and_bodies_are_bounded(app):
    bare = create_app(view(), None, CLI_TOKEN, [], max_body_bytes=4096)
    assert bare.test_client().get("/livez", base_url=LOCAL, environ_base=REMOTE).status_code == 401
    big = app.test_client().post("/api/thing", base_url=LOCAL, data=b"x" * 5000, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert big.status_code == 413


# ---- properties --------------------------------------------------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(labels=st.lists(LABEL, min_size=1, max_size=4), port=st.sampled_from([PORT, 80, 8081]))
def test_any_other_name_is_refused_before_anything_runs(labels, port):
    name = ".".join(labels)
    app = create_app(view(), TOKEN, CLI_TOKEN, ["xr-03.lan"])
    answer = app.test_client().get("/livez", base_url=LOCAL, headers={"Host": f"{name}:{port}"})
    allowed = name in ("localhost", "xr-03.lan") and port == PORT
    assert (answer.status_code == 421) is not allowed, (name, port)
