"""The web console in a real headless Chromium (Debian's chromium and chromium-driver,
driven by selenium): look a user up, click "try it" on an item of their list, and see the
list the worker computed once that click was applied, within 2 s."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from recmodels.datasets import synthetic_stream
from streams.producer import publish
from tests.conftest import Pipeline, applied_count, state_of
from tests.ops_helpers import OpsToolError, ensure_chromium

pytestmark = pytest.mark.e2e

N = 3000
NEW_LIST_WITHIN_S = 2.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        chromium, chromedriver = ensure_chromium()
    except OpsToolError as exc:
        pytest.skip(f"no Chromium here: {exc}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _get(port: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_try_it_shows_the_new_list_within_two_seconds(
        make_pipeline: Callable[..., Pipeline], browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    pipeline = make_pipeline(serving={"console_try_it": True})
    worker = pipeline.start_worker()
    asyncio.run(publish(pipeline.settings, synthetic_stream(N, seed=41), N))
    deadline = time.monotonic() + 60
    while applied_count(pipeline.settings) < N and time.monotonic() < deadline:
        time.sleep(0.2)
    users = state_of(pipeline.settings)["users"]
    user = max(users, key=lambda u: (len(users[u]["sequence"]), u))
    port = worker.env["STREAMREC_METRICS__PORT"]

    browser.get(f"http://127.0.0.1:{port}/console?user={user}")
    wait = WebDriverWait(browser, 10)
    wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "tr.rec")))
    before = [row.get_attribute("data-item") for row in
              browser.find_elements(By.CSS_SELECTOR, "tr.rec")]
    recent = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#recent li")]
    assert before and recent[0] == users[user]["sequence"][-1], "newest item first"
    clicked = before[0]

    started = time.monotonic()
    browser.find_elements(By.CSS_SELECTOR, "button.try")[0].click()
    WebDriverWait(browser, NEW_LIST_WITHIN_S).until(
        seen.text_to_be_present_in_element((By.ID, "status"), "new list in"))
    seen_after_s = time.monotonic() - started
    after = [row.get_attribute("data-item") for row in
             browser.find_elements(By.CSS_SELECTOR, "tr.rec")]
    newest = browser.find_elements(By.CSS_SELECTOR, "#recent li")[0].text
    shot = tmp_path / "console.png"
    browser.save_screenshot(str(shot))
    if target := os.environ.get("STREAMREC_CONSOLE_SCREENSHOT"):
        shutil.copy(shot, target)

    assert seen_after_s <= NEW_LIST_WITHIN_S
    assert newest == clicked, "the click is the user's newest item"
    assert clicked not in after, "a just-seen item is not recommended"
    assert after != before
    # the page's list is the worker's list for the new state
    status, message = _get(port, f"/recommendations/{user}?n=10")
    assert status == 200
    assert [i["item_id"] for i in message["items"]] == after
    assert shot.stat().st_size > 10_000
    # the API behind the page says what is wrong (403 when publishing is off:
    # tests/integration/test_http_and_produce.py)
    status, body = _get(port, "/events", b'{"user_id": "u", "item_id": "", "type": "click"}')
    assert (status, body["field"]) == (400, "item_id")
    status, body = _get(port, "/events", b'{"user_id": "u", "item_id": "i", "type": "like"}')
    assert (status, body["field"]) == (400, "type")
    assert _get(port, "/events", b"[1]")[0] == 400
    status, body = _get(port, "/users/nobody-at-all")
    assert status == 404 and "nobody-at-all" in body["error"]
