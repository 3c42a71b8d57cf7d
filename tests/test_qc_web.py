"""The QC page driven by Debian's headless Chromium (Selenium with Debian's chromedriver, nothing downloaded): start a
session, exposures appear in the table as the meter reads and the modality sends, confirm a technique, the verdict
shows, finish publishes on qc/session. Screenshots go to tests/artifacts/ (qc-page.png, qc-report.png)."""

from __future__ import annotations

import os

import pytest

from tests.qc_room import published, room, session_message  # noqa: F401 - room is a fixture
from tests.realparts import REPO

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = REPO / "tests" / "artifacts"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1400")


@pytest.fixture
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("Debian's chromium and chromium-driver are not installed; scripts/setup.sh installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver path below, Selenium Manager never downloads a browser
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def wait(driver, predicate, what: str, timeout: float = 15):
    """Until predicate(driver) is truthy; the page redraws what changed every second, so an element found a moment
    ago may be gone: such a try counts as "not yet"."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException)).until(predicate, message=what)


def click(driver, xpath: str, what: str) -> None:
    wait(driver, lambda d: d.find_element("xpath", xpath).click() or True, what)


def text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def test_the_page_runs_a_session_from_start_to_published(broker, subscriber, agent_factory, room, browser):
    from selenium.webdriver.support.ui import Select

    room.start(agent_factory, broker.port)
    browser.get(f"{room.web}/qc")
    wait(browser, lambda d: d.find_elements("css selector", "#instrument-choices input"), "instrument choices")
    wait(browser, lambda d: "OK" in text(d, "instruments"), "instruments shown ok")
    Select(browser.find_element("id", "test_type")).select_by_value("kvp_accuracy")
    browser.find_element("css selector", "label[for=choice-kvp-1]").click()
    browser.find_element("id", "operator").send_keys("TB")
    browser.find_element("id", "start-button").click()
    wait(browser, lambda d: "kVp accuracy" in text(d, "s-title"), "the new session on the page")
    assert text(browser, "verdict") == "INCOMPLETE"
    [session] = room.api("/api/qc/sessions?state=open")["sessions"]
    ref = session["ref"]

    room.expose(ref, kvp=80, mas=10, kerma_ugy=876.0, measured_kvp=81.2)
    wait(browser, lambda d: len(d.find_elements("css selector", "#exposures tbody tr")) == 1, "exposure 1 in the table")
    wait(browser, lambda d: "not confirmed" in d.find_element("css selector", "#exposures tbody tr").text,
         "exposure 1's DICOM technique awaiting confirmation")
    assert text(browser, "verdict") == "INCOMPLETE"  # DICOM's values are a proposal until confirmed
    click(browser, "//button[@id='confirm-all']", "Confirm all DICOM techniques")
    wait(browser, lambda d: text(d, "verdict") == "PASS", "the verdict after one confirmed exposure")
    room.expose(ref, kvp=100, mas=10, kerma_ugy=1250.0, measured_kvp=104.0)
    wait(browser, lambda d: len(d.find_elements("css selector", "#exposures tbody tr")) == 2, "exposure 2 in the table")
    wait(browser, lambda d: "from DICOM ✓" in d.find_element("css selector", "#exposures tbody tr").text,
         "exposure 1 confirmed")
    click(browser, "//table[@id='exposures']/tbody/tr[2]//button[text()='Confirm']", "Confirm of exposure 2")
    wait(browser, lambda d: "from DICOM ✓" in d.find_elements("css selector", "#exposures tbody tr")[1].text,
         "exposure 2 confirmed")
    row_2 = "#exposures tbody tr:nth-child(2) td"
    cells = wait(browser, lambda d: [c.text for c in d.find_elements("css selector", row_2)], "row 2's cells")
    assert cells[0] == "2" and cells[2] == "100" and cells[7] == "104"  # set kV from DICOM, measured kVp
    assert text(browser, "verdict") == "PASS"  # 100 -> 104 kV: 4 % is within 5 %
    assert "80 kV" in text(browser, "criteria") and "100 kV" in text(browser, "criteria")
    # A 1280x800 room PC: the exposures table fits, its Correct buttons are not cut off.
    browser.set_window_size(1280, 800)
    browser.execute_script("document.getElementById('session').scrollIntoView()")
    wait(browser, lambda d: d.execute_script(
        "const w = document.querySelector('.table-wrap'); return w.scrollWidth <= w.clientWidth"),
        "the exposures table fits 1280 px without scrolling", timeout=5)
    button = browser.find_element("xpath", "//table[@id='exposures']/tbody/tr[1]//button[text()='Correct']")
    wrap = browser.find_element("css selector", ".table-wrap")
    assert button.rect["x"] + button.rect["width"] <= wrap.rect["x"] + wrap.rect["width"] + 1
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "qc-page.png"))
    browser.set_window_size(1400, 1400)

    click(browser, "//button[@id='finish']", "Finish")
    wait(browser, lambda d: "finished, published" in text(d, "s-meta"), "finished and published on the page")
    body = session_message(subscriber, ref)
    assert body["result"]["verdict"] == "pass" and body["operator"] == "TB"
    assert body["exposures"][0]["technique"]["confirmed"] is True
    assert not browser.find_element("id", "finish").is_displayed()
    listing = text(browser, "sessions")
    assert "started 20" in listing and "finished 20" in listing  # dates, and the finish time under "finished"

    browser.find_element("id", "reviewed_by").send_keys("Dr. M. Curie")
    browser.find_element("id", "review_comment").send_keys("Accepted.")
    browser.find_element("id", "sign-off").click()
    wait(browser, lambda d: "Signed off by Dr. M. Curie" in text(d, "review-done"), "the sign-off on the page")
    update = wait(browser, lambda d: [m for m in published(subscriber, "qc/session")
                                      if m["session_ref"] == ref and m["revision"] == 1], "the reviewed record")
    assert update[0]["review"]["comment"] == "Accepted."

    click(browser, "//a[@id='report']", "Report")
    wait(browser, lambda d: "Verdict: PASS" in d.find_element("tag name", "body").text, "the report")
    assert "Meter readings (raw frames)" in browser.find_element("tag name", "body").text
    assert "Reviewed by Dr. M. Curie" in browser.find_element("tag name", "body").text
    browser.save_screenshot(str(ARTIFACTS / "qc-report.png"))
