"""The RS-485 part of a simulated building, ready to plug into the demo (`hil/demo_building.py`):
electricity meters (DL/T 645), water meters with valves (CJ/T 188) and the fire panel's printer
port, each on its own pty, plus the gateway config that points at them and a scripted scenario.

    async with SerialBuilding() as serial:
        text += serial.config_toml(address_code="310106013007")
        scenario += serial.extra_scenario()      # [(seconds, label, action), ...]
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Callable
from types import TracebackType
from typing import Any

from citynerve.hil.sim.serial._bus import SerialMeterBus
from citynerve.hil.sim.serial._meters import SimCjt188Meter, SimDlt645Meter
from citynerve.hil.sim.serial._panel import FirePanelStream

ELECTRICITY = (("000000000101", "1", "101"), ("000000000201", "2", "201"), ("000000000301", "3", "301"))
WATER = (("00000000000101", "1", "101"), ("00000000000201", "2", "201"), ("00000000000301", "3", "301"))
PANEL_ID = "GST-200-01"


class SerialBuilding:
    """Household electricity and water meters per flat and the building's fire panel."""

    def __init__(self, *, wire_time: bool = False) -> None:
        self.electricity = [SimDlt645Meter(address, phases=1) for address, _, _ in ELECTRICITY]
        self.water = [
            SimCjt188Meter(address, flow_m3=20.0 + i * 7.5) for i, (address, _, _) in enumerate(WATER)
        ]
        self.power_bus = SerialMeterBus(meters=self.electricity, wire_time=wire_time)
        self.water_bus = SerialMeterBus(meters=self.water, wire_time=wire_time)
        self.panel = FirePanelStream()
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> SerialBuilding:
        for part in (self.power_bus, self.water_bus, self.panel):
            await self._stack.enter_async_context(part)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def describe(self) -> str:
        return (
            f"{len(self.electricity)} DL/T 645 meters on {self.power_bus.port}, {len(self.water)} CJ/T 188 "
            f"water meters on {self.water_bus.port}, fire panel printer port on {self.panel.port}"
        )

    def extra_scenario(self) -> list[tuple[float, str, Callable[[], Any]]]:
        """Scripted events: a smoke alarm on the panel, a reset, a meter going silent and back."""
        silent = self.electricity[1]

        def go_silent() -> None:
            self.power_bus.meters.remove(silent)

        def come_back() -> None:
            self.power_bus.meters.append(silent)

        return [
            (25.0, f"electricity meter {silent.address} stops answering", go_silent),
            (
                20.0,
                "fire panel: first fire alarm, smoke detector loop 4 device 4, 一层大厅东侧",
                lambda: self.panel.alarm(4, 4, location="一层大厅东侧"),
            ),
            (35.0, "fire panel: reset", self.panel.reset),
            (45.0, f"electricity meter {silent.address} answers again", come_back),
        ]

    def config_toml(self, *, address_code: str, poll_interval_s: float = 5.0) -> str:
        """`[[buses]]` and `[[devices]]` tables for these simulators (append to a gateway config)."""
        text = textwrap.dedent(
            f"""
            [[buses]]
            id = "rs485-power"
            protocol = "dlt645"
            description = "household electricity meters, riser A (simulated)"
            port = "{self.power_bus.port}"
            timeout_s = 0.3
            offline_after = 2
            backoff_initial_s = 2
            backoff_max_s = 8

            [[buses]]
            id = "rs485-water"
            protocol = "cjt188"
            description = "household water meters with valves, riser A (simulated)"
            port = "{self.water_bus.port}"
            timeout_s = 0.3
            offline_after = 2
            backoff_initial_s = 2
            backoff_max_s = 8

            [[buses]]
            id = "fire-panel"
            protocol = "firepanel"
            description = "fire alarm control panel printer port (simulated)"
            port = "{self.panel.port}"

            [[devices]]
            id = "fp-main"
            name = "Fire alarm control panel"
            bus = "fire-panel"
            profile = "firepanel-gst"
            address = "{PANEL_ID}"
            location = {{ address_code = "{address_code}", floor = "1", room = "fire control" }}
            """
        )
        for address, floor, room in ELECTRICITY:
            text += textwrap.dedent(
                f"""
                [[devices]]
                id = "em-{room}"
                name = "Electricity meter, flat {room}"
                bus = "rs485-power"
                profile = "dlt645-single-phase"
                address = "{address}"
                poll_interval_s = {poll_interval_s}
                location = {{ address_code = "{address_code}", floor = "{floor}", room = "{room}" }}
                """
            )
        for address, floor, room in WATER:
            text += textwrap.dedent(
                f"""
                [[devices]]
                id = "wm-{room}"
                name = "Water meter, flat {room}"
                bus = "rs485-water"
                profile = "cjt188-water-cold"
                address = "{address}"
                poll_interval_s = {poll_interval_s}
                location = {{ address_code = "{address_code}", floor = "{floor}", room = "{room}" }}
                """
            )
        return text
