"""Field-tools fixtures: a simulated building on a real pymodbus server, a gateway config pointing at
it, and a real gateway (the lead's runtime) running in-process with its control socket."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.config import GatewayConfig, load_config
from citynerve.gateway.control import GatewayNotRunningError, ask
from citynerve.gateway.runtime import Gateway
from citynerve.hil.sim.modbus import ModbusBuilding

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "config" / "profiles"
ADDRESS_CODE = "310106013007"

DEVICES = (
    # id, profile, unit, building, floor, room
    ("em-1", "modbus-power-meter-3ph", 1, "7", "B1", "meter room"),
    ("wm-2", "modbus-water-meter", 2, "7", "2", "201"),
    ("wm-3", "modbus-water-meter", 3, "7", "3", "301"),
    ("sd-11", "modbus-smoke-detector", 11, "7", "1", "stairwell"),
    ("sd-12", "modbus-smoke-detector", 12, "7", "2", "stairwell"),
)


def gateway_toml(
    host: str,
    port: int,
    *,
    devices: tuple[tuple[str, str, int, str, str, str], ...] = DEVICES,
    rules: bool = True,
    extra: str = "",
) -> str:
    text = textwrap.dedent(
        f"""\
        # test building
        profile_dirs = ["{PROFILES}"]

        [gateway]
        id = "gw-test-0001"
        name = "Test building 7"
        org = {{ city = "310100", district = "310106", street = "310106013" }}

        [store]
        path = "var/outbox.db"
        synchronous = "normal"

        [control]
        socket = "var/gw.sock"
        """
    )
    if rules:
        text += textwrap.dedent(
            """
            [rules]
            [[rules.packs]]
            name = "smoke-fire"
            select = { profiles = ["modbus-smoke-detector"] }
            points = { smoke = "smoke_alarm" }
            """
        )
    text += textwrap.dedent(
        f"""
        [[buses]]
        id = "tcp-1"
        protocol = "modbus_tcp"
        host = "{host}"
        port = {port}
        timeout_s = 0.3
        retries = 0
        offline_after = 1
        backoff_initial_s = 0.5
        backoff_max_s = 1
        """
    )
    for dev_id, profile, unit, building, floor, room in devices:
        text += textwrap.dedent(
            f"""
            [[devices]]
            id = "{dev_id}"
            bus = "tcp-1"
            profile = "{profile}"
            address = {unit}
            poll_interval_s = 0.5
            location = {{ address_code = "{ADDRESS_CODE}", building = "{building}", {_place(floor, room)} }}
            """
        )
    return text + extra


def _place(floor: str, room: str) -> str:
    return f'floor = "{floor}", room = "{room}"'


@pytest.fixture
async def building() -> AsyncIterator[ModbusBuilding]:
    async with ModbusBuilding() as b:
        yield b


@pytest.fixture
def config_path(short_dir: Path, building: ModbusBuilding) -> Path:
    host, port = building.endpoint
    path = short_dir / "gateway.toml"
    path.write_text(gateway_toml(host, port))
    return path


@pytest.fixture
def config(config_path: Path) -> GatewayConfig:
    return load_config(config_path)


async def wait_for(predicate: Any, timeout_s: float = 10.0, interval_s: float = 0.05) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def run_gateway(config: GatewayConfig) -> AsyncIterator[Gateway]:
    """The real runtime, in-process, until the block ends; waits until its control socket answers."""
    gw = Gateway(config)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop), name="test-gateway")

    async def answers() -> bool:
        if task.done():
            task.result()  # raise what stopped it
        try:
            await ask(Path(config.control.socket), "ping", timeout_s=1.0)
        except GatewayNotRunningError:
            return False
        return True

    try:
        await wait_for(answers, 15.0)
        yield gw
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 15.0)
        except TimeoutError:
            task.cancel()


@pytest.fixture
async def gateway(config: GatewayConfig) -> AsyncIterator[Gateway]:
    async with run_gateway(config) as gw:
        yield gw
