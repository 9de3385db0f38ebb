"""The web console in a real headless browser (Debian's chromium through Selenium, nothing
downloaded) against the real daemon: a ticket login, a streamed reply, stopping one, the live
charts moving, models, tokens created and revoked, at 360 px and in dark mode, with no console
error or CSP violation. The screenshots in docs/console/ come from this run."""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT
from tests.fixtures.daemon import (
    RunningDaemon,
    chat_store_env,
    llamahomed,
    start_daemon,
)

pytestmark = pytest.mark.e2e
CHAT_MODEL = "smollm2-135m-instruct"
SHOTS = ROOT / "docs" / "console"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, smollm2_file: Path,
           tiny_model_file: Path) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("console-daemon")
    env = chat_store_env(root, smollm2_file, tiny_model_file)
    with start_daemon(root / "daemon", env) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("chromium and chromedriver are needed (scripts/install test installs "
                    "Debian's chromium and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Callable[[], Any], timeout: float = 180, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # noqa: BLE001 - the page is still changing
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or condition}; page text:\n"
                         f"{driver.find_element('tag name', 'body').text[:3000]}\n"
                         f"browser log: {driver.get_log('browser')}")


def by_id(driver: Any, name: str) -> Any:
    return driver.find_element("id", name)


def set_value(driver: Any, name: str, value: str) -> None:
    """Replace a field's value (``clear()`` does not empty number inputs reliably)."""
    field = by_id(driver, name)
    driver.execute_script("arguments[0].value = arguments[1]", field, value)
    assert field.get_attribute("value") == value


def shot(driver: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def problems(driver: Any) -> list[str]:
    """Console errors and CSP violations the page logged so far (read once: the log drains)."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" or "Content Security Policy" in entry["message"]]


@pytest.fixture(scope="module")
def console(daemon: RunningDaemon, browser: Any) -> Any:
    """The console, logged in the way a person does it: ``llamahomed ui`` prints the address."""
    done = llamahomed("ui", "--no-browser", env=daemon.env)
    assert done.returncode == 0, done.stderr
    address = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"{re.escape(daemon.url)}/ui/#ticket=[\w-]+", address), address
    browser.get(address)
    wait(browser, lambda: by_id(browser, "nav").is_displayed()
         and not by_id(browser, "page-playground").get_attribute("hidden"),
         what="the logged-in console")
    return browser


def test_a_ticket_logs_in_once_and_leaves_the_address_bar(console: Any,
                                                          daemon: RunningDaemon) -> None:
    assert "#" not in console.current_url and "ticket" not in console.current_url
    token = console.execute_script("return sessionStorage.getItem('llamahome.console.token')")
    assert token
    assert requests.get(f"{daemon.url}/api/v1/status", timeout=10,
                        headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert console.execute_script("return document.cookie") == ""  # no cookie auth
    assert problems(console) == []


def test_a_reply_streams_with_its_numbers(console: Any) -> None:
    console.find_element("css selector", "nav button[data-page='playground']").click()
    wait(console, lambda: by_id(console, "pg-model").get_attribute("value") == CHAT_MODEL,
         what="the chat model selected first")
    set_value(console, "pg-temperature", "0")
    set_value(console, "pg-max-tokens", "24")
    by_id(console, "pg-prompt").send_keys("What is the capital of France?\n")  # Enter sends
    reply = wait(console, lambda: console.find_element(
        "css selector", "#pg-transcript li.assistant .stats").text, what="a reply")
    stats = wait(console, lambda: (lambda t: t if "tok/s" in t else None)(console.find_element(
        "css selector", "#pg-transcript li.assistant .stats").text), what="the reply's numbers")
    assert re.search(r"\d+ tokens · TTFT \d+ ms · [\d.–]+ tok/s", stats), stats
    text = console.find_element("css selector", "#pg-transcript li.assistant .text").text
    assert text.strip(), reply
    shot(console, "playground")
    # the conversation continues with its history (the second turn sees the first)
    by_id(console, "pg-prompt").send_keys("And of Italy?\n")
    wait(console, lambda: len([e for e in console.find_elements(
        "css selector", "#pg-transcript li.assistant .stats") if "tok/s" in e.text]) == 2,
         what="the second reply")
    assert problems(console) == []


def test_stop_ends_a_reply_being_written(console: Any) -> None:
    by_id(console, "pg-clear").click()
    set_value(console, "pg-max-tokens", "3000")
    by_id(console, "pg-prompt").send_keys("Tell a very long story about the sea, in many parts.\n")
    wait(console, lambda: len(console.find_element(
        "css selector", "#pg-transcript li.assistant .text").text) > 30, what="streamed text")
    assert by_id(console, "pg-stop").is_enabled()
    by_id(console, "pg-stop").click()
    stats = wait(console, lambda: (lambda t: t if "cancelled" in t else None)(console.find_element(
        "css selector", "#pg-transcript li.assistant .stats").text), timeout=60, what="cancelled")
    tokens = int(stats.split(" tokens")[0])
    assert 0 < tokens < 3000
    assert not by_id(console, "pg-stop").is_enabled()
    assert problems(console) == []


def test_the_live_charts_move_after_requests(console: Any, daemon: RunningDaemon) -> None:
    console.find_element("css selector", "nav button[data-page='live']").click()
    canvas = "canvas[data-series='tps']"
    wait(console, lambda: int(console.find_element("css selector", canvas)
                              .get_attribute("data-points") or 0) >= 2, what="two readings")

    answers: list[int] = []

    def generate() -> None:
        answers.append(requests.post(
            f"{daemon.url}/api/v1/process", headers=daemon.headers, timeout=600,
            json={"model": CHAT_MODEL, "prompt": "Count from one to fifty.", "max_tokens": 60,
                  "temperature": 0}).status_code)

    worker = threading.Thread(target=generate)
    worker.start()
    rate = wait(console, lambda: float(console.find_element("css selector", canvas)
                                       .get_attribute("data-last") or 0) > 0,
                what="tokens per second above zero")
    worker.join()
    assert rate and answers == [200]
    ram = console.find_element("css selector", "output[data-series='ram']").text
    assert ram.endswith("%") and float(ram.rstrip(" %")) > 0
    shot(console, "live")
    assert problems(console) == []


def test_models_show_the_plan_and_load_and_unload(console: Any) -> None:
    console.find_element("css selector", "nav button[data-page='models']").click()
    row = f"tr[data-model='{CHAT_MODEL}']"
    wait(console, lambda: "loaded" in console.find_element("css selector", f"{row} .state").text,
         what="the chat model loaded")
    console.find_element("css selector", f"button[aria-label='Details {CHAT_MODEL}']").click()
    detail = wait(console, lambda: by_id(console, "model-detail").is_displayed()
                  and by_id(console, "model-detail"), what="details")
    assert "Planned:" in detail.text and detail.find_elements("css selector", "ul.reasons li")
    shot(console, "models")
    console.find_element("css selector", "button[aria-label='Load tiny-llama']").click()
    wait(console, lambda: console.find_element(
        "css selector", "tr[data-model='tiny-llama'] .state").text.startswith("loaded"),
         what="tiny-llama loaded")
    console.find_element("css selector", "button[aria-label='Unload tiny-llama']").click()
    wait(console, lambda: console.find_element(
        "css selector", "tr[data-model='tiny-llama'] .state").text == "not loaded",
         what="tiny-llama unloaded")
    assert problems(console) == []


def test_tokens_are_created_shown_once_and_revoked(console: Any, daemon: RunningDaemon) -> None:
    console.find_element("css selector", "nav button[data-page='tokens']").click()
    by_id(console, "token-user").send_keys("carol")
    console.find_element("css selector", "#token-form button[type='submit']").click()
    token = wait(console, lambda: by_id(console, "token-value").text, what="the new token")
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{daemon.url}/v1/models", headers=headers, timeout=10).status_code == 200
    row = wait(console, lambda: next((r for r in console.find_elements(
        "css selector", "#tokens-table tbody tr") if "carol" in r.text), None), what="carol's row")
    shot(console, "tokens")
    row.find_element("css selector", "button.danger").click()
    console.switch_to.alert.accept()
    wait(console, lambda: any("carol" in r.text and "revoked" in r.text for r in
                              console.find_elements("css selector", "#tokens-table tbody tr")),
         what="revoked")
    assert requests.get(f"{daemon.url}/v1/models", headers=headers, timeout=10).status_code == 401
    console.find_element("css selector", "nav button[data-page='playground']").click()
    assert by_id(console, "token-value").text == ""  # shown once: gone after leaving the page
    assert problems(console) == []


def test_it_works_at_360_px_and_in_dark_mode(console: Any) -> None:
    console.set_window_size(360, 800)
    try:
        for page in ("playground", "models", "live", "tokens"):
            console.find_element("css selector", f"nav button[data-page='{page}']").click()
            time.sleep(0.3)
            width = console.execute_script("return document.documentElement.scrollWidth")
            assert width <= 360 + 1, f"{page} is {width} px wide at 360"
        console.find_element("css selector", "nav button[data-page='playground']").click()
        shot(console, "playground-360px")
    finally:
        console.set_window_size(1280, 900)
    console.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    background = console.execute_script(
        "return getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(20, 22, 21)", background
    shot(console, "playground-dark")
    console.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    assert problems(console) == []


def test_logging_out_forgets_the_token(console: Any) -> None:
    by_id(console, "logout").click()
    assert by_id(console, "login").is_displayed()
    assert console.execute_script(
        "return sessionStorage.getItem('llamahome.console.token')") is None
