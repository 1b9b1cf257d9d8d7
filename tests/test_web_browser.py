"""The support desk in a real browser: Debian's chromium driven by Selenium against `rollout web` on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from rollout.runtime import Runtime

from .web_support import PASSWORD, USER, Desk, build_desk_database, clean_env, running_desk

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def screenshot_dir(tmp_path: Path) -> Path:
    """$ROLLOUT_WEB_SCREENSHOTS if set (to look at them or refresh the docs' picture), else the test's tmp dir."""
    folder = Path(os.environ.get("ROLLOUT_WEB_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def desk(runtime: Runtime, cli_env: dict[str, str]) -> Iterator[Desk]:
    build_desk_database(runtime)
    with running_desk(clean_env(cli_env)) as running:
        yield running


def browser(width: int, language: str) -> WebDriver:
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver must be installed (.ci/run installs them)")
        pytest.skip("chromium / chromedriver not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},1000",
        f"--lang={language}",
        "--no-proxy-server",
    ):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture
def chrome() -> Iterator[WebDriver]:
    driver = browser(1280, "en-GB")
    yield driver
    driver.quit()


def log_in(driver: WebDriver, desk: Desk) -> None:
    driver.get(desk.url + "/")
    assert "/login" in driver.current_url  # no session: the login page
    driver.find_element(By.NAME, "name").send_keys(USER)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    arrive(driver, lambda url: "/login" not in url)


def arrive(driver: WebDriver, where: Callable[[str], bool]) -> None:
    """Wait for the browser to load the next page (a click or submit returns before it has)."""
    WebDriverWait(driver, 15).until(
        lambda d: where(d.current_url) and d.execute_script("return document.readyState") == "complete"
    )


def full_page_screenshot(driver: WebDriver, path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(driver.get_window_size()["width"], min(max(height + 120, 600), 4000))
    driver.save_screenshot(str(path))


def test_support_finds_a_customer_and_sees_the_reply_and_notices(desk: Desk, chrome: WebDriver, tmp_path: Path) -> None:
    """Log in, search an address in another case, reach the customer page: SMTP reply, evidence and notices."""
    shots = screenshot_dir(tmp_path)
    log_in(chrome, desk)
    assert chrome.find_element(By.TAG_NAME, "h1").text == "Overview"
    search = chrome.find_element(By.NAME, "q")
    search.send_keys("aNNA@ACME.example")
    search.submit()
    arrive(chrome, lambda url: "/customer/" in url)
    assert chrome.find_element(By.ID, "customer").text == "K-1: Acme GmbH"
    page = chrome.find_element(By.TAG_NAME, "main").text
    assert "Anna@acme.example" in page.split("bert@acme.example")[0]  # the searched mailbox comes first
    reply = chrome.find_element(By.CSS_SELECTOR, "pre.reply").text
    assert reply.startswith(
        "554 5.7.1 <Anna@acme.example>: Sender address rejected: SMTP-after-POP is switched off for Anna@acme.example"
    )
    assert "Mar 20 10:00:00 mx1 postfix/smtpd[123]: 4ABC: client=dsl-1.example.net[198.51.100.7]" in page
    notices = [row.text for row in chrome.find_elements(By.CSS_SELECTOR, "#notices tbody tr")]
    assert len(notices) == 3 and all("sent" in row and "<rollout.1." in row for row in notices)
    assert "Anna@acme.example, bert@acme.example" in notices[0]
    full_page_screenshot(chrome, shots / "customer.png")
    assert (shots / "customer.png").stat().st_size > 10_000


def test_overview_shows_the_cohort_table_and_the_trend_chart(desk: Desk, chrome: WebDriver, tmp_path: Path) -> None:
    """The overview: phase, next action, both cohorts with their stage and refusals, the waves, an SVG bar per week."""
    shots = screenshot_dir(tmp_path)
    log_in(chrome, desk)
    main = chrome.find_element(By.TAG_NAME, "main").text
    assert "switch-off" in chrome.find_element(By.CSS_SELECTOR, ".phases .current").text
    assert "Next: notify wave 4 at 2026-03-23 09:00" in main
    rows = [r.text for r in chrome.find_elements(By.CSS_SELECTOR, "#cohorts tbody tr")]
    assert rows[0].split()[:4] == ["1", "a–m", "2", "50.0"] and "reject" in rows[0] and rows[0].endswith("3")
    assert "pending" in rows[1]
    values = [t.text for t in chrome.find_elements(By.CSS_SELECTOR, "svg#trend text.value")]
    heights = [
        float(b.get_attribute("height") or -1) for b in chrome.find_elements(By.CSS_SELECTOR, "svg#trend rect.bar")
    ]
    assert values == ["2", "1", "0"]  # anna and bert in the week of T0, nina the week after, then no legacy use
    assert heights[0] > heights[1] > heights[2] == 0
    waves = chrome.find_elements(By.CSS_SELECTOR, "#waves tbody tr")
    assert len(waves) == 6
    full_page_screenshot(chrome, shots / "overview.png")
    chrome.find_element(By.LINK_TEXT, "a–m").click()
    arrive(chrome, lambda url: "/cohort/1" in url)
    assert "Cohort 1 (a–m)" in chrome.find_element(By.TAG_NAME, "h1").text
    chrome.find_element(By.PARTIAL_LINK_TEXT, "Refused since").click()
    arrive(chrome, lambda url: "filter=refused" in url)
    members = [r.text for r in chrome.find_elements(By.CSS_SELECTOR, "#members tbody tr")]
    assert len(members) == 1 and members[0].startswith("Anna@acme.example")


def test_german_browser_in_a_narrow_window_gets_german_and_no_sideways_scrolling(desk: Desk, tmp_path: Path) -> None:
    """A German browser gets the German interface; at 400 px the page fits the window (tables scroll inside)."""
    driver = browser(400, "de-DE")
    try:
        log_in(driver, desk)
        assert driver.find_element(By.TAG_NAME, "h1").text == "Übersicht"
        driver.get(desk.url + "/search?q=nina@home.example")
        assert "Benachrichtigungen an den Kunden" in driver.find_element(By.TAG_NAME, "main").text
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        full_page_screenshot(driver, screenshot_dir(tmp_path) / "customer-narrow-de.png")
    finally:
        driver.quit()
