"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``)
driven by selenium against a real ``baton serve`` process.

Skipped, with the reason, when the browser or its driver is missing (``.ci/run``
installs them). Screenshots of every page go to ``.baton/screenshots/`` at the repository
root (or ``$BATON_SCREENSHOT_DIR``), as the README says.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.server.conftest import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SHOTS = Path(os.environ.get("BATON_SCREENSHOT_DIR") or REPO / ".baton" / "screenshots")

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the test extra installs selenium
    webdriver = None  # type: ignore[assignment]

pytestmark = pytest.mark.skipif(
    webdriver is None or not CHROMIUM or not DRIVER,
    reason="browser tests need selenium and Debian's chromium + chromium-driver (apt-get install -y chromium chromium-driver; .ci/run does it)",
)
ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--window-size=1400,1000", "--disable-dev-shm-usage")


class Server:
    """``baton serve`` in a subprocess on a free port, with its own data folder."""

    def __init__(self, tmp: Path) -> None:
        self.env = {**os.environ, "BATON_CONFIG_DIR": str(REPO / "config"), "BATON_DATA_DIR": str(tmp / "data"), "PYTHONPATH": str(REPO)}
        self.env.pop("BATON_DATABASE_URL", None)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / "serve.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--port", str(self.port)], env=self.env, cwd=tmp,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            self.stop()
            raise AssertionError("baton serve did not start: " + (tmp / "serve.log").read_text()[-2000:])
        self.token = self.cli("token", "create", "web", "--scopes", "runs:read,runs:write").stdout.strip().splitlines()[-1]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "bot.cli", *args], env=self.env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p

    def start_run(self, workflow: str) -> int:
        r = httpx.post(f"{self.url}/api/v1/runs", json={"workflow": workflow, "thread": "browser"},
                       headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must never download a driver or browser
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM  # type: ignore[assignment]
    for a in ARGS:
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: webdriver.Chrome, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def wait(driver: webdriver.Chrome, timeout: float = 20) -> WebDriverWait:
    return WebDriverWait(driver, timeout, poll_frequency=0.1)


def sign_in(driver: webdriver.Chrome, server: Server) -> None:
    driver.get(f"{server.url}/")
    assert "/login" in driver.current_url
    shot(driver, "login")
    driver.find_element(By.ID, "token").send_keys(server.token)
    driver.find_element(By.ID, "sign-in").click()
    wait(driver).until(ec.presence_of_element_located((By.ID, "run-rows")))
    assert "api:web" in driver.page_source


def attr(driver: webdriver.Chrome, element_id: str, name: str) -> str:
    """An attribute read in one script call (htmx may swap the element between two WebDriver calls)."""
    return driver.execute_script("var e = document.getElementById(arguments[0]); return e ? e.getAttribute(arguments[1]) || '' : ''", element_id, name)


def text_of(driver: webdriver.Chrome, element_id: str) -> str:
    return driver.execute_script("var e = document.getElementById(arguments[0]); return e ? e.textContent : ''", element_id)


def step_class(driver: webdriver.Chrome, node_id: str) -> str:
    return attr(driver, f"step-{node_id}", "class")


def click(driver: webdriver.Chrome, element_id: str) -> None:
    """Click an element, finding it again if an htmx swap replaced it in between."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            wait(driver).until(ec.element_to_be_clickable((By.ID, element_id))).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"#{element_id} kept being replaced")


def run_status(driver: webdriver.Chrome) -> str:
    return attr(driver, "run-status", "data-status")


def test_sign_in_and_watch_a_run_succeed_without_reload(server: Server, browser: webdriver.Chrome) -> None:
    sign_in(browser, server)
    run_id = server.start_run("sleep 2 THEN echo browser says hi")
    # the runs list shows the new run without a reload (SSE → htmx refresh)
    browser.execute_script("window.__noReload = 1")
    wait(browser).until(ec.presence_of_element_located((By.ID, f"run-{run_id}")))
    assert browser.execute_script("return window.__noReload") == 1
    browser.get(f"{server.url}/runs/{run_id}")
    browser.execute_script("window.__noReload = 1")
    assert "status-succeeded" not in step_class(browser, "s2")
    wait(browser).until(lambda d: "status-succeeded" in step_class(d, "s2"))
    assert browser.execute_script("return window.__noReload") == 1, "the page was reloaded"
    assert "✓ succeeded" in text_of(browser, "step-s2")
    wait(browser).until(lambda d: run_status(d) == "succeeded")
    shot(browser, "run")
    browser.get(f"{server.url}/")
    wait(browser).until(ec.presence_of_element_located((By.ID, f"run-{run_id}")))
    shot(browser, "runs")


def test_cancel_a_running_run_with_the_button(server: Server, browser: webdriver.Chrome) -> None:
    sign_in(browser, server)
    run_id = server.start_run("sleep 60 THEN echo never")
    browser.get(f"{server.url}/runs/{run_id}")
    # (an idempotent step's "running" state is not checkpointed, so s1 shows pending until it ends)
    wait(browser).until(lambda d: run_status(d) == "running")
    assert "status-succeeded" not in step_class(browser, "s1")
    # no refresh loop: while nothing changes, the run's body is not swapped again
    browser.execute_script("window.__swaps = 0; document.body.addEventListener('htmx:afterSwap', function () { window.__swaps++; })")
    # let the refreshes of the queued → running change land: until no swap for 2 s (at most 15 s)
    last, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + 15
    while time.monotonic() - quiet_since < 2.0:
        assert time.monotonic() < deadline, "the run's body kept refreshing while nothing changed"
        n = browser.execute_script("return window.__swaps")
        if n != last:
            last, quiet_since = n, time.monotonic()
        time.sleep(0.1)
    assert last <= 2  # the connect refresh and the running status, nothing more
    click(browser, "cancel-run")
    wait(browser).until(ec.alert_is_present()).accept()  # "Cancel run #N?"
    wait(browser).until(lambda d: run_status(d) == "cancelled")
    wait(browser).until(lambda d: f"Run #{run_id} cancelled." in text_of(d, "flash"))
    shot(browser, "run-cancelled")
    r = httpx.get(f"{server.url}/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {server.token}"})
    assert r.json()["status"] == "cancelled"


def test_workflow_graph_and_positioned_error(server: Server, browser: webdriver.Chrome) -> None:
    sign_in(browser, server)
    browser.get(f"{server.url}/workflows")
    browser.find_element(By.ID, "wf-ops-check").click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#workflow-graph svg")))
    for node in ("s1.disk.usage", "s1.report.load", "s1.health.http", "s1.disk-alert"):
        assert browser.find_element(By.ID, f"step-{node}").is_displayed()
    shot(browser, "workflow")
    browser.get(f"{server.url}/workflows")
    box = browser.find_element(By.ID, "check-text")
    box.send_keys("echo a THEN")
    box.send_keys("\nAND b")
    browser.find_element(By.ID, "check-button").click()
    err = wait(browser).until(ec.visibility_of_element_located((By.ID, "check-error")))
    assert "Line 2, column 1: expected a step, got 'AND'" in err.text and "^" in err.text
    shot(browser, "workflows-check-error")
    box = browser.find_element(By.ID, "check-text")
    box.clear()
    box.send_keys("disk-check AND echo b THEN IF_FAILURE echo fix")
    browser.find_element(By.ID, "check-button").click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#check-graph svg")))
    shot(browser, "workflows")


def test_screenshots_of_the_other_pages(server: Server, browser: webdriver.Chrome) -> None:
    sign_in(browser, server)
    run_id = server.start_run("echo one AND echo two THEN fail on purpose")
    httpx.post(f"{server.url}/api/v1/schedules", json={"phrase": "every weekday at 9am run disk-check"},
               headers={"Authorization": f"Bearer {server.token}"}, timeout=10).raise_for_status()
    deadline = time.monotonic() + 20
    while httpx.get(f"{server.url}/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {server.token}"}).json()["status"] not in ("failed", "succeeded"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for path, name, needle in [
        ("/schedules", "schedules", "every weekday"),
        ("/threads", "threads", "api:web:browser"),
        ("/stats", "stats", "Per workflow"),
    ]:
        browser.get(server.url + path)
        wait(browser).until(lambda d, n=needle: n.lower() in d.page_source.lower())
        shot(browser, name)
    browser.get(f"{server.url}/threads")
    browser.find_element(By.PARTIAL_LINK_TEXT, "api:web:browser").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "context")))
    shot(browser, "thread")
    browser.get(f"{server.url}/runs/{run_id}")
    wait(browser).until(lambda d: "status-failed" in step_class(d, "s4") or "status-failed" in step_class(d, "s3"))
    shot(browser, "run-failed")
