"""A fluoroscopy display-accuracy session on the page in headless Chromium: the meter's rate-mode samples appear as
exposures, the technologist types the unit's displayed air-kerma rate in the technique dialog (a browser write with
the page's CSRF token), and the verdict follows. Screenshot: tests/artifacts/qc-fluoro-page.png."""

from __future__ import annotations

import time

import pytest
from selenium.webdriver.support.ui import Select

from tests.qc_room import room  # noqa: F401 - room is a fixture
from tests.test_qc_web import ARTIFACTS, browser, click, text, wait  # noqa: F401 - browser is a fixture

pytestmark = pytest.mark.integration


def test_displayed_rate_typed_on_the_page(broker, agent_factory, room, browser):
    room.start(agent_factory, broker.port, qc={"limits": {"fluoro_settle_s": 1.0, "fluoro_run_gap_s": 2.0}})
    browser.get(f"{room.web}/qc")
    wait(browser, lambda d: d.find_elements("css selector", "#instrument-choices input"), "instrument choices")
    Select(browser.find_element("id", "test_type")).select_by_value("fluoro_display_accuracy")
    browser.find_element("css selector", "label[for=choice-kvp-1]").click()
    browser.find_element("id", "operator").send_keys("TB")
    browser.find_element("id", "start-button").click()
    wait(browser, lambda d: "displayed air kerma accuracy" in text(d, "s-title"), "the fluoroscopy session")
    # 40 mGy/min for 2.5 s, sampled every 0.4 s: settled rate 40 mGy/min.
    room.victoreen.fluoroscopy(rate_mgy_per_min=40.0, kvp=80.0, duration_s=2.5, sample_s=0.4)
    time.sleep(3.0)
    rows = wait(browser, lambda d: len(d.find_elements("css selector", "#exposures tbody tr")) >= 4 and
                len(d.find_elements("css selector", "#exposures tbody tr")), "the samples as exposures")
    assert text(browser, "verdict") == "INCOMPLETE" and "enter the displayed" in text(browser, "s-reason")
    # The unit displayed 50 mGy/min: (50 - 40) / 40 = 0.25 <= 0.35.
    click(browser, f"//table[@id='exposures']/tbody/tr[{rows}]//button", "the last sample's technique button")
    wait(browser, lambda d: d.find_element("id", "edit").is_displayed(), "the technique dialog")
    browser.find_element("name", "displayed_air_kerma_rate_mgy_per_min").send_keys("50")
    browser.find_element("css selector", "#edit-form button[value=save]").click()
    wait(browser, lambda d: text(d, "verdict") == "PASS", "the verdict with the displayed rate")
    assert "air-kerma rate" in text(browser, "criteria")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "qc-fluoro-page.png"))
