"""The verdict against real peers: simulated DL/T 645 meters on a pty line, the real driver and owner.

Wrong baud rate (every meter silent: the line's settings are named), two meters on one address
(their replies collide: that address garbled while the others are clean), one meter unplugged.
The radio patterns (wrong key, never heard) run against bumble in tests/ble/test_bus_owner.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from citynerve.drivers.dlt645 import Dlt645Device, Dlt645Driver
from citynerve.drivers.serialio import SerialBusConfig
from citynerve.gateway.api import Event, SampleBatch
from citynerve.gateway.bus import BusOwner
from citynerve.hil.sim.serial import Fault, SerialMeterBus, SimDlt645Meter

LOCATION = {"address_code": "320508001"}
ENERGY_DI = 0x00010000


class Sink:
    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []

    def submit(self, batch: SampleBatch) -> None:
        self.batches.append(batch)

    def event(self, event: Event) -> None:
        pass

    def mark_offline(self, device_id: str, ts: float) -> None:
        pass


def meter_device(address: str) -> Dlt645Device:
    return Dlt645Device.model_validate(
        {
            "id": f"em-{address[-4:]}",
            "bus": "rs485-1",
            "profile": "dlt645-generic",
            "address": address,
            "location": LOCATION,
            "poll_interval_s": 0.05,
            "points": {"energy": {"di": "00010000", "unit": "kWh"}},
        }
    )


@contextlib.asynccontextmanager
async def running(port: str, devices: Sequence[Dlt645Device], baudrate: int) -> AsyncIterator[BusOwner]:
    bus = SerialBusConfig(
        id="rs485-1",
        protocol="dlt645",
        port=port,
        baudrate=baudrate,
        timeout_s=0.5,  # generous: a loaded test machine must not turn slow replies into timeouts
        gap_s=0.0,
        retries=0,
        offline_after=2,
        backoff_initial_s=0.1,
        backoff_max_s=0.2,
    )
    owner = BusOwner(bus, devices, Dlt645Driver(bus, devices), Sink())
    task = asyncio.create_task(owner.run(), name="test.owner")
    try:
        yield owner
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(
    owner: BusOwner, check: Callable[[dict[str, Any]], bool], within: float = 20.0
) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            snap = owner.snapshot()
            if check(snap):
                return snap
            await asyncio.sleep(0.05)


def by_id(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in snap["devices"]}


async def test_wrong_baud_rate_names_the_line_settings() -> None:
    meters = [SimDlt645Meter(f"00000000016{i}") for i in range(1, 4)]
    devices = [meter_device(m.address) for m in meters]
    async with (
        SerialMeterBus(meters=meters, baudrate=2400, enforce_baud=True) as sim,
        running(sim.port, devices, baudrate=9600) as owner,
    ):
        snap = await until(owner, lambda s: s["verdict"]["cause"] == "line_silent")
    assert snap["verdict"]["state"] == "offline"
    assert f"configured {sim.port} 9600 8E1" in snap["verdict"]["reason"]
    # The command to run, as typed: the hint said "`diag <protocol> probe`".
    assert "`citynerve diag dlt645 probe --bus rs485-1` tries other settings" in snap["verdict"]["reason"]
    assert {d["cause"] for d in snap["devices"]} == {"line_silent"}


async def test_two_meters_on_one_address_are_named_while_the_others_are_clean() -> None:
    twin_a = SimDlt645Meter("000000000161", values={ENERGY_DI: 1111.11})
    twin_b = SimDlt645Meter("000000000161", values={ENERGY_DI: 2222.22})
    other = SimDlt645Meter("000000000162")
    devices = [meter_device("000000000161"), meter_device("000000000162")]
    async with (
        SerialMeterBus(meters=[twin_a, twin_b, other], baudrate=9600) as sim,
        running(sim.port, devices, baudrate=9600) as owner,
    ):
        snap = await until(
            owner,
            lambda s: (
                by_id(s)["em-0161"]["cause"] == "duplicate_address"
                and by_id(s)["em-0162"]["window"]["attempts"] >= 5
            ),
        )
    twin = by_id(snap)["em-0161"]
    assert "two devices probably answer on 000000000161" in twin["reason"]
    assert twin["window"]["by_kind"].get("checksum", 0) >= 2
    assert by_id(snap)["em-0162"]["state"] == "online"
    assert by_id(snap)["em-0162"]["cause"] == "ok"


async def test_one_silent_meter_is_named_with_its_address() -> None:
    here = SimDlt645Meter("000000000161")
    devices = [meter_device("000000000161"), meter_device("000000000199")]  # 199 is not on the line
    async with (
        SerialMeterBus(meters=[here], baudrate=9600) as sim,
        running(sim.port, devices, baudrate=9600) as owner,
    ):
        snap = await until(owner, lambda s: by_id(s)["em-0199"]["cause"] == "device_silent")
    silent = by_id(snap)["em-0199"]
    assert silent["state"] == "offline"
    assert "configured 000000000199" in silent["reason"] and "power" in silent["reason"]
    assert by_id(snap)["em-0161"]["state"] == "online"


async def test_intermittent_meter_is_degraded_with_its_rate() -> None:
    meter = SimDlt645Meter("000000000161")
    other = SimDlt645Meter("000000000162")
    devices = [meter_device("000000000161"), meter_device("000000000162")]
    async with (
        SerialMeterBus(meters=[meter, other], baudrate=9600) as sim,
        running(sim.port, devices, baudrate=9600) as owner,
    ):
        for _ in range(10):  # one reply in three lost: about 33 % timeouts
            sim.inject(Fault.SILENCE, 1, address="000000000161")
            before = by_id(owner.snapshot())["em-0161"]["window"]["attempts"]
            await until(owner, lambda s, b=before: by_id(s)["em-0161"]["window"]["attempts"] >= b + 3)
        snap = owner.snapshot()
    dev = by_id(snap)["em-0161"]
    assert dev["cause"] == "intermittent" and dev["state"] == "degraded", dev
    assert "transactions failed" in dev["reason"] and "timeout" in dev["reason"]
    assert 0.2 <= dev["window"]["rate"] <= 0.5
