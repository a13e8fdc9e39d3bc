"""The commissioning report of a running gateway on a simulated building: every device with its
identification evidence, first values, bus statistics and open items, as --json and as one HTML page
looked at in a real headless Chromium on a phone-sized screen and printed to PDF."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

from click.testing import CliRunner
from selenium import webdriver
from selenium.webdriver.common.by import By

from citynerve.gateway.cli import main
from citynerve.gateway.runtime import Gateway
from citynerve.hil.sim.modbus import ModbusBuilding

from .conftest import wait_for
from .test_status_page_browser import ARTIFACTS, browser, chromium

__all__ = ["browser", "chromium"]  # the module-scoped Chromium, blank for each test


def _report(config_path: Path, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["report", "-c", str(config_path), *args], catch_exceptions=False)
    return r.exit_code, r.output


async def test_report_json_and_html_in_chromium(
    gateway: Gateway, building: ModbusBuilding, config_path: Path, browser: webdriver.Chrome
) -> None:
    building.silence(12)

    def read_and_offline() -> bool:
        devs = {d["id"]: d for d in gateway.owners["tcp-1"].snapshot()["devices"]}
        return devs["sd-12"]["online"] is False and all(
            gateway.pipeline is not None and gateway.pipeline.latest(i)
            for i in ("em-1", "wm-2", "wm-3", "sd-11")
        )

    await wait_for(read_and_offline, 20.0)
    code, out = await asyncio.to_thread(_report, config_path, "--json")
    assert code == 1, out  # open items: exit 1
    data = json.loads(out)
    assert data["running"] is True
    devices = {d["id"]: d for d in data["devices"]}
    assert list(devices) == ["em-1", "wm-2", "wm-3", "sd-11", "sd-12"]
    em = devices["em-1"]
    assert em["identified"] and em["score"] >= 6 and not [o for o in em["open"] if "check" in o]
    assert 180 < em["first_values"]["voltage_a"] < 260 and "energy_import" in em["readings"]
    assert devices["sd-11"]["identified"]
    sd12 = devices["sd-12"]
    assert not sd12["identified"] and any(o.startswith("offline") for o in sd12["open"])
    bus = data["buses"][0]
    assert bus["counters"]["transactions"] > 0 and bus["counters"]["timeouts"] > 0  # the silent detector
    assert any(o == "em-1: no component code" for o in data["open"])

    html_path = config_path.parent / "report.html"
    code, out = await asyncio.to_thread(_report, config_path, "--out", str(html_path))
    assert code == 1 and "5 devices" in out

    def look() -> dict[str, object]:
        browser.set_window_size(390, 844)  # a phone
        browser.get(html_path.as_uri())
        cards = browser.find_elements(By.CSS_SELECTOR, "section.device")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "commissioning-report-phone.png"))
        pdf = browser.execute_cdp_cmd("Page.printToPDF", {"paperWidth": 8.27, "paperHeight": 11.69})
        browser.set_window_size(1280, 1000)
        return {
            "cards": [c.get_attribute("data-id") for c in cards],
            "bad": [c.get_attribute("data-id") for c in cards if "bad" in (c.get_attribute("class") or "")],
            "overflow": overflow,
            "open": browser.find_element(By.ID, "n-open").text,
            "em": browser.find_element(By.CSS_SELECTOR, "section[data-id='em-1']").text,
            "pdf": base64.b64decode(pdf["data"]),
        }

    seen = await asyncio.to_thread(look)
    assert seen["cards"] == ["em-1", "wm-2", "wm-3", "sd-11", "sd-12"]
    assert "sd-12" in seen["bad"]  # type: ignore[operator]
    assert seen["overflow"] == 0  # fits a phone: no sideways scrolling
    assert "open items" in str(seen["open"])
    assert "voltage_a" in str(seen["em"]) and "first value of voltage_a" in str(seen["em"])
    pdf = seen["pdf"]
    assert isinstance(pdf, bytes) and pdf.startswith(b"%PDF") and len(pdf) > 2000
    (ARTIFACTS / "commissioning-report.pdf").write_bytes(pdf)
