"""The simulated building the demo and the footprint benchmark run the gateway against.

`DemoBuilding` starts every simulator and writes the gateway config that points at them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from citynerve.hil.sim.ble import ManholeCoverNode, VirtualRadio
from citynerve.hil.sim.ble.street import BedFootNode, EntranceNode, FlatDoorNode, MotionNode
from citynerve.hil.sim.modbus import (
    DEFAULT_BUILDING,
    ModbusBuilding,
    SimDevice,
    SimEndpoint,
    SimProfile,
    serve_tcp,
)
from citynerve.hil.sim.serial import SerialBuilding

log = logging.getLogger("citynerve.demo")

GATEWAY_ID = "gw-310106-demo-0001"
ADDRESS_CODE = "310106013007"
PLATFORM_KEY_FILE = "platform.key"  # next to the generated config: the platform signs its acks with it

_NAMES = {
    "modbus-power-meter-3ph": ("em", "Building incomer, three-phase meter", "B1", "meter room"),
    "modbus-water-meter": ("wm", "Water meter", "", ""),
    "modbus-smoke-detector": ("sd", "Smoke detector", "", "stairwell"),
}


# Manhole covers on the street outside: (MAC, component code, AES key). Keys are demo-only.
COVERS = (
    ("A4:C1:38:00:07:01", "3101060101000701", bytes.fromhex("00112233445566778899aabbccddeeff")),
    ("A4:C1:38:00:07:02", "3101060102000702", bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")),
)
HEARTBEAT_S = 5.0  # real nodes: 300 s; the demo wants to see them
BOX_UNIT = 21  # the stairwell meter box's electrical fire detector, on its own converter
DOOR_MAC, BED_MAC = "A4:C1:38:00:07:11", "A4:C1:38:00:07:12"  # entrance door, bed-foot sensor in 301
FLAT_DOOR_MAC, PIR_MAC = "A4:C1:38:00:07:13", "A4:C1:38:00:07:14"  # flat 301's door contact and PIR


def gateway_head_toml(
    comment: str, gateway_id: str, name: str, *, broker: str, web_port: int, protocol: str
) -> str:
    """The part of a demo's gateway config every scenario shares: identity, store, control socket,
    log, status page and the uplink to the demo's broker (the platform signs its acks)."""
    return comment + textwrap.dedent(
        f"""
        [gateway]
        id = "{gateway_id}"
        name = "{name}"
        org = {{ city = "310100", district = "310106", street = "310106013" }}

        [store]
        path = "gateway.db"
        commit_interval_ms = 200

        [control]
        socket = "gateway.sock"

        [log]
        level = "warning"
        format = "text"

        [web]
        enabled = {"true" if web_port else "false"}
        bind = "127.0.0.1"
        port = {web_port or 8080}

        [upstream]
        brokers = ["{broker}"]
        protocol = "{protocol}"
        e2e_ack = true
        status_interval_s = 10
        commands = {{ hmac_key_file = "{PLATFORM_KEY_FILE}" }}  # the platform signs its acks
        """
    )


class DemoBuilding:
    """A residential building and its street: Modbus meters and smoke detectors behind a TCP
    converter, DL/T 645 and CJ/T 188 household meters and the fire panel on RS-485 (pty pairs), the
    stairwell meter box's electrical fire detector on a second converter, and on a virtual BLE radio
    the building's entrance door, an elderly resident's bed-foot sensor and the manhole covers outside.

    `speed` runs simulated time faster so the daily load curve moves during a short demo.
    """

    def __init__(self, *, speed: float = 60.0) -> None:
        self.modbus = ModbusBuilding(speed=speed)
        self.serial = SerialBuilding()
        self.radio = VirtualRadio("demo")
        self.covers: list[ManholeCoverNode] = []
        self.tilt = {mac: 0.4 for mac, _, _ in COVERS}
        self.door = EntranceNode(self.radio, DOOR_MAC, seed=11)
        self.bed = BedFootNode(self.radio, BED_MAC, seed=12)
        self.flat_door = FlatDoorNode(self.radio, FLAT_DOOR_MAC, seed=13)
        self.pir = MotionNode(self.radio, PIR_MAC, seed=14)
        self.box = SimDevice(SimProfile.load("modbus-meter-box-efm"), BOX_UNIT, speed=speed)
        self.box_endpoint: SimEndpoint | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> DemoBuilding:
        try:
            await self._stack.enter_async_context(self.modbus)
            await self._stack.enter_async_context(self.serial)
            self._stack.enter_context(self.radio)
            for mac, _, key in COVERS:
                node = ManholeCoverNode(self.radio, mac, key=key)  # no name: 31 bytes hold the payload only
                self.covers.append(node)
                self._stack.push_async_callback(node.close)
            for street_node in (self.door, self.bed, self.flat_door, self.pir):
                self._stack.push_async_callback(street_node.close)
            self.box_endpoint = await serve_tcp([self.box])
            self._stack.push_async_callback(self.box_endpoint.close)
            heartbeat = asyncio.create_task(self._heartbeats(), name="demo.covers")
            self._stack.callback(heartbeat.cancel)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _heartbeats(self) -> None:
        """Each cover reports its state every HEARTBEAT_S; the tilt wobbles like a real sensor."""
        while True:
            for node in self.covers:
                tilt = self.tilt[node.mac]
                try:
                    await node.state(tilt_deg=round(tilt + random.uniform(-0.2, 0.2), 1), water_mm=850)
                except Exception:  # a radio hiccup must not end the demo, but must be seen
                    log.exception("manhole cover %s could not advertise", node.mac)
            for street_node in (self.door, self.bed, self.flat_door, self.pir):
                try:
                    await street_node.report_at(0.0)
                except Exception:
                    log.exception("node %s could not advertise", street_node.mac)
            await asyncio.sleep(HEARTBEAT_S)

    def lift_cover(self, index: int, tilt_deg: float) -> None:
        self.tilt[COVERS[index][0]] = tilt_deg

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def describe(self) -> str:
        host, port = self.modbus.endpoint
        return (
            f"{len(DEFAULT_BUILDING)} Modbus devices on modbus-tcp://{host}:{port}; "
            f"{self.serial.describe()}; meter box detector on modbus-tcp://{self._box_host_port()}; "
            f"entrance door, flat 301's bed-foot sensor, door contact and PIR and {len(COVERS)} "
            "manhole covers (BTHome) "
            f"on BLE radio {self.radio.transport}"
        )

    def _box_host_port(self) -> str:
        assert self.box_endpoint is not None
        return f"{self.box_endpoint.host}:{self.box_endpoint.port}"

    async def _door(self, *, unlocked: bool, open_: bool) -> None:
        """The entrance changes: the node advertises at once (real nodes send every change)."""
        self.door.release_lock(unlocked)
        if open_:
            self.door.open_door()
        else:
            self.door.close_door()
        await self.door.report_at(0.0)

    async def _out_of_bed(self) -> None:
        self.bed.in_bed = False
        await self.bed.report_at(0.0)

    async def _wedge(self) -> None:
        await self._door(unlocked=True, open_=True)
        self.door.release_lock(False)  # the lock re-engages after 5 s; the wedge keeps the door open

    def _residual(self, ma: float) -> None:
        self.box.state.levels.update(residual_ma=ma)

    def extra_scenario(self) -> list[tuple[float, str, Callable[[], Any]]]:
        return [
            *self.serial.extra_scenario(),
            (30.0, f"manhole cover {COVERS[1][0]} lifted to 35 deg", lambda: self.lift_cover(1, 35.0)),
            (40.0, f"manhole cover {COVERS[1][0]} back in place", lambda: self.lift_cover(1, 0.4)),
            (
                4.0,
                "insulation fault in the 3F meter box: residual current 420 mA",
                lambda: self._residual(400.0),
            ),
            (5.0, "the entrance door is forced open", lambda: self._door(unlocked=False, open_=True)),
            (6.0, "the resident of flat 301 gets out of bed and does not come back", self._out_of_bed),
            (8.0, "the forced door swings shut", lambda: self._door(unlocked=False, open_=False)),
            (9.0, "a resident opens the entrance with a card, wedges it open", self._wedge),
            (
                24.0,
                "the wedge is taken away: the door closes",
                lambda: self._door(unlocked=False, open_=False),
            ),
            (34.0, "the meter box's insulation fault is repaired", lambda: self._residual(0.0)),
        ]

    @staticmethod
    def write_platform_key(workdir: Path) -> bytes:
        """The key the demo's platform signs end-to-end acks with, next to the config."""
        key = secrets.token_bytes(32)
        path = workdir / PLATFORM_KEY_FILE
        path.write_text(key.hex())
        path.chmod(0o600)
        return key

    def config_toml(self, *, broker: str, web_port: int = 0, protocol: str = "5") -> str:
        host, port = self.modbus.endpoint
        text = gateway_head_toml(
            "# Generated by `citynerve demo`: the simulated building's gateway.",
            GATEWAY_ID,
            "Demo building, Daning Road No. 7",
            broker=broker,
            web_port=web_port,
            protocol=protocol,
        )
        text += textwrap.dedent(
            f"""
            [rules]
            [[rules.packs]]
            name = "smoke-fire"
            select = {{ profiles = ["modbus-smoke-detector"] }}  # the panel driver raises its own fire events

            [[rules.packs]]
            name = "manhole"
            select = {{ profiles = ["bthome-manhole-cover"] }}

            [[rules.packs]]
            name = "electricity"
            select = {{ profiles = ["dlt645-single-phase"] }}

            [[rules.packs]]
            name = "elderly-water"
            select = {{ profiles = ["cjt188-water-cold"] }}

            # The street's packs for the building's new points; hold times shortened for a short demo.
            [[rules.packs]]
            name = "meter-box"
            select = {{ profiles = ["modbus-meter-box-efm"] }}
            params = {{ residual_hold_s = 5 }}

            [[rules.packs]]
            name = "entrance"
            select = {{ profiles = ["bthome-entrance-door"] }}
            params = {{ held_open_s = 8 }}

            [[rules.packs]]
            name = "elderly-bed"
            select = {{ profiles = ["bthome-bed-occupancy"] }}

            # Flat 301: its resident's bed-foot sensor, water meter, door contact and PIR, one
            # "check on this person" (the resident falls beside the bed, out of the PIR's view).
            # For a short demo the night lasts all day and 8 s out of bed without water is enough
            # (a resident's own settings: 22:30-05:00 and 40 min); the simulated meter counts in
            # 10 L steps, so use between two reads counts from 50 L (a real flat: 2 L).
            [[rules.households]]
            id = "301"
            bed = "bed-301"
            water = "wm-301"
            door = "door-301"
            motion = "pir-301"
            night_start = "00:00"
            night_end = "23:59"
            night_out_s = 8
            night_long_s = 10
            activity_m3 = 0.05

            [[buses]]
            id = "modbus-tcp"
            protocol = "modbus_tcp"
            description = "RS-485 to Ethernet converter in the meter room"
            host = "{host}"
            port = {port}
            timeout_s = 0.5
            retries = 1
            offline_after = 2
            backoff_initial_s = 2
            backoff_max_s = 8
            """
        )
        for profile_id, unit in DEFAULT_BUILDING:
            prefix, name, floor, room = _NAMES[profile_id]
            floor = floor or str(unit % 10 or 1)
            room = room or f"{floor}0{unit % 10}"
            interval = 2 if prefix == "sd" else 5
            location = (
                f'{{ address_code = "{ADDRESS_CODE}", lat = 31.2541, lon = 121.4548, building = "7", '
                f'floor = "{floor}", room = "{room}" }}'
            )
            text += textwrap.dedent(
                f"""
                [[devices]]
                id = "{prefix}-{unit}"
                name = "{name} (unit {unit})"
                bus = "modbus-tcp"
                profile = "{profile_id}"
                address = {unit}
                poll_interval_s = {interval}
                location = {location}
                """
            )
        text += self.serial.config_toml(address_code=ADDRESS_CODE)
        assert self.box_endpoint is not None
        text += textwrap.dedent(
            f"""
            [[buses]]
            id = "modbus-stairwell"
            protocol = "modbus_tcp"
            description = "RS-485 to Ethernet converter in the 3F stairwell"
            host = "{self.box_endpoint.host}"
            port = {self.box_endpoint.port}
            timeout_s = 0.5
            retries = 1
            offline_after = 2

            [[devices]]
            id = "box-3f"
            name = "Meter box, stairwell 3F (electrical fire detector)"
            bus = "modbus-stairwell"
            profile = "modbus-meter-box-efm"
            address = {BOX_UNIT}
            poll_interval_s = 2
            location = {{ address_code = "{ADDRESS_CODE}", building = "7", floor = "3", room = "stairwell" }}
            """
        )
        text += textwrap.dedent(
            f"""
            [[buses]]
            id = "ble-street"
            protocol = "bthome"
            description = "BLE scanner: entrance, flat 301 (bed, door, PIR), manhole covers (virtual radio)"
            backend = "bumble"
            transport = "{self.radio.transport}"
            offline_after = 3
            """
        )
        for dev_id, node, name, floor, room in (
            ("door-01", self.door, "Entrance door, building 7", "1", "lobby"),
            ("bed-301", self.bed, "Bed-foot sensor, room 301", "3", "301"),
            ("door-301", self.flat_door, "Flat door contact, room 301", "3", "301"),
            ("pir-301", self.pir, "PIR motion sensor, living room 301", "3", "301"),
        ):
            loc = f'{{ address_code = "{ADDRESS_CODE}", building = "7", floor = "{floor}", room = "{room}" }}'
            text += textwrap.dedent(
                f"""
                [[devices]]
                id = "{dev_id}"
                name = "{name}"
                bus = "ble-street"
                profile = "{node.profile_id}"
                address = "{node.mac}"
                poll_interval_s = {HEARTBEAT_S}
                location = {loc}
                """
            )
        for i, (mac, component, key) in enumerate(COVERS):
            cover_location = (
                f'{{ address_code = "{ADDRESS_CODE}", lat = 31.2545, lon = 121.455{i}, '
                'text = "outside No. 7" }'
            )
            text += textwrap.dedent(
                f"""
                [[devices]]
                id = "mh-{i + 1:02d}"
                name = "Manhole cover {i + 1}, Daning Road"
                bus = "ble-street"
                profile = "bthome-manhole-cover"
                address = "{mac}"
                key = "{key.hex()}"
                component_code = "{component}"
                poll_interval_s = {HEARTBEAT_S}
                location = {cover_location}
                """
            )
        return text
