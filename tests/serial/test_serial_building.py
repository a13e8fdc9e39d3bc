"""`SerialBuilding`, the RS-485 part of the demo building: its config loads, its scenario runs."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

from citynerve.drivers.cjt188 import Cjt188Driver
from citynerve.drivers.dlt645 import Dlt645Driver
from citynerve.gateway.config import load_config
from citynerve.hil.sim.serial import SerialBuilding

HEADER = """
[gateway]
id = "gw-demo-serial"
org = { city = "310100", district = "310106", street = "310106013" }
[store]
path = "gw.db"
[control]
socket = "gw.sock"
"""


async def test_config_loads_and_meters_answer(tmp_path: Path) -> None:
    async with SerialBuilding() as building:
        path = tmp_path / "gw.toml"
        path.write_text(HEADER + building.config_toml(address_code="310106013007"), encoding="utf-8")
        cfg = await asyncio.to_thread(load_config, path)
        assert len(cfg.devices) == 7 and "DL/T 645" in building.describe()
        power = Dlt645Driver(cfg.bus("rs485-power"), cfg.devices_on("rs485-power"))  # type: ignore[arg-type]
        water = Cjt188Driver(cfg.bus("rs485-water"), cfg.devices_on("rs485-water"))  # type: ignore[arg-type]
        for driver in (power, water):
            for device in driver.devices.values():
                for request in driver.plan(device):  # type: ignore[arg-type]
                    assert await driver.read(device, request)  # type: ignore[arg-type]
            await driver.close()
        steps = sorted(building.extra_scenario(), key=lambda s: s[0])
        assert steps[0][1].startswith("fire panel")
        for _, _, action in steps:
            result = action()
            if inspect.isawaitable(result):
                await result
        assert building.panel.lines_sent == 2
        assert len(building.power_bus.meters) == 3  # silent and back
