"""The QC page's access rules in headless Chromium against the real agent: a browser on "another host" signs in with
the room token and runs a full QC session; a DNS-rebinding-style visit (a foreign name resolving to the room PC) and a
cross-origin POST from another web site are refused; the CLI on the room PC still works without a typed token.

"Another host" and "another web site" are names Chromium resolves to 127.0.0.1 (--host-resolver-rules): the agent
sees a request naming xr-01.test (one of web.public_names) or evil.test, exactly as it would from those hosts, while
the test uses loopback only."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.qc_room import room, session_message  # noqa: F401 - room is a fixture
from tests.realparts import free_port, wait_for
from tests.test_health_agent import metric
from tests.test_qc_web import CHROMEDRIVER, CHROMIUM, FLAGS, click, text, wait

pytestmark = pytest.mark.integration

PUBLIC_NAME, EVIL_NAME = "xr-01.test", "evil.test"
ROOM_TOKEN = "room-token-" + "k" * 32


@pytest.fixture
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("Debian's chromium and chromium-driver are not installed; scripts/setup.sh installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", "--disable-features=HttpsUpgrades",
                 f"--host-resolver-rules=MAP {PUBLIC_NAME} 127.0.0.1,MAP {EVIL_NAME} 127.0.0.1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture
def attacker_site():
    """Another web site (http://evil.test:PORT/) whose page, once opened, POSTs to the agent's API cross-origin: a
    form (no preflight) and a no-cors fetch. Served from a thread, shut down afterwards."""
    pages: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = pages.get(self.path, b"not here")
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    server.pages = pages
    server.url = f"http://{EVIL_NAME}:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def start_room(room, agent_factory, broker, tmp_path):
    token_file = tmp_path / "web.token"
    token_file.write_text(ROOM_TOKEN + "\n")
    token_file.chmod(0o600)
    return room.start(agent_factory, broker.port, web={"port": free_port(), "token_file": str(token_file),
                                                         "public_names": [PUBLIC_NAME]})


def run_session_on_the_page(browser, room, subscriber) -> str:
    """Start a kVp test on the page, two exposures, confirm their techniques, finish: the published record's ref."""
    from selenium.webdriver.support.ui import Select

    wait(browser, lambda d: "OK" in text(d, "instruments"), "instruments shown ok")
    Select(browser.find_element("id", "test_type")).select_by_value("kvp_accuracy")
    browser.find_element("css selector", "label[for=choice-kvp-1]").click()
    browser.find_element("id", "operator").send_keys("RM")
    browser.find_element("id", "start-button").click()
    wait(browser, lambda d: "kVp accuracy" in text(d, "s-title"), "the new session on the page")
    [session] = room.api("/api/qc/sessions?state=open")["sessions"]
    ref = session["ref"]
    room.expose(ref, kvp=80, mas=10, kerma_ugy=876.0, measured_kvp=81.2)
    room.expose(ref, kvp=100, mas=10, kerma_ugy=1250.0, measured_kvp=104.0)
    wait(browser, lambda d: len(d.find_elements("css selector", "#exposures tbody tr")) == 2, "two exposures shown")
    click(browser, "//button[@id='confirm-all']", "Confirm all DICOM techniques")  # a write: needs the CSRF token
    wait(browser, lambda d: all("from DICOM ✓" in row.text
                                for row in d.find_elements("css selector", "#exposures tbody tr")),
         "both exposures confirmed")
    wait(browser, lambda d: text(d, "verdict") == "PASS", "the verdict")
    click(browser, "//button[@id='finish']", "Finish")
    wait(browser, lambda d: "finished, published" in text(d, "s-meta"), "finished and published on the page")
    return ref


def test_another_host_signs_in_with_the_token_then_runs_a_session(broker, subscriber, agent_factory, room, browser,
                                                                   tmp_path):
    agent = start_room(room, agent_factory, broker, tmp_path)
    port = int(room.web.rsplit(":", 1)[1])
    page = f"http://{PUBLIC_NAME}:{port}/qc"
    browser.get(page)
    wait(browser, lambda d: d.current_url.startswith(f"http://{PUBLIC_NAME}:{port}/login"), "sent to the sign-in form")
    browser.find_element("id", "token").send_keys("not-the-token-" + "x" * 30)
    browser.find_element("id", "login-button").click()
    wait(browser, lambda d: "not this room's token" in text(d, "message"), "a wrong token refused")
    browser.find_element("id", "token").send_keys(ROOM_TOKEN)
    browser.find_element("id", "login-button").click()
    wait(browser, lambda d: d.current_url == page, "the QC page after signing in")
    cookie = browser.get_cookie("xray_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["secure"] is False  # plain http
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: the page's scripts cannot read it

    ref = run_session_on_the_page(browser, room, subscriber)
    body = session_message(subscriber, ref)
    assert body["result"]["verdict"] == "pass" and body["operator"] == "RM"
    assert body["exposures"][0]["technique"]["confirmed"] is True

    click(browser, "//button[@id='logout']", "Sign out")
    wait(browser, lambda d: d.current_url.startswith(f"http://{PUBLIC_NAME}:{port}/login"), "signed out")
    browser.get(page)
    wait(browser, lambda d: "/login" in d.current_url, "the page asks for the token again")
    assert ROOM_TOKEN not in agent.log()


def test_rebinding_and_cross_origin_posts_are_refused_and_the_cli_still_works(broker, subscriber, agent_factory,
                                                                               room, browser, attacker_site, tmp_path):
    agent = start_room(room, agent_factory, broker, tmp_path)
    port = int(room.web.rsplit(":", 1)[1])
    target = f"http://127.0.0.1:{port}"
    # The room PC's own browser opens the QC page (no sign-in from loopback), so any credentials it has are in play.
    browser.get(f"{target}/qc")
    wait(browser, lambda d: "OK" in text(d, "instruments"), "the page on the room PC")

    # DNS rebinding: evil.test now resolves to the room PC; the page's origin is evil.test, so is its Host header.
    browser.get(f"http://{EVIL_NAME}:{port}/qc")
    wait(browser, lambda d: "not reached by that name" in d.find_element("tag name", "body").text, "421 shown")
    outcome = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        Promise.all([fetch('/metrics').then(r => r.status),
                     fetch('/api/qc/sessions', {method: 'POST', headers: {'Content-Type': 'application/json'},
                       body: JSON.stringify({test_type: 'hvl', instruments: ['kvp-1'], operator: 'EV'})})
                       .then(r => r.status)]).then(done, (e) => done(String(e)));""")
    assert outcome == [421, 421]

    # Another web site POSTs to the agent cross-origin: a plain form (sent without a preflight) and a no-cors fetch.
    attacker_site.pages["/"] = f"""<!doctype html><html><body>
      <form id="f" method="post" action="{target}/api/qc/sessions" enctype="text/plain">
        <input name='{{"test_type": "hvl", "instruments": ["kvp-1"], "operator": "EV", "x": "' value='"}}'>
      </form>
      <script>
        fetch("{target}/api/qc/sessions", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
              body: JSON.stringify({{test_type: "hvl", instruments: ["kvp-1"], operator: "EV"}})}})
          .finally(() => document.getElementById("f").submit());
      </script></body></html>""".encode()
    refused_before = metric(agent, "xray_agent_web_refused_total", reason="origin") or 0
    browser.get(attacker_site.url + "/")
    wait_for(lambda: (metric(agent, "xray_agent_web_refused_total", reason="origin") or 0) >= refused_before + 2, 15,
             "both cross-origin POSTs reached the agent and were refused")
    assert "cross-origin write refused" in browser.find_element("tag name", "body").text  # the form's answer
    assert room.api("/api/qc/sessions")["sessions"] == []
    assert metric(agent, "xray_agent_web_refused_total", reason="host") >= 3
    log = agent.log()
    assert log.count("web request refused (host, 421)") == 1 and log.count("web request refused (origin, 403)") == 1

    # The biomed's CLI on the room PC: no token typed, it uses the agent's local credential.
    started = room.cli("start", "--test", "reproducibility", "--instrument", "kvp-1", "--operator", "CL")
    assert started.returncode == 0, started.stderr
    [session] = room.api("/api/qc/sessions?state=open")["sessions"]
    room.expose(session["ref"], kvp=80, mas=10, kerma_ugy=876.0)
    finished = room.cli("finish")
    assert finished.returncode == 0, finished.stderr
    assert session_message(subscriber, session["ref"])["operator"] == "CL"
    listed = room.cli("list")
    assert listed.returncode == 0 and session["ref"] in listed.stdout
