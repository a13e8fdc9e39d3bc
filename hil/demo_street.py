"""The simulated street of `citynerve demo --scenario street` (issue 18).

Outside a residential compound: a fire hydrant, a fire lane, a litter bin, the compound's
entrance and a glass curtain wall panel on the facade of No. 9 (BTHome nodes on a virtual BLE
radio), an elderly resident's bed-foot sensor, and on a Modbus TCP converter the stairwell meter
box's electrical fire detector, a street lamp controller and a Modbus-DALI gateway with the DALI
LED drivers of two more lamps. The street's rule packs run with their
hold times shortened so that a one-minute demo shows the alarms (the shortened values are written
into the generated config, next to the packs), and the clear holds of the alarms it resolves (the
hydrant closed, the van gone) shortened the same way, so the platform also sees them cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import textwrap
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from citynerve.hil.demo_building import DemoBuilding, gateway_head_toml
from citynerve.hil.sim.ble import VirtualRadio
from citynerve.hil.sim.ble.street import (
    BedFootNode,
    CurtainWallNode,
    EntranceNode,
    FireLaneNode,
    HydrantNode,
    LitterBinNode,
    ProfileNode,
)
from citynerve.hil.sim.modbus import SimDaliGateway, SimDevice, SimEndpoint, SimProfile, serve_tcp

log = logging.getLogger("citynerve.demo")

GATEWAY_ID = "gw-310106-street-0001"
ADDRESS_CODE = "310106013007"
HEARTBEAT_S = 2.0  # real nodes: 300-1800 s; the demo wants to see them
BOX_UNIT, LAMP_UNIT, DALI_UNIT = 21, 31, 41
DALI_LAMPS = (("lamp-08", "Street lamp No. 8", 8), ("lamp-09", "Street lamp No. 9", 9))
"""Lamps on the DALI line behind the Modbus-DALI gateway: device id, name, DALI short address."""

# (device id, node class, MAC, name, pack, shortened pack params)
NODES: tuple[tuple[str, type[ProfileNode], str, str, str, dict[str, float | str]], ...] = (
    (
        "hy-01",
        HydrantNode,
        "A4:C1:38:00:18:01",
        "Fire hydrant, Daning Road No. 7",
        "fire-hydrant",
        {"low_hold_s": 5, "outlet_clear_hold_s": 3},
    ),
    (
        "fl-01",
        FireLaneNode,
        "A4:C1:38:00:18:02",
        "Fire lane, compound east gate",
        "fire-lane",
        {"blocked_hold_s": 6, "blocked_clear_hold_s": 4},
    ),
    ("bin-01", LitterBinNode, "A4:C1:38:00:18:03", "Litter bin, bus stop", "litter-bin", {"full_hold_s": 4}),
    ("door-01", EntranceNode, "A4:C1:38:00:18:04", "Compound entrance gate", "entrance", {"held_open_s": 8}),
    # For a short demo the night lasts all day and 8 s out of bed is "not back" (a resident's own
    # settings: 22:00-05:00 and 40 min).
    (
        "bed-01",
        BedFootNode,
        "A4:C1:38:00:18:05",
        "Bed-foot sensor, 3F room 302",
        "elderly-bed",
        {"night_start": "00:00", "night_end": "23:59", "back_within_s": 8},
    ),
    (
        "cw-01",
        CurtainWallNode,
        "A4:C1:38:00:18:06",
        "Curtain wall panel, No. 9 facade, 4F",
        "curtain-wall",
        {"tilt_hold_s": 4, "vibration_hold_s": 4},
    ),
)


class DemoStreet:
    """The street's simulators; the same interface as citynerve.hil.demo_building.DemoBuilding."""

    write_platform_key = staticmethod(DemoBuilding.write_platform_key)  # the same signed acks

    def __init__(self, *, speed: float = 60.0) -> None:
        self.speed = speed
        self.radio = VirtualRadio("street")
        self.nodes: dict[str, ProfileNode] = {}
        self.box: SimDevice | None = None
        self.lamp: SimDevice | None = None
        self.dali: SimDaliGateway | None = None
        self.endpoint: SimEndpoint | None = None
        self._stack = contextlib.AsyncExitStack()
        self._t = 0.0

    async def __aenter__(self) -> DemoStreet:
        try:
            self._stack.enter_context(self.radio)
            for dev_id, cls, mac, _, _, _ in NODES:
                node = cls(self.radio, mac, seed=len(self.nodes) + 1)
                self.nodes[dev_id] = node
                self._stack.push_async_callback(node.close)
            self.box = SimDevice(SimProfile.load("modbus-meter-box-efm"), BOX_UNIT, speed=self.speed)
            # The lamp's local time starts at 20:00 whenever the demo runs: lit, so it can go out.
            utc_h = (time.time() % 86400) / 3600
            self.lamp = SimDevice(
                SimProfile.load("modbus-lamp-controller"),
                LAMP_UNIT,
                speed=self.speed,
                utc_offset_h=20.0 - utc_h,
            )
            self.dali = SimDaliGateway(
                DALI_UNIT,
                [sa for _, _, sa in DALI_LAMPS],
                speed=self.speed,
                utc_offset_h=20.0 - utc_h,
            )
            self.endpoint = await serve_tcp([self.box, self.lamp, self.dali])
            self._stack.push_async_callback(self.endpoint.close)
            task = asyncio.create_task(self._heartbeats(), name="demo.street")
            self._stack.callback(task.cancel)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def _heartbeats(self) -> None:
        while True:
            for dev_id, node in self.nodes.items():
                try:
                    await node.report_at(self._t)
                except Exception:  # a radio hiccup must not end the demo, but must be seen
                    log.exception("street node %s could not advertise", dev_id)
            await asyncio.sleep(HEARTBEAT_S)
            self._t += HEARTBEAT_S * self.speed

    def describe(self) -> str:
        assert self.endpoint is not None
        return (
            f"{len(self.nodes)} BTHome street nodes on BLE radio {self.radio.transport}; meter box "
            f"detector, lamp controller and DALI gateway on "
            f"modbus-tcp://{self.endpoint.host}:{self.endpoint.port}"
        )

    def scenario(self) -> list[tuple[float, str, Callable[[], Any]]]:
        hydrant = self.nodes["hy-01"]
        lane = self.nodes["fl-01"]
        bin_ = self.nodes["bin-01"]
        door = self.nodes["door-01"]
        bed = self.nodes["bed-01"]
        panel = self.nodes["cw-01"]
        assert isinstance(hydrant, HydrantNode) and isinstance(lane, FireLaneNode)
        assert isinstance(bin_, LitterBinNode) and isinstance(door, EntranceNode)
        assert isinstance(bed, BedFootNode) and isinstance(panel, CurtainWallNode)
        assert self.box is not None and self.lamp is not None and self.dali is not None
        box, lamp, hot = self.box, self.lamp, self.dali.ballasts[DALI_LAMPS[1][2]]
        return [
            (
                4.0,
                "the resident of room 302 gets out of bed and does not come back",
                lambda: setattr(bed, "in_bed", False),
            ),
            (6.0, "a van parks in the fire lane and the driver walks away", lane.park),
            (8.0, "water drawn from the hydrant (outlet opened)", hydrant.open_outlet),
            (
                10.0,
                "insulation fault in the meter box: residual current 420 mA",
                lambda: box.state.levels.update(residual_ma=400.0),
            ),
            (12.0, "the entrance gate is forced open", door.open_door),
            (14.0, "the street lamp goes out", lambda: setattr(lamp.state, "fault", True)),
            (16.0, "the litter bin fills to the lid", lambda: bin_.add_rubbish(0.95)),
            (18.0, "a typhoon's edge: wind 28 m/s on the No. 9 facade", lambda: panel.wind(28.0)),
            (20.0, "a curtain wall panel works loose: it rattles in the gusts", panel.loosen),
            (22.0, "the hydrant is closed again", lambda: hydrant.open_outlet(False)),
            (24.0, "a fixing of the panel breaks: it drops 1.5 deg", lambda: panel.slip(1.5)),
            (
                26.0,
                "street lamp No. 9's LED driver overheats and shuts down (DALI)",
                lambda: hot.state.levels.update(overheat=1.0),
            ),
            (28.0, "the van leaves the fire lane", lane.leave),
            (32.0, "the gate closes", door.close_door),
        ]

    def config_toml(self, *, broker: str, web_port: int = 0, protocol: str = "5") -> str:
        assert self.endpoint is not None
        host, port = self.endpoint.host, self.endpoint.port
        text = gateway_head_toml(
            "# Generated by `citynerve demo --scenario street`: the simulated street's gateway.\n"
            "# Hold times are shortened so a one-minute demo shows the alarms (see each pack's [params]);\n"
            "# and two clear holds, so it shows those alarms cleared too.",
            GATEWAY_ID,
            "Demo street, Daning Road",
            broker=broker,
            web_port=web_port,
            protocol=protocol,
        )
        text += textwrap.dedent(
            """
            [rules]
            [[rules.packs]]
            name = "meter-box"
            select = { profiles = ["modbus-meter-box-efm"] }
            params = { residual_hold_s = 5 }

            [[rules.packs]]
            name = "street-lamp"
            select = { profiles = ["modbus-lamp-controller", "modbus-intesis-dali-lamp"] }
            params = { fault_hold_s = 4 }
            """
        )
        for dev_id, _cls, _, _, pack, params in NODES:
            text += _pack_toml(dev_id, pack, params)
        text += textwrap.dedent(
            f"""
            [[buses]]
            id = "modbus-street"
            protocol = "modbus_tcp"
            description = "RS-485 to Ethernet converter in the stairwell"
            host = "{host}"
            port = {port}
            timeout_s = 0.5
            retries = 1
            offline_after = 2

            [[devices]]
            id = "box-3f"
            name = "Meter box, stairwell 3F"
            bus = "modbus-street"
            profile = "modbus-meter-box-efm"
            address = {BOX_UNIT}
            poll_interval_s = 2
            location = {{ address_code = "{ADDRESS_CODE}", building = "7", floor = "3", room = "stairwell" }}

            [[devices]]
            id = "lamp-07"
            name = "Street lamp No. 7"
            bus = "modbus-street"
            profile = "modbus-lamp-controller"
            address = {LAMP_UNIT}
            poll_interval_s = 2
            location = {{ address_code = "{ADDRESS_CODE}", lat = 31.2543, lon = 121.4552, text = "No. 7" }}
            """
        )
        for i, (dev_id, name, sa) in enumerate(DALI_LAMPS):
            # One DALI line behind one unit id: each lamp's registers at 100 x its short address.
            loc = (
                f'{{ address_code = "{ADDRESS_CODE}", lat = 31.2543, lon = 121.455{3 + i}, text = "{name}" }}'
            )
            text += textwrap.dedent(
                f"""
                [[devices]]
                id = "{dev_id}"
                name = "{name} (DALI driver, short address {sa})"
                bus = "modbus-street"
                profile = "modbus-intesis-dali-lamp"
                address = {DALI_UNIT}
                register_base = {100 * sa}
                poll_interval_s = 2
                location = {loc}
                """
            )
        text += textwrap.dedent(
            f"""

            [[buses]]
            id = "ble-street"
            protocol = "bthome"
            description = "BLE scanner for the street's nodes (virtual radio)"
            backend = "bumble"
            transport = "{self.radio.transport}"
            offline_after = 3
            """
        )
        for i, (dev_id, cls, mac, name, _, _) in enumerate(NODES):
            loc = f'{{ address_code = "{ADDRESS_CODE}", lat = 31.2545, lon = 121.456{i}, text = "street" }}'
            text += textwrap.dedent(
                f"""
                [[devices]]
                id = "{dev_id}"
                name = "{name}"
                bus = "ble-street"
                profile = "{cls.profile_id}"
                address = "{mac}"
                poll_interval_s = {HEARTBEAT_S}
                location = {loc}
                """
            )
        return text


def _toml(v: float | str | list[str]) -> str:
    """A TOML value (json's strings and lists of strings are TOML's for the demo's ASCII values)."""
    return json.dumps(v) if isinstance(v, str | list) else repr(v)


def _pack_toml(dev_id: str, pack: str, params: Mapping[str, float | str]) -> str:
    """One device's pack with the demo's shortened parameters."""
    shown = ", ".join(f"{k} = {_toml(v)}" for k, v in params.items())
    select = f'select = {{ devices = ["{dev_id}"] }}'
    return f'\n[[rules.packs]]\nname = "{pack}"\n{select}\nparams = {{ {shown} }}\n'
