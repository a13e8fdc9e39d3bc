"""Support for the time scenarios: a real `citynerve run` process next to a simulated building."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from citynerve.gateway.api import Event
from citynerve.gateway.control import ask
from citynerve.gateway.store import Lane, read_rows
from citynerve.hil.faults import Broken
from citynerve.hil.sim.modbus import ModbusBuilding

REPO = Path(__file__).resolve().parents[2]
HOLD_S = 6.0
SMOKE_UNIT = 11
METER_UNIT = 1


# -- a real gateway process --------------------------------------------------------------------


class GatewayRun:
    """`python -m citynerve.gateway.cli run -c gateway.toml` in `folder`, with extra environment."""

    def __init__(self, folder: Path, config: str, env: dict[str, str]) -> None:
        self.folder = folder
        self.config = folder / "gateway.toml"
        self.config.write_text(config)
        self.log = folder / "gateway.log"
        self.sock = folder / "var" / "gw.sock"
        self.db = folder / "var" / "outbox.db"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "citynerve.gateway.cli", "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), **env},
                cwd=folder,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 2500) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    async def status(self) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await ask(self.sock, "status", timeout_s=5.0)
        except Exception:
            return None
        return result

    async def wait_for(self, what: str, predicate: Callable[[], Any], timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise Broken(f"gateway exited {self.proc.returncode} waiting for {what}:\n{self.tail()}")
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(0.1)
        raise Broken(f"timed out after {timeout_s:.0f} s waiting for {what}:\n{self.tail()}")

    async def wait_online(self, timeout_s: float = 60.0) -> None:
        async def online() -> bool:
            st = await self.status()
            return bool(st and st["devices_total"] and st["devices_online"] == st["devices_total"])

        await self.wait_for("every device online", online, timeout_s)

    def events(self) -> list[Event]:
        if not self.db.exists():
            return []
        try:
            rows = read_rows(self.db, Lane.EVENT, limit=100_000)
        except Exception:
            return []
        return [r.record for r in rows if isinstance(r.record, Event)]

    def stop(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def gateway_toml(host: str, port: int, *, rules: bool = True, meter: bool = False, extra: str = "") -> str:
    text = textwrap.dedent(
        f"""\
        profile_dirs = ["{REPO / "config" / "profiles"}"]

        [gateway]
        id = "gw-time"
        org = {{ city = "310100", district = "310106", street = "310106013" }}

        [store]
        path = "var/outbox.db"
        synchronous = "normal"
        commit_interval_ms = 50

        [control]
        socket = "var/gw.sock"

        [log]
        format = "json"
        """
    )
    if rules:
        text += textwrap.dedent(
            f"""
            [rules]
            [[rules.rules]]
            id = "smoke_held"
            kind = "boolean"
            point = "smoke_alarm"
            hold_s = {HOLD_S}
            severity = "critical"
            select = {{ profiles = ["modbus-smoke-detector"] }}

            [[rules.rules]]
            id = "smoke_silent"
            kind = "missing"
            point = "smoke_alarm"
            after_s = 20
            select = {{ profiles = ["modbus-smoke-detector"] }}

            [[rules.rules]]
            id = "node_offline"
            kind = "offline"
            severity = "major"
            """
        )
    text += textwrap.dedent(
        f"""
        [[buses]]
        id = "tcp-1"
        protocol = "modbus_tcp"
        host = "{host}"
        port = {port}
        timeout_s = 0.5
        retries = 1
        offline_after = 3

        [[devices]]
        id = "sd-11"
        bus = "tcp-1"
        profile = "modbus-smoke-detector"
        address = {SMOKE_UNIT}
        poll_interval_s = 0.5
        location = {{ address_code = "310106013007" }}
        """
    )
    if meter:  # a power meter: readings change at every poll, so the writer always has work
        text += textwrap.dedent(
            f"""
            [[devices]]
            id = "em-1"
            bus = "tcp-1"
            profile = "modbus-power-meter-3ph"
            address = {METER_UNIT}
            poll_interval_s = 0.5
            location = {{ address_code = "310106013007" }}
            """
        )
    return text + extra


@contextlib.contextmanager
def short_folder(folder: Path) -> Iterator[Path]:
    """Unix socket paths must stay under ~100 characters: a short folder when `folder` is long."""
    if len(str(folder)) < 60:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="cn-time-", dir="/tmp") as tmp:
        yield Path(tmp)


@contextlib.asynccontextmanager
async def building_and_gateway(
    folder: Path, env: dict[str, str], *, extra: str = "", rules: bool = True, meter: bool = False
) -> AsyncIterator[tuple[ModbusBuilding, GatewayRun]]:
    devices = [("modbus-smoke-detector", SMOKE_UNIT)] + (
        [("modbus-power-meter-3ph", METER_UNIT)] if meter else []
    )
    async with ModbusBuilding(devices=devices) as building:
        host, port = building.endpoint
        gw = GatewayRun(folder, gateway_toml(host, port, rules=rules, meter=meter, extra=extra), env)
        try:
            yield building, gw
        finally:
            await asyncio.to_thread(gw.stop)
