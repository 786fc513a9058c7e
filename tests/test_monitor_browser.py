"""The monitor's page in a real headless Chromium (Debian's, through Selenium).

The monitor, a trivy agent sending telemetry and a real ivy-python agent
share a private bus; the browser opens the page and the test reads and
drives it as a user would. Selenium is blocking: each browser step runs in
a thread, while the bus runs in the test's trio loop.

The documentation's screenshot comes from this test:
``TRIVY_MONITOR_SCREENSHOT=docs/_static/monitor.png python -m pytest
tests/test_monitor_browser.py``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

import trivy
from trivy.monitor import MonitorOptions, run_monitor
from trivy.monitor._model import SUBSCRIPTIONS_SHOWN
from trivy.testing import ivy_python_agent, wait_for_subscription

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    NoAlertPresentException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)
TIMEOUT = 60
T = TypeVar("T")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(argument)  # fmt: skip
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


async def in_browser(step: Callable[[], T]) -> T:
    """One blocking browser step, off the trio loop."""
    return await trio.to_thread.run_sync(step)


def until(driver: Any, condition: Callable[[Any], Any]) -> Any:
    """Wait (in the browser's thread) until the page shows what ``condition`` wants."""
    wait = WebDriverWait(
        driver, 20, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]
    )
    return wait.until(condition)


def click(driver: Any, selector: str) -> None:
    """Click an element, found again if the page redrew it meanwhile."""

    def clicked(d: Any) -> bool:
        d.find_element(By.CSS_SELECTOR, selector).click()
        return True

    until(driver, clicked)


def text_of(driver: Any, selector: str) -> str:
    return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, selector))


async def telemetry(bus: trivy.IvyBus) -> None:
    """A busy bus: positions, speeds and altitudes, 20 times a second (from
    0.3 s on: a text at once would pass for the agent's ready message)."""
    await trio.sleep(0.3)
    i = 0
    while True:
        await bus.send(f"POS {i % 100} {50 + (i % 37) * 0.5:.1f} fix")
        await bus.send(f"SPEED {12 + (i % 9)}")
        await bus.send(f"ALT {300 + (i % 50) * 2}")
        i += 1
        await trio.sleep(0.05)


async def test_the_page_shows_the_bus_and_drives_it(bus: str, browser: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            ivy_python_agent(bus, "PYGPS", bind=[r"^GOTO (\S+)"], ready_message="GPS ready") as py,
            trivy.open_ivy_bus("TRACKER", bus) as tracker,
            trio.open_nursery() as nursery,
        ):
            monitor = await nursery.start(run_monitor, MonitorOptions(bus=bus, port=0))
            goto = tracker.subscribe(r"^GOTO (\S+)")
            for i in range(SUBSCRIPTIONS_SHOWN + 2):  # (the page says how many more)
                tracker.subscribe(f"^MORE{i}$")
            await wait_for_subscription(tracker, "TRIVYMONITOR", "^(.*)$")
            nursery.start_soon(telemetry, tracker)
            await in_browser(lambda: browser.get(monitor.url))

            # agents and their subscriptions
            def agents_shown(d: Any) -> bool:
                shown = text_of(d, "#agents tbody")
                wanted = ("PYGPS", "TRACKER", r"^GOTO (\S+)", "GPS ready", "and 3 more")
                return all(t in shown for t in wanted)

            await in_browser(lambda: until(browser, agents_shown))
            # kinds with their rates, once measured
            rate = '#kinds tr[data-kind="POS"] td:nth-child(3)'
            await in_browser(lambda: until(browser, lambda d: text_of(d, rate) not in ("", "0")))
            assert float(await in_browser(lambda: text_of(browser, rate))) > 0
            # a plotted series
            field = '#kinds tr[data-kind="ALT"] button[data-series="ALT#1"]'
            await in_browser(lambda: click(browser, field))
            points = "return chart ? chart.data[0].length : 0"
            await in_browser(lambda: until(browser, lambda d: d.execute_script(points) > 3))
            assert "ALT#1" in await in_browser(lambda: text_of(browser, ".u-legend"))
            # each agent's rate, measured every second, plotted the same way
            agent_rate = '#agents tr[data-agent="TRACKER"] td.rate'
            await in_browser(
                lambda: until(browser, lambda d: float(text_of(d, agent_rate).split()[0]) > 0)
            )
            await in_browser(lambda: click(browser, agent_rate + " button"))
            legend = await in_browser(
                lambda: until(
                    browser,
                    lambda d: (
                        "rate:TRACKER#1" in text_of(d, ".u-legend") and text_of(d, ".u-legend")
                    ),
                )
            )
            assert "ALT#1" in legend
            # a page that reconnects (closed by the server, or behind: a
            # snapshot) gets the points it missed meanwhile in its plots
            cut = time.time()
            for viewer in monitor.feed.viewers:
                viewer.scope.cancel()  # (the browser is back about 3 s later)
            gaps = """
                const times = series.get("ALT#1").points.map((p) => p[0]);
                if (times[times.length - 1] < arguments[1]) return null;
                let widest = 0;
                for (let i = 1; i < times.length; i++) {
                  if (times[i] > arguments[0]) widest = Math.max(widest, times[i] - times[i - 1]);
                }
                return widest;
            """
            widest = await in_browser(
                lambda: until(browser, lambda d: d.execute_script(gaps, cut - 1, cut + 5))
            )
            assert widest < 1.0, widest  # (its 3 s away, without the reload)
            # the tail
            await in_browser(lambda: until(browser, lambda d: "SPEED" in text_of(d, "#tail")))
            if target := os.environ.get("TRIVY_MONITOR_SCREENSHOT"):
                await in_browser(lambda: browser.save_screenshot(target))

            # sending from the page reaches the agents
            def send(text: str) -> None:
                box = browser.find_element(By.ID, "send-text")
                box.clear()
                box.send_keys(text)
                click(browser, "#send-form button")

            await in_browser(lambda: send("GOTO home"))
            msg = await py.expect("msg")
            assert (msg["sender"], msg["groups"]) == ("TRIVYMONITOR", ["home"])
            assert (await goto.receive()).groups == ("home",)

            # DIE asks first: dismissed, nothing; accepted, the agent leaves
            die = '#agents tr[data-agent="PYGPS"] button.die'

            def answer_die(accept: bool) -> None:
                click(browser, die)
                alert = until(browser, lambda d: d.switch_to.alert)
                assert "PYGPS" in alert.text
                alert.accept() if accept else alert.dismiss()

            await in_browser(lambda: answer_die(False))
            await in_browser(lambda: send("GOTO still"))  # (after the dismissal, in order)
            assert (await goto.receive()).groups == ("still",)
            assert monitor.bus.peer("PYGPS") is not None
            async with monitor.bus.events() as events:
                await in_browser(lambda: answer_die(True))
                while monitor.bus.peer("PYGPS") is not None:
                    await events.receive()

            # another origin (localhost is not 127.0.0.1 to a browser) cannot send
            port = monitor.url.split(":")[2].rstrip("/")
            await in_browser(lambda: browser.get(f"http://localhost:{port}/"))
            tried = """
                const done = arguments[arguments.length - 1];
                fetch(arguments[0], {method: "POST", body: '{"text": "GOTO evil"}'})
                  .then((r) => done(r.status), (e) => done(String(e)));
            """
            target = f"http://127.0.0.1:{port}/api/send"
            outcome = await in_browser(lambda: browser.execute_async_script(tried, target))
            assert outcome != 200, outcome
            await in_browser(lambda: send("GOTO marker"))  # (from its own origin: sent)
            assert (await goto.receive()).groups == ("marker",)  # (no "evil" before it)
            with pytest.raises(NoAlertPresentException):
                await in_browser(lambda: browser.switch_to.alert.text)
            nursery.cancel_scope.cancel()


async def test_without_the_token_the_page_is_refused(bus: str, browser: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            options = MonitorOptions(bus=bus, port=0, token="s3cret")
            monitor = await nursery.start(run_monitor, options)
            bare = monitor.url.split("?")[0]
            for wrong in (bare, bare + "?token=wrong"):
                await in_browser(lambda: browser.get(wrong))  # noqa: B023
                said = await in_browser(lambda: browser.find_element(By.TAG_NAME, "body").text)
                assert "a token is needed" in said
            await in_browser(lambda: browser.get(monitor.url))
            await in_browser(lambda: until(browser, lambda d: text_of(d, "#status") == "live"))
            nursery.cancel_scope.cancel()
