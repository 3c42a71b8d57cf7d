"""Attacks on the web server's sign-in and access rules that a hostile page or link would try (Flask's test client;
the browser-level checks are in test_qc_web_access.py)."""

from __future__ import annotations

import re

import pytest

from tests.test_web_access import LOCAL, PUBLIC, REMOTE, TOKEN, app  # noqa: F401 - the fixture


def sign_in(client, next_value: str):
    form = client.get("/login", base_url=PUBLIC, environ_base=REMOTE).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form).group(1)
    return client.post("/login", base_url=PUBLIC, environ_base=REMOTE, headers={"Origin": PUBLIC},
                       data={"token": TOKEN, "csrf_token": csrf, "next": next_value})


# Browsers drop tab, CR and LF from a URL (WHATWG URL parser) and read "\" as "/": each of these is //evil.example.
@pytest.mark.parametrize("next_value", ["/\t/evil.example/x", "/\n/evil.example/x", "/\r/evil.example/x",
                                        "/\\evil.example/x", "\t//evil.example/x", "/\u3000/evil.example",
                                        "https://evil.example/x", "/%2F/evil.example"])
def test_sign_in_never_redirects_off_this_server(app, next_value):  # noqa: F811
    answer = sign_in(app.test_client(), next_value)
    assert answer.status_code == 303, answer.status_code
    location = answer.headers["Location"]
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location
    assert not re.search(r"[\x00-\x20\x7f\\]", location), location


def test_an_ordinary_next_path_with_its_query_is_kept(app):  # noqa: F811
    answer = sign_in(app.test_client(), "/qc/sessions?id=ab-12&x=1")
    assert answer.status_code == 303 and answer.headers["Location"] == "/qc/sessions?id=ab-12&x=1"


def test_the_sign_in_form_does_not_echo_a_hostile_next(app):  # noqa: F811
    form = app.test_client().get("/login", base_url=LOCAL, query_string={"next": "/\t/evil.example"}).get_data(
        as_text=True)
    assert "evil.example" not in form


def test_a_hostile_path_is_sent_to_sign_in_not_a_server_error(app):  # noqa: F811
    client = app.test_client()
    for path in ("/qc%0d%0aX-Evil:%201", "/qc%09x", "/qc/%E2%80%AE"):
        answer = client.get(path, base_url=PUBLIC, environ_base=REMOTE, headers={"Accept": "text/html"})
        assert answer.status_code == 303, (path, answer.status_code)
        assert "X-Evil" not in answer.headers and not re.search(r"[\x00-\x20\x7f]", answer.headers["Location"])
    back = client.get("/qc/sessions?id=7", base_url=PUBLIC, environ_base=REMOTE, headers={"Accept": "text/html"})
    assert back.headers["Location"] == "/login?next=/qc/sessions%3Fid%3D7"
    assert sign_in(client, "/qc/sessions?id=7").headers["Location"] == "/qc/sessions?id=7"


def test_guessing_the_token_is_slowed_per_address_and_others_can_still_sign_in(app):  # noqa: F811
    from agent.web.access import LOGIN_FAILURES_MAX

    client = app.test_client()
    form = client.get("/login", base_url=PUBLIC, environ_base=REMOTE).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form).group(1)

    def attempt(token, remote=REMOTE):
        return client.post("/login", base_url=PUBLIC, environ_base=remote, headers={"Origin": PUBLIC},
                           data={"token": token, "csrf_token": csrf})

    answers = [attempt(f"guess-{n:040d}").status_code for n in range(LOGIN_FAILURES_MAX + 5)]
    assert answers[:LOGIN_FAILURES_MAX] == [401] * LOGIN_FAILURES_MAX and set(answers[LOGIN_FAILURES_MAX:]) == {429}
    limited = attempt(TOKEN)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0, "even the right token waits"
    assert attempt(TOKEN, {"REMOTE_ADDR": "10.9.8.6"}).status_code == 303, "another address is not locked out"
    assert app.extensions["xray_agent_access"].refused["login-limit"] == 6  # xray_agent_web_refused_total


def test_a_csrf_token_of_one_session_does_not_work_in_another(app):  # noqa: F811
    from tests.test_web_access import token_of

    tokens, clients = [], []
    for _ in range(2):
        client = app.test_client()
        assert sign_in(client, "/qc").status_code == 303
        tokens.append(token_of(client.get("/qc", base_url=PUBLIC, environ_base=REMOTE).get_data(as_text=True)))
        clients.append(client)
    assert tokens[0] != tokens[1]
    post = lambda client, token: client.post("/api/thing", base_url=PUBLIC, environ_base=REMOTE, json={},  # noqa: E731
                                             headers={"Origin": PUBLIC, "X-CSRF-Token": token})
    assert post(clients[0], tokens[1]).status_code == 403 and post(clients[1], tokens[0]).status_code == 403
    assert post(clients[0], tokens[0]).status_code == 200
    assert clients[0].post("/logout", base_url=PUBLIC, environ_base=REMOTE, headers={"Origin": PUBLIC},
                           data={"csrf_token": tokens[0]}).status_code == 303
    assert post(clients[0], tokens[0]).status_code == 401, "signed out"
