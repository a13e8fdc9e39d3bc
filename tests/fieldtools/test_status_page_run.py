"""The status page of a real `citynerve run` process, as the technician meets it in the field: its
password file rotated while it runs, its clock days off (libfaketime), its outbox on a full disk (a
real tmpfs). The page is read in a real headless Chromium (the `browser` fixture) or over HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver

from citynerve.hil.faults.store import fill, small_disk
from citynerve.hil.sim.clock import SteppedWallClock
from citynerve.hil.sim.modbus import ModbusBuilding

from .conftest import gateway_toml, wait_for
from .test_status_page_browser import browser, chromium

__all__ = ["browser", "chromium"]  # the module-scoped Chromium, blank for each test

USER = "citynerve"
PAGE_LINE = re.compile(r"status page on http://([0-9.]+):(\d+)/")


class GatewayWithPage:
    """`python -m citynerve.gateway.cli run -c gateway.toml` in `folder` with `[web]` on a free
    loopback port (port 0: the port is read from the gateway's own log line)."""

    def __init__(self, folder: Path, config: str, env: dict[str, str] | None = None) -> None:
        self.config = folder / "gateway.toml"
        self.config.write_text(config)
        self.log = folder / "gateway.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "citynerve.gateway.cli", "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                cwd=folder,
            )
        self.base = ""

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def until(self, what: str, predicate: Callable[[], Any], timeout_s: float = 30.0) -> None:
        def check() -> Any:
            assert self.proc.poll() is None, f"gateway exited waiting for {what}:\n{self.tail()}"
            return predicate()

        try:
            await wait_for(check, timeout_s, interval_s=0.1)
        except AssertionError as err:
            raise AssertionError(f"{what}: {err}\n{self.tail()}") from None

    async def started(self) -> None:
        def listening() -> bool:
            found = PAGE_LINE.search(self.log.read_text(errors="replace"))
            if found:
                self.base = f"http://{found.group(1)}:{found.group(2)}"
            return found is not None

        await self.until("the status page listening", listening)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@asynccontextmanager
async def gateway_with_page(
    folder: Path,
    building: ModbusBuilding,
    web: str,
    env: dict[str, str] | None = None,
    store: str = "var/outbox.db",
) -> AsyncIterator[GatewayWithPage]:
    host, port = building.endpoint
    config = gateway_toml(host, port, extra=f"\n[web]\nenabled = true\nport = 0\nrefresh_s = 0.5\n{web}\n")
    config = config.replace('path = "var/outbox.db"', f'path = "{store}"')
    gw = GatewayWithPage(folder, config, env)
    try:
        await gw.started()
        yield gw
    finally:
        await asyncio.to_thread(gw.stop)


def _basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()}


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


async def _status_code(url: str, password: str) -> int:
    return (await asyncio.to_thread(_get, url, _basic(password)))[0]


async def test_a_rotated_password_file_applies_while_the_gateway_runs(
    short_dir: Path, building: ModbusBuilding
) -> None:
    """The technician rotates the page's password (a new file content, as `citynerve config
    reload` cannot see): the new one works, the old one stops, without a restart. A password file
    that became empty or disappeared refuses everyone with 503 (not 401: the password typed is not
    what is wrong) and says so in the gateway's log, once; written again, it works again."""
    pw = short_dir / "web.pw"
    pw.write_text("old-meter-room\n")
    pw.chmod(0o600)
    async with gateway_with_page(short_dir, building, 'password_file = "web.pw"') as gw:
        api = gw.base + "/api/status"
        assert await _status_code(api, "old-meter-room") == 200
        assert await _status_code(api, "new-meter-room-2") == 401

        # Rotated in place (an editor, `echo new > web.pw`): the same inode, another size and mtime.
        pw.write_text("new-meter-room-2\n")
        await gw.until("the old password refused", lambda: _get(api, _basic("old-meter-room"))[0] == 401)
        assert await _status_code(api, "new-meter-room-2") == 200

        # Replaced by a rename (how config tools write files): another inode, the same size.
        tmp = short_dir / "web.pw.tmp"
        tmp.write_text("new-meter-room-3\n")
        tmp.chmod(0o600)
        os.replace(tmp, pw)
        await gw.until("the second password refused", lambda: _get(api, _basic("new-meter-room-2"))[0] == 401)
        assert await _status_code(api, "new-meter-room-3") == 200

        # Emptied: nobody gets in, with 503 and the reason logged.
        pw.write_text("")
        await gw.until(
            "an empty password file refusing", lambda: _get(api, _basic("new-meter-room-3"))[0] == 503
        )
        assert (await asyncio.to_thread(_get, api))[0] == 503
        assert await _status_code(api, "") == 503
        # Gone: still nobody.
        pw.unlink()
        await asyncio.sleep(1.5)  # past a re-check
        assert await _status_code(api, "new-meter-room-3") == 503
        # Written again: the page is back.
        pw.write_text("back-again\n")
        pw.chmod(0o600)
        await gw.until("the password file read again", lambda: _get(api, _basic("back-again"))[0] == 200)
        log = gw.log.read_text(errors="replace")
        assert log.count("is empty") == 1, log[-3000:]
        assert log.count("cannot read password_file") == 1, log[-3000:]


def _page_text(driver: webdriver.Chrome, css: str) -> str:
    """The text of every element `css` matches, read in one script (the page redraws every 0.5 s:
    elements found in one call may be gone by the next)."""
    script = "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText).join(' ')"
    return str(driver.execute_script(script, css))


TWO_DAYS_S = 2 * 86400


async def test_ages_are_measured_on_the_gateways_clock(
    short_dir: Path, building: ModbusBuilding, browser: webdriver.Chrome
) -> None:
    """A gateway without NTP whose clock is two days behind (libfaketime), seen from a phone with
    the right time: a device read a moment ago says seconds ago, an alarm raised a moment ago says
    since seconds ago (both stamped and measured on the gateway's clock), not "48 h ago"."""
    clock = SteppedWallClock(short_dir)
    clock.set_offset(-TWO_DAYS_S)
    building.trigger_smoke(11)
    async with gateway_with_page(short_dir, building, "", env=clock.env()) as gw:
        await asyncio.to_thread(browser.get, gw.base + "/")

        async def shown() -> bool:
            # WebDriver calls block: off the event loop, which serves the simulated building.
            card = await asyncio.to_thread(_page_text, browser, '.card[data-device="em-1"] .meta')
            return "ago" in card and bool(await asyncio.to_thread(_page_text, browser, "#alarms"))

        await gw.until("the page showing the meter and the smoke alarm", shown)
        read = re.search(r"last good read (.+? ago)", _page_text(browser, '.card[data-device="em-1"] .meta'))
        assert read and re.fullmatch(r"\d+ s ago", read.group(1)), read
        assert int(read.group(1).split()[0]) < 30, read.group(1)
        since = re.search(r"since (.+? ago)", _page_text(browser, "#alarms"))
        assert since and re.fullmatch(r"\d+ s ago", since.group(1)), _page_text(browser, "#alarms")
        # The clock tile still tells the technician this browser's clock is two days ahead.
        skew = re.search(r"this browser \+(\d+) s", _page_text(browser, "#time-detail"))
        assert skew and abs(int(skew.group(1)) - TWO_DAYS_S) < 60, _page_text(browser, "#time-detail")


def _json(url: str) -> dict[str, Any]:
    status, body = _get(url)
    assert status == 200, (status, body)
    return json.loads(body)  # type: ignore[no-any-return]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
async def test_a_full_disk_is_a_fault_on_the_outbox_tile(
    short_dir: Path, building: ModbusBuilding, browser: webdriver.Chrome
) -> None:
    """The outbox on a real tmpfs filled up while the gateway runs (no uplink: everything stays):
    the store evicts old telemetry to keep alarms. The tile is red, says what was dropped and what
    to do: free space on the disk holding the outbox."""
    with small_disk(short_dir / "disk", "6m") as disk:
        async with gateway_with_page(short_dir, building, "", store=f"{disk}/outbox.db") as gw:
            api = gw.base + "/api/status"

            async def outbox() -> dict[str, Any]:
                return (await asyncio.to_thread(_json, api))["outbox"]  # type: ignore[no-any-return]

            async def stored() -> bool:
                return int((await outbox())["depth"]) >= 20

            await gw.until("telemetry in the outbox", stored)
            await asyncio.to_thread(fill, disk)
            building.silence(3)  # an offline alarm to store: old telemetry makes room for it

            async def evicted() -> bool:
                ob = await outbox()
                return ob["state"] == "disk_full" and int(ob["dropped_by"].get("disk_full", 0)) > 0

            await gw.until("the store full, telemetry evicted", evicted, 60)
            dropped = int((await outbox())["dropped_by"]["disk_full"])
            await asyncio.to_thread(browser.get, gw.base + "/")

            async def tile() -> tuple[str, str]:
                cls = await asyncio.to_thread(
                    browser.execute_script, "return document.getElementById('tile-outbox').className"
                )
                return str(cls), await asyncio.to_thread(_page_text, browser, "#tile-outbox")

            async def drawn() -> bool:
                return "disk full" in (await tile())[1]

            await gw.until("the page showing the full disk", drawn)
            cls, text = await tile()
            assert "bad" in cls.split(), (cls, text)
            found = re.search(r"dropped unsent: disk full ([\d,]+)", text)
            assert found and int(found.group(1).replace(",", "")) >= dropped, text
            assert f"free space on the disk holding {disk}" in text, text
