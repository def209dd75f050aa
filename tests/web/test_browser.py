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


def activity_ids(simulator: str) -> dict[str, str]:
    """Activity id -> note, as the simulator holds them (asked over HTTP)."""
    return {a["Id"]: a["ActivityNote"]
            for a in httpx.get(f"{simulator}/_sim/activities").json()}


def test_browser_searches_opens_a_conversation_and_requeues_its_dead_letter(tmp_path):
    driver = chromium_driver()
    demo = DemoProcess(tmp_path / "demo", token="browser-token")
    try:
        printed = demo.wait_for("Running until Ctrl-C.")
        simulator = re.search(r"LeadSquared simulator: (http://\S+)", printed)[1]
        make_a_dead_letter(demo, simulator)
        by = __import__("selenium.webdriver.common.by", fromlist=["By"]).By
        keys = __import__("selenium.webdriver.common.keys", fromlist=["Keys"]).Keys

        driver.get(f"{demo.url}/")
        assert driver.current_url.endswith("/login")  # not signed in yet
        driver.find_element(by.ID, "token").send_keys("browser-token")
        driver.find_element(by.ID, "sign-in").click()
        row = driver.find_element(by.CSS_SELECTOR, f'tr[data-key="+{ASHA}"]')
        last_synced = row.find_element(by.CLASS_NAME, "last-synced").text
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+", last_synced), last_synced
        assert int(row.find_element(by.CLASS_NAME, "transcripts").text) >= 1
        assert "ActivityNote" in driver.find_element(by.CSS_SELECTOR, "td.reason").text

        # the keyboard reaches the skip link first, then the search box
        driver.find_element(by.TAG_NAME, "body").send_keys(keys.TAB)
        assert driver.switch_to.active_element.text == "Skip to content"

        search = driver.find_element(by.ID, "search")
        before = driver.find_element(by.CSS_SELECTOR, "table.conversations")
        search.send_keys("98765 43210", keys.ENTER)  # typed as a person would, with a space
        wait = __import__("selenium.webdriver.support.wait", fromlist=["x"]).WebDriverWait
        stale = __import__("selenium.webdriver.support.expected_conditions",
                           fromlist=["x"]).staleness_of
        wait(driver, 20).until(stale(before))  # the results page replaced the list
        rows = driver.find_elements(by.CSS_SELECTOR, "table.conversations tr[data-key]")
        assert [r.get_attribute("data-key") for r in rows] == [f"+{ASHA}"]
        rows[0].find_element(by.CSS_SELECTOR, "a.open").click()

        # the conversation: an activity id on the page is one the CRM holds
        dead = driver.find_element(by.CSS_SELECTOR, 'tr[data-provider-id="wamid.browser-long"]')
        assert "ActivityNote" in dead.find_element(by.CSS_SELECTOR, 'li[data-state="dead"]').text
        shown = [c.text for c in driver.find_elements(by.CSS_SELECTOR, "code.activity")]
        held = activity_ids(simulator)
        assert shown and all(activity in held for activity in shown), (shown, list(held))
        assert any(f"+{ASHA}" in held[activity] for activity in shown)

        driver.find_element(by.ID, "requeue-conversation").click()
        assert "Requeued 1" in driver.find_element(by.ID, "flash").text
        deadline = time.monotonic() + 60
        while True:  # delivered: the page shows it done, with the activity it went into
            row = driver.find_element(by.CSS_SELECTOR,
                                      'tr[data-provider-id="wamid.browser-long"]')
            if row.find_elements(by.CSS_SELECTOR, 'li[data-state="done"]'):
                break
            assert time.monotonic() < deadline, "the requeued message was not delivered"
            time.sleep(0.5)
            driver.refresh()
        posted = row.find_element(by.CSS_SELECTOR, "code.activity").text
        notes = activity_ids(simulator)
        assert "Here is my full address" in notes[posted]
        assert sum("Here is my full address" in n for n in notes.values()) == 1  # once

        # a phone-sized window: the page reflows instead of scrolling sideways
        driver.set_window_size(390, 844)
        for path in ("/", f"/conversation?key=%2B{ASHA}"):
            driver.get(f"{demo.url}{path}")
            overflow = driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (path, overflow)
        driver.save_screenshot(str(tmp_path / "phone.png"))
        assert (tmp_path / "phone.png").stat().st_size > 10_000
        assert demo.interrupt() == 0
    finally:
        driver.quit()
        demo.kill()
