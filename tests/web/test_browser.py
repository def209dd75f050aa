"""Headless Chromium drives the status page after a demo run: login, last synced, requeue."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import httpx
import pytest

from plugins.whatsapp.signature import sign
from tests.processes import DemoProcess

ASHA = "919876543210"


def chromium_driver():
    """Selenium over Debian's chromium + chromedriver, or a skip that says what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("Chromium could not be installed here (apt-get install chromium "
                    "chromium-driver); .ci/run installs it")
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium fetch a driver of its own
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.implicitly_wait(15)  # a click that navigates returns before the next page loads
    return chrome


def make_a_dead_letter(demo: DemoProcess, simulator: str) -> None:
    """The account refuses long notes for a while: a long message ends in dead letter."""
    httpx.post(f"{simulator}/_sim/config", json={"note_limit": 200}).raise_for_status()
    secret = json.loads((demo.workdir / "config.yaml").read_text())[
        "plugins"]["whatsapp"]["app_secret"]
    message = {"from": ASHA, "id": "wamid.browser-long", "timestamp": str(int(time.time())),
               "type": "text", "text": {"body": "Here is my full address: " + "x" * 300}}
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": {
            "display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "messages": [message]}}]}]}).encode()
    response = httpx.post(f"{demo.url}/webhooks/whatsapp", content=body, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": sign(body, secret)})
    assert response.status_code == 200
    deadline = time.monotonic() + 60
    while demo.status()["sinks"][0]["dead_letters"] == 0:
        assert time.monotonic() < deadline, "no dead letter appeared"
        time.sleep(0.2)
    httpx.post(f"{simulator}/_sim/config", json={"note_limit": 2000}).raise_for_status()


def test_browser_logs_in_sees_last_synced_and_requeues_a_dead_letter(tmp_path):
    driver = chromium_driver()
    demo = DemoProcess(tmp_path / "demo", token="browser-token")
    try:
        printed = demo.wait_for("Running until Ctrl-C.")
        simulator = re.search(r"LeadSquared simulator: (http://\S+)", printed)[1]
        make_a_dead_letter(demo, simulator)
        by = __import__("selenium.webdriver.common.by", fromlist=["By"]).By

        driver.get(f"{demo.url}/")
        assert driver.current_url.endswith("/login")  # not signed in yet
        driver.find_element(by.ID, "token").send_keys("browser-token")
        driver.find_element(by.ID, "sign-in").click()
        row = driver.find_element(by.CSS_SELECTOR, f'tr[data-key="+{ASHA}"]')
        last_synced = row.find_element(by.CLASS_NAME, "last-synced").text
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+", last_synced), last_synced
        assert int(row.find_element(by.CLASS_NAME, "transcripts").text) >= 1
        assert "ActivityNote" in driver.find_element(by.CSS_SELECTOR, "td.reason").text

        driver.find_element(by.CSS_SELECTOR, "button.requeue").click()
        assert "Requeued 1" in driver.find_element(by.ID, "flash").text
        deadline = time.monotonic() + 30
        while driver.find_element(by.ID, "dead-count-leadsquared").text != "0":
            assert time.monotonic() < deadline, "the requeued message was not delivered"
            time.sleep(0.5)
            driver.refresh()
        driver.save_screenshot(str(tmp_path / "status.png"))
        assert (tmp_path / "status.png").stat().st_size > 10_000

        # dead count 0 only says it was requeued: wait for the drain the requeue woke
        while True:
            notes = [a["ActivityNote"]
                     for a in httpx.get(f"{simulator}/_sim/activities").json()]
            if any("Here is my full address" in n for n in notes):
                break
            assert time.monotonic() < deadline + 30, "the requeued message was not delivered"
            time.sleep(0.2)
        assert sum("Here is my full address" in n for n in notes) == 1  # once, on the lead
        assert demo.interrupt() == 0
    finally:
        driver.quit()
        demo.kill()
