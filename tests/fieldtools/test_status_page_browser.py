"""The status page in a real headless Chromium (Debian's chromium + chromium-driver, via Selenium):
a running gateway polls a simulated building; the page groups devices by floor, shows the smoke
alarm, refreshes live when a device goes offline, fits a phone screen; screenshots are saved under
test-artifacts/ for people to look at."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from citynerve.gateway.runtime import Gateway
from citynerve.gateway.web import StatusServer, WebConfig
from citynerve.hil.sim.modbus import ModbusBuilding

from .conftest import REPO, wait_for

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


@pytest.fixture(scope="module")
def chromium() -> Iterator[webdriver.Chrome]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail(
            "Debian chromium and chromium-driver are needed: apt-get install chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: webdriver.Chrome) -> Iterator[webdriver.Chrome]:
    """The module's Chromium on a blank page before and after each test: a page left open by the
    previous test keeps polling its port, and a later test's server may get that port again; a
    401 with WWW-Authenticate there opens a login prompt that blocks the renderer."""
    chromium.get("about:blank")
    yield chromium
    chromium.get("about:blank")


def _text(driver: webdriver.Chrome, css: str) -> str:
    """The rendered text of the element `css` matches, read in one script: the page redraws at
    every refresh, so an element found in one WebDriver call may be gone by the next."""
    text = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e && e.innerText", css
    )
    assert text is not None, f"nothing matches {css}"
    return str(text)


def _bus_rows(driver: webdriver.Chrome) -> list[dict[str, str]]:
    """The bus table as the technician reads it: each row's cells under their column headings."""
    # One script reads it all: the page redraws the rows at every refresh.
    heads, rows = driver.execute_script(
        "const t = (es) => [...es].map(e => e.textContent);"
        "return [t(document.querySelectorAll('#buses thead th')),"
        " [...document.querySelectorAll('#buses tbody tr')].map(tr => t(tr.children))];"
    )
    out = []
    for cells in rows:
        assert len(cells) == len(heads), (heads, cells)
        out.append(dict(zip(heads, cells, strict=True)))
    return out


async def _on_page(driver: webdriver.Chrome, fn: object) -> object:
    # WebDriver calls block: keep them off the event loop so the gateway goes on polling.
    return await asyncio.to_thread(fn)  # type: ignore[arg-type]


def _off_loop(predicate: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    """A WebDriver predicate for `wait_for`, run in a thread: the event loop it would block serves
    the page's own requests and polls the building while Chromium answers."""
    return lambda: asyncio.to_thread(predicate)


async def test_status_page_live_in_chromium(
    gateway: Gateway, building: ModbusBuilding, browser: webdriver.Chrome
) -> None:
    building.trigger_smoke(11)
    await wait_for(lambda: len(gateway.alarms) > 0)
    cfg = WebConfig(enabled=True, port=0, refresh_s=0.5)
    async with StatusServer(cfg, gateway) as server:
        url = f"http://127.0.0.1:{server.port}/"
        await asyncio.to_thread(browser.get, url)
        await wait_for(
            _off_loop(lambda: browser.execute_script("return document.body.dataset.loaded") == "1")
        )

        # Every configured device is on the page, grouped by building and floor, basement first.
        await wait_for(_off_loop(lambda: _text(browser, "#devices-online") == "5 / 5"), 10)
        groups = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".group h3")]
        assert groups == ["7 · floor B1", "7 · floor 1", "7 · floor 2", "7 · floor 3"]
        cards = browser.find_elements(By.CSS_SELECTOR, ".card")
        assert sorted(str(c.get_attribute("data-device")) for c in cards) == [
            "em-1",
            "sd-11",
            "sd-12",
            "wm-2",
            "wm-3",
        ]

        # The smoke alarm: the tile, the list and the detector's card.
        # As many as the gateway's registry holds (a rule pack may raise more than one per detector).
        active = gateway.alarms.active()
        assert active and {a.device_id for a in active} == {"sd-11"}
        assert _text(browser, "#alarm-count") == str(len(active))
        assert "sd-11" in _text(browser, "#alarms")
        assert "CRITICAL" in _text(browser, "#alarms").upper()
        sd11 = browser.find_element(By.CSS_SELECTOR, '.card[data-device="sd-11"]')
        assert "alarm" in (sd11.get_attribute("class") or "")

        # Last readings with units; the outbox and the bus table.
        em = _text(browser, '.card[data-device="em-1"]')
        assert "voltage_a" in em and " V" in em
        assert "rows" in _text(browser, "#outbox-depth")
        # The bus table, read by its headings: each value under its own column.
        (bus,) = _bus_rows(browser)
        assert bus["bus"] == "tcp-1" and bus["protocol"] == "modbus_tcp", bus
        assert bus["channel"] == "open", bus
        assert bus["verdict"] == "ok", bus
        assert bus["transactions"].isdigit() and int(bus["transactions"]) > 0, bus
        assert bus["errors"].isdigit(), bus
        assert re.fullmatch(r"[\d.]+ ms", bus["latency"]), bus
        assert _text(browser, "#uplink-state") == "off"

        ARTIFACTS.mkdir(exist_ok=True)
        await asyncio.to_thread(browser.save_screenshot, str(ARTIFACTS / "status-page-desktop.png"))

        # Live refresh: a water meter is unplugged; the page shows it offline without a reload.
        building.silence(3)
        await wait_for(
            _off_loop(lambda: "offline" in _text(browser, '.card[data-device="wm-3"] .badge')),
            15,
            interval_s=0.2,
        )
        assert _text(browser, "#devices-online") == "4 / 5"
        assert "bad" in (browser.find_element(By.ID, "tile-devices").get_attribute("class") or "")

        # A phone: one column, nothing wider than the screen.
        await asyncio.to_thread(browser.set_window_size, 390, 844)
        await asyncio.sleep(0.3)
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"page is {overflow}px wider than a phone screen"
        lefts = {c.location["x"] for c in browser.find_elements(By.CSS_SELECTOR, ".group:first-child .card")}
        assert len(lefts) == 1
        await asyncio.to_thread(browser.save_screenshot, str(ARTIFACTS / "status-page-phone.png"))
        await asyncio.to_thread(browser.set_window_size, 1280, 1000)

        # No request left the machine: the page loads only its own files.
        resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(r.startswith(f"http://127.0.0.1:{server.port}/") for r in resources), resources


async def test_page_works_behind_the_password(
    gateway: Gateway, browser: webdriver.Chrome, short_dir: Path
) -> None:
    secret = short_dir / "web.pw"
    secret.write_text("s3cret-meter-room\n")
    cfg = WebConfig(enabled=True, bind="127.0.0.1", port=0, password_file=secret, refresh_s=0.5)
    async with StatusServer(cfg, gateway) as server:
        base = f"http://127.0.0.1:{server.port}"

        def fetch(headers: dict[str, str]) -> int:
            req = urllib.request.Request(base + "/api/status", headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    return int(resp.status)
            except urllib.error.HTTPError as err:
                return int(err.code)

        assert await asyncio.to_thread(fetch, {}) == 401
        wrong = base64.b64encode(b"citynerve:guess").decode()
        assert await asyncio.to_thread(fetch, {"Authorization": f"Basic {wrong}"}) == 401

        # The browser sends the credentials (as after the login prompt); the page and its live
        # refresh work with them. (A headless browser cannot answer the prompt itself.)
        token = base64.b64encode(b"citynerve:s3cret-meter-room").decode()
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )
        try:
            await asyncio.to_thread(browser.get, base + "/")
            await wait_for(
                _off_loop(lambda: browser.execute_script("return document.body.dataset.loaded") == "1")
            )
            assert _text(browser, "#gw-id") == "gw-test-0001"
            n = server.requests
            await wait_for(lambda: server.requests >= n + 2, 10)  # still refreshing, still allowed
            assert browser.find_element(By.ID, "error").is_displayed() is False
        finally:
            browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})


async def test_page_shows_each_destination(
    short_dir: Path, building: ModbusBuilding, browser: webdriver.Chrome
) -> None:
    """Two destinations, the district's broker down: the uplink tile names both and warns, and shows
    the district's backlog (its own figure from the status: it only grows while its broker is down,
    so the page's figure lies between the status read before it and the one after)."""
    from citynerve.gateway.config import load_config
    from citynerve.hil.platform import MosquittoBroker

    from .conftest import gateway_toml, run_gateway

    broker = MosquittoBroker(workdir=short_dir)
    broker.start()
    try:
        host, port = building.endpoint
        path = short_dir / "gateway.toml"
        extra = f"""
[[upstream]]
id = "city"
brokers = ["{broker.url}"]

[[upstream]]
id = "district"
brokers = ["mqtt://127.0.0.1:9"]
"""
        # readings reach the outbox (the district's backlog) within 0.2 s, not the default 5 s
        fast = gateway_toml(host, port).replace(
            'synchronous = "normal"', 'synchronous = "normal"\ncommit_interval_ms = 200'
        )
        path.write_text(fast + extra)
        async with run_gateway(load_config(path)) as gateway:
            cfg = WebConfig(enabled=True, port=0, refresh_s=0.5)
            async with StatusServer(cfg, gateway) as server:
                await asyncio.to_thread(browser.get, f"http://127.0.0.1:{server.port}/")
                # (the city's uplink may still be connecting when the page first shows the district)
                await wait_for(
                    _off_loop(
                        lambda: {"district DOWN", "city up"} <= _words(_text(browser, "#uplink-detail"))
                    ),
                    20,
                    interval_s=0.2,
                )
                assert "warn" in (browser.find_element(By.ID, "tile-uplink").get_attribute("class") or "")
                api = f"http://127.0.0.1:{server.port}/api/status"

                async def district_queued() -> int:
                    return _queued(await asyncio.to_thread(_json, api))

                await wait_for(district_queued, 20, interval_s=0.2)  # the building's readings wait
                low = await district_queued()

                async def page_caught_up() -> bool:
                    return _page_queued(await asyncio.to_thread(_text, browser, "#uplink-detail")) >= low

                await wait_for(page_caught_up, 20, interval_s=0.2)
                shown = _page_queued(_text(browser, "#uplink-detail"))
                high = await district_queued()
                assert low <= shown <= high, (low, shown, high)
    finally:
        broker.close()


def _json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def _queued(status: dict[str, Any]) -> int:
    """The district's backlog (rows, both lanes) in the page's status JSON."""
    return sum(status["uplink"]["destinations"]["district"]["backlog"].values())


def _page_queued(detail: str) -> int:
    """The district's backlog as the page shows it: `district DOWN (1234 queued)`, or 0."""
    found = re.search(r"district DOWN \((\d+) queued\)", detail)
    return int(found.group(1)) if found else 0


def _words(detail: str) -> set[str]:
    """`city up`, `district DOWN`, ... as the uplink tile names each destination."""
    return set(re.findall(r"\b\w+ (?:up|DOWN)\b", detail))


async def test_uplink_down_is_said_in_words(
    short_dir: Path, building: ModbusBuilding, browser: webdriver.Chrome
) -> None:
    """The only broker refuses connections: the uplink tile says the link is down and retrying, in
    words, not the state's identifier (`backing_off`), on a red tile."""
    from citynerve.gateway.config import load_config

    from .conftest import gateway_toml, run_gateway

    host, port = building.endpoint
    path = short_dir / "gateway.toml"
    path.write_text(
        gateway_toml(host, port) + '\n[[upstream]]\nid = "city"\nbrokers = ["mqtt://127.0.0.1:9"]\n'
    )
    cfg = WebConfig(enabled=True, port=0, refresh_s=0.5)
    async with run_gateway(load_config(path)) as gateway, StatusServer(cfg, gateway) as server:
        await asyncio.to_thread(browser.get, f"http://127.0.0.1:{server.port}/")

        async def shown() -> str:
            text = await asyncio.to_thread(
                browser.execute_script, "return document.getElementById('uplink-state').textContent"
            )
            return str(text)

        await wait_for(lambda: _retrying(shown()), 20, interval_s=0.2)
        assert "bad" in (browser.find_element(By.ID, "tile-uplink").get_attribute("class") or "")


async def _retrying(text: Awaitable[str]) -> bool:
    shown = await text
    assert "_" not in shown, shown  # never an identifier such as backing_off
    return shown == "down, retrying"
