"""/ui in headless Chromium (Debian's chromium and chromium-driver): sign in, read the numbers of a known set of
invocations, filter, open a row; a screenshot is saved in the test's temporary folder."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.served_module import served_module

CLIENT_ID = "ui-client"
CLIENT_SECRET = "ui-secret-of-some-length"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_SECONDS = 20


async def test_the_page_is_served_with_a_strict_policy(client):
    page = await client.get("/ui")
    script = await client.get("/ui/static/app.js")
    elsewhere = await client.get("/ui/static/index.html")

    assert page.status_code == 200
    assert "Lambda Action Module" in await page.get_data(as_text=True)
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert script.status_code == 200
    assert "sessionStorage" in await script.get_data(as_text=True)
    assert elsewhere.status_code == 404


def _write_functions(folder: Path) -> None:
    for name, body in {
        "waddlebot-echo": "def lambda_handler(event, context):\n    print('echoing', event)\n    return event\n",
        "waddlebot-fails": "def lambda_handler(event, context):\n    raise ValueError('cannot do ' + str(event))\n",
    }.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "handler.py").write_text(body)
        (folder / name / "function.json").write_text(json.dumps({"handler": "handler.lambda_handler"}))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The module as `python app.py` runs it, with functions of the test's own; its base URL."""
    functions = tmp_path / "functions"
    _write_functions(functions)
    with served_module(
        tmp_path,
        MODULE_SECRET_KEY="u" * 64,
        BOOTSTRAP_CLIENT_ID=CLIENT_ID,
        BOOTSTRAP_CLIENT_SECRET=CLIENT_SECRET,
        LOCAL_FUNCTIONS_DIR=str(functions),
    ) as base:
        yield base


def _post(url: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _browser(downloads: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless, as root, and without the background connections a closed network refuses.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={downloads / 'profile'}",
        "--window-size=1280,1600",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver")
def test_an_operator_signs_in_reads_the_numbers_filters_and_opens_a_row(served: str, tmp_path: Path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    # Selenium must not look for drivers on the internet: the driver is Debian's.
    monkeypatch.setenv("SE_OFFLINE", "true")
    token = _post(f"{served}/api/v1/token", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})["token"]
    for number in range(3):
        _post(f"{served}/api/v1/invoke", {"function_name": "waddlebot-echo", "payload": {"n": number}}, token)
    failed = _post(f"{served}/api/v1/invoke", {"function_name": "waddlebot-fails", "payload": {"n": 9}}, token)
    assert failed["success"] is False
    time.sleep(1.0)  # the records reach the history within a second

    browser = _browser(tmp_path)
    wait = WebDriverWait(browser, WAIT_SECONDS)
    try:
        browser.get(f"{served}/ui")
        browser.find_element(By.NAME, "client_id").send_keys(CLIENT_ID)
        browser.find_element(By.NAME, "client_secret").send_keys(CLIENT_SECRET)
        browser.find_element(By.CSS_SELECTOR, "#credentials button").click()
        wait.until(lambda page: len(page.find_elements(By.CSS_SELECTOR, "#stats tbody tr")) == 2)

        rows = {
            cells[0].text: [cell.text for cell in cells[1:]]
            for cells in (
                row.find_elements(By.TAG_NAME, "td")
                for row in browser.find_elements(By.CSS_SELECTOR, "#stats tbody tr")
            )
        }
        # calls, succeeded, function errors, throttled, other, success rate
        assert rows["waddlebot-echo"][:6] == ["3", "3", "0", "0", "0", "100.0%"]
        assert rows["waddlebot-fails"][:6] == ["1", "0", "1", "0", "0", "0.0%"]
        total = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#stats tfoot td")]
        assert total[:3] == ["All functions", "4", "3"]
        assert len(browser.find_elements(By.CSS_SELECTOR, "#invocations tbody tr.invocation")) == 4
        assert len(browser.find_elements(By.CSS_SELECTOR, "#chart circle")) == 4
        # The token lives in the tab's session storage, never in the address.
        assert browser.execute_script("return sessionStorage.getItem('lambda-action-token')")
        assert "token" not in browser.current_url

        Select(browser.find_element(By.NAME, "success")).select_by_value("false")
        browser.find_element(By.CSS_SELECTOR, "#filters button").click()
        wait.until(lambda page: len(page.find_elements(By.CSS_SELECTOR, "#invocations tbody tr.invocation")) == 1)
        row = browser.find_element(By.CSS_SELECTOR, "#invocations tbody tr.invocation")
        assert "waddlebot-fails" in row.text
        assert row.get_attribute("data-invocation-id") == failed["invocation_id"]

        row.click()
        detail = wait.until(expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, "tr.detail pre")))
        wait.until(lambda page: "cannot do" in page.find_element(By.CSS_SELECTOR, "tr.detail").text)
        text = browser.find_element(By.CSS_SELECTOR, "tr.detail").text
        assert '"n": 9' in text
        assert "ValueError" in text
        assert detail.is_displayed()
        assert browser.save_screenshot(str(tmp_path / "ui.png"))
    finally:
        browser.quit()
    assert (tmp_path / "ui.png").stat().st_size > 10_000
