"""Diagnosis benchmark: inject each field fault into simulators and the line relay, let the real
drivers and bus owner run, and check that the verdict (and the probe) names the injected cause.

Every fault runs against real peers: DL/T 645 / CJ/T 188 meters on ptys (SerialMeterBus), pymodbus
servers, the line relay that re-times bytes at each side's settings (wrong baud, A/B swapped, bit
errors, collisions), and bumble's virtual radio for BTHome nodes. Time-to-cause is wall time from
the start of the fault until the verdict first names the expected cause, with polling compressed
(0.1 s poll interval, 0.3 s timeout: a field bus polls every 5-60 s, so field minutes are longer in
proportion; the count of transactions the verdict needed is reported too).

    python -m citynerve.hil.bench.diagnosis [--json] [--only NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from citynerve.drivers.bthome import BTHomeDevice, BTHomeDriver
from citynerve.drivers.cjt188 import Cjt188Device, Cjt188Driver
from citynerve.drivers.dlt645 import Dlt645Device, Dlt645Driver
from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusRtuBusConfig, ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.drivers.serialio import SerialBusConfig
from citynerve.gateway.api import BusConfig, DeviceConfig, Driver, Event, SampleBatch
from citynerve.gateway.bus import BusOwner
from citynerve.gateway.bus.probe import PROBE, LineSettings
from citynerve.gateway.timecheck import time_status
from citynerve.gateway.timesync import kernel_synced
from citynerve.hil.sim.ble import ManholeCoverNode, VirtualRadio
from citynerve.hil.sim.modbus import PROFILES_DIR, SimDevice, SimProfile, serve_rtu, serve_tcp
from citynerve.hil.sim.serial import Fault, LineRelay, SerialMeterBus, SimCjt188Meter, SimDlt645Meter

LIMIT_S = 60.0
LOCATION = {"address_code": "320508001"}
METERS = ("000000000161", "000000000162", "000000000163")
BLE_KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
BLE_MAC = "A4:C1:38:00:00:01"


class _Sink:
    def submit(self, batch: SampleBatch) -> None:
        pass

    def event(self, event: Event) -> None:
        pass

    def mark_offline(self, device_id: str, ts: float) -> None:
        pass


@dataclass
class Outcome:
    fault: str
    expected: str
    named: str
    seconds: float | None  # to the first verdict naming the expected cause
    transactions: int
    reason: str

    @property
    def right(self) -> bool:
        return self.named == self.expected

    def to_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "expected": self.expected,
            "named": self.named,
            "right": self.right,
            "seconds_to_cause": None if self.seconds is None else round(self.seconds, 2),
            "minutes_to_cause": None if self.seconds is None else round(self.seconds / 60, 3),
            "transactions": self.transactions,
            "reason": self.reason,
        }


@contextlib.asynccontextmanager
async def _owner(
    bus: BusConfig, devices: Sequence[DeviceConfig], driver: Driver[Any, Any]
) -> AsyncIterator[BusOwner]:
    owner = BusOwner(bus, devices, driver, _Sink())
    task = asyncio.create_task(owner.run(), name=f"bench.owner[{bus.id}]")
    try:
        yield owner
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


Named = Callable[[], tuple[str, str]]  # -> (cause named now, reason)


async def _watch(name: str, expected: str, owner: BusOwner | None, named: Named) -> Outcome:
    started = time.monotonic()
    cause, reason = "none", ""
    while time.monotonic() - started < LIMIT_S:
        cause, reason = named()
        if cause == expected:
            n = owner.counters.transactions if owner else 0
            return Outcome(name, expected, cause, time.monotonic() - started, n, reason)
        await asyncio.sleep(0.05)
    return Outcome(name, expected, cause, None, owner.counters.transactions if owner else 0, reason)


def _bus_cause(owner: BusOwner) -> Named:
    def named() -> tuple[str, str]:
        v = owner.snapshot()["verdict"]
        return str(v["cause"]), str(v["reason"])

    return named


def _device_cause(owner: BusOwner, device_id: str) -> Named:
    def named() -> tuple[str, str]:
        d = next(x for x in owner.snapshot()["devices"] if x["id"] == device_id)
        return str(d["cause"]), str(d["reason"])

    return named


def _meter_bus(port: str, baudrate: int = 2400, **kw: Any) -> SerialBusConfig:
    return SerialBusConfig(
        id="rs485-1", protocol=kw.pop("protocol", "dlt645"), port=port, baudrate=baudrate, parity="E",
        timeout_s=0.3, gap_s=0.0, retries=1, offline_after=3, backoff_initial_s=0.3, backoff_max_s=1.0, **kw,
    )  # fmt: skip


def _dlt(address: str) -> Dlt645Device:
    return Dlt645Device.model_validate(
        {
            "id": f"em-{address[-3:]}", "bus": "rs485-1", "profile": "dlt645-generic", "address": address,
            "location": LOCATION, "poll_interval_s": 0.1,
            "points": {
                "energy": {"di": "00010000", "unit": "kWh"},
                "voltage": {"di": "02010100", "unit": "V"},
            },
        }
    )  # fmt: skip


async def _dlt_line(
    name: str,
    expected: str,
    *,
    meters: Sequence[SimDlt645Meter] | None = None,
    devices: Sequence[str] = METERS,
    gateway_baud: int = 2400,
    device: str | None = None,
    relay_kw: dict[str, Any] | None = None,
    during: Callable[[SerialMeterBus, BusOwner], Coroutine[Any, Any, None]] | None = None,
) -> Outcome:
    meters = list(meters or [SimDlt645Meter(a) for a in METERS])
    devs = [_dlt(a) for a in devices]
    async with (
        SerialMeterBus(meters=meters, baudrate=2400) as sim,
        LineRelay([(sim.port, LineSettings(2400, "E", 1))], **(relay_kw or {})) as relay,
    ):
        bus = _meter_bus(relay.port, gateway_baud)
        async with _owner(bus, devs, Dlt645Driver(bus, devs)) as owner:
            task = asyncio.create_task(during(sim, owner)) if during else None
            try:
                named = _device_cause(owner, device) if device else _bus_cause(owner)
                return await _watch(name, expected, owner, named)
            finally:
                if task:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task


async def wrong_baud() -> Outcome:
    return await _dlt_line(
        "wrong baud rate (DL/T 645 at 2400, config 9600)", "line_silent", gateway_baud=9600
    )


async def wrong_baud_probe() -> Outcome:
    """The probe through the owner of the running bus names the meters' speed."""
    meters = [SimDlt645Meter(a) for a in METERS]
    devs = [_dlt(a) for a in METERS]
    async with (
        SerialMeterBus(meters=meters, baudrate=2400) as sim,
        LineRelay([(sim.port, LineSettings(2400, "E", 1))]) as relay,
    ):
        bus = _meter_bus(relay.port, 9600)
        async with _owner(bus, devs, Dlt645Driver(bus, devs)) as owner:
            started = time.monotonic()
            result = await owner.diag(PROBE, {"timeout_s": 0.3})
            found = f"answer at {result['found']}" if result.get("found") else "nothing found"
            return Outcome(
                "wrong baud rate: probe on the live line", "answer at 2400 8E1", found,
                time.monotonic() - started, owner.counters.transactions, result["conclusion"],
            )  # fmt: skip


async def ab_swapped() -> Outcome:
    return await _dlt_line("A/B swapped", "line_silent", relay_kw={"inverted": True})


async def noisy_line() -> Outcome:
    return await _dlt_line(
        "noisy line (bit errors)", "line_garbled", relay_kw={"bit_error_rate": 0.004, "seed": 7}
    )


async def duplicate_address() -> Outcome:
    meters = [
        SimDlt645Meter("000000000161", values={0x00010000: 1111.11}),
        SimDlt645Meter("000000000161", values={0x00010000: 2222.22}),
        SimDlt645Meter("000000000162"),
        SimDlt645Meter("000000000163"),
    ]
    return await _dlt_line("two meters on one address", "duplicate_address", meters=meters, device="em-161")


async def one_silent() -> Outcome:
    meters = [SimDlt645Meter(a) for a in METERS[:2]]  # 163 unpowered / wrong address
    return await _dlt_line("one meter silent", "device_silent", meters=meters, device="em-163")


async def intermittent() -> Outcome:
    async def drop_every_third(sim: SerialMeterBus, owner: BusOwner) -> None:
        while True:
            sim.inject(Fault.SILENCE, 1, address="000000000162")
            start = sim.requests
            while True:  # every third round of the line, one reply of 162 is lost
                if sim.requests >= start + 3 * len(METERS):
                    break
                await asyncio.sleep(0.02)

    return await _dlt_line(
        "intermittent meter (1 in 3 replies lost)", "intermittent", device="em-162", during=drop_every_third
    )


# The three-phase profile's phase voltages (not the line voltages voltage_ab/bc/ca).
PHASE_VOLTAGES = ("voltage_a", "voltage_b", "voltage_c")


def _modbus_point_device(word_order: str) -> ModbusDeviceConfig:
    data = tomllib.loads((PROFILES_DIR / "modbus-power-meter-3ph.toml").read_text())
    points = {n: {**p, "word_order": word_order} for n, p in data["points"].items() if n in PHASE_VOLTAGES}
    return ModbusDeviceConfig.model_validate(
        {"id": "pm-1", "bus": "tcp", "profile": "modbus-power-meter-3ph", "address": 1, "location": LOCATION,
         "poll_interval_s": 0.1, "points": points}
    )  # fmt: skip


async def swapped_word_order() -> Outcome:
    endpoint = await serve_tcp([SimDevice(SimProfile.load("modbus-power-meter-3ph"), 1)])
    try:
        bus = ModbusTcpBusConfig(id="tcp", host=endpoint.host, port=endpoint.port, timeout_s=0.5)
        dev = _modbus_point_device("little")
        async with _owner(bus, [dev], ModbusDriver(bus, [dev])) as owner:
            return await _watch(
                "swapped word order", "implausible_values", owner, _device_cause(owner, "pm-1")
            )
    finally:
        await endpoint.close()


async def modbus_wrong_baud_probe() -> Outcome:
    water = SimProfile.load("modbus-water-meter")
    data = tomllib.loads((PROFILES_DIR / "modbus-water-meter.toml").read_text())
    dev = ModbusDeviceConfig.model_validate(
        {"id": "wm-2", "bus": "rtu", "profile": "modbus-water-meter", "address": 2, "location": LOCATION,
         "poll_interval_s": 0.1, "points": {"flow_rate": data["points"]["flow_rate"]}}
    )  # fmt: skip
    async with LineRelay([(None, LineSettings(19200, "N", 1))]) as relay:
        server = await serve_rtu([SimDevice(water, 2)], url=relay.device_ports[0])
        try:
            bus = ModbusRtuBusConfig(id="rtu", port=relay.port, baudrate=9600, timeout_s=0.3, retries=0)
            async with _owner(bus, [dev], ModbusDriver(bus, [dev])) as owner:
                started = time.monotonic()
                result = await owner.diag(PROBE, {"parities": ["N"], "timeout_s": 0.3})
                found = f"answer at {result['found']}" if result.get("found") else "nothing found"
                return Outcome(
                    "Modbus RTU wrong baud rate: probe", "answer at 19200 8N1", found,
                    time.monotonic() - started, owner.counters.transactions, result["conclusion"],
                )  # fmt: skip
        finally:
            await server.close()


def _node(key: bytes | None) -> BTHomeDevice:
    return BTHomeDevice.model_validate(
        {
            "id": "mh-1", "bus": "ble0", "profile": "bthome-manhole-cover", "address": BLE_MAC,
            "location": LOCATION, "poll_interval_s": 0.3, "key": key.hex() if key else None,
            "points": {"tilt": {"name": "tilt", "object": "rotation", "unit": "°"}},
        }
    )  # fmt: skip


async def _ble(name: str, expected: str, node_key: bytes | None, advertise: bool) -> Outcome:
    from citynerve.drivers.ble import Backend, BleBusConfig

    with VirtualRadio(f"bench{time.monotonic_ns()}") as radio:
        bus = BleBusConfig(id="ble0", protocol="bthome", backend=Backend.BUMBLE, transport=radio.transport,
                           offline_after=2, backoff_initial_s=0.1)  # fmt: skip
        dev = _node(BLE_KEY)
        async with _owner(bus, [dev], BTHomeDriver(bus, [dev])) as owner:
            node = ManholeCoverNode(radio, BLE_MAC, key=node_key)

            async def advertise_forever() -> None:
                tilt = 0.0
                while advertise:
                    tilt += 0.5
                    await node.state(tilt_deg=tilt)
                    await asyncio.sleep(0.1)

            task = asyncio.create_task(advertise_forever())
            try:
                return await _watch(name, expected, None, _device_cause(owner, "mh-1"))
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def wrong_ble_key() -> Outcome:
    return await _ble("BLE node with another key", "wrong_key", bytes(16), True)


async def ble_out_of_range() -> Outcome:
    return await _ble("BLE node never heard (range, battery)", "never_heard", BLE_KEY, False)


async def clock_wrong() -> Outcome:
    day = 86400.0
    meters = [SimCjt188Meter(a, clock_offset_s=-2 * day) for a in ("00000000000012", "00000000000013")]
    devs = [
        Cjt188Device.model_validate(
            {
                "id": f"wm-{m.address[-2:]}",
                "bus": "rs485-1",
                "profile": "cjt188-water",
                "address": m.address,
                "location": LOCATION,
                "poll_interval_s": 0.1,
                "points": {
                    "flow_total": {"field": "flow_total", "unit": "m3"},
                    "meter_time": {"field": "meter_time"},
                },
            }
        )
        for m in meters
    ]
    async with SerialMeterBus(meters=meters, baudrate=2400) as sim:
        bus = _meter_bus(sim.port, 2400, protocol="cjt188")
        async with _owner(bus, devs, Cjt188Driver(bus, devs)) as owner:

            def named() -> tuple[str, str]:
                st = time_status(owner.quality.meter_skew, synchronized=kernel_synced())
                return str(st["verdict"]), str(st["reason"])

            return await _watch("gateway clock 2 days ahead", "clock_wrong", owner, named)


FAULTS: dict[str, Callable[[], Awaitable[Outcome]]] = {
    "wrong_baud": wrong_baud,
    "wrong_baud_probe": wrong_baud_probe,
    "modbus_wrong_baud_probe": modbus_wrong_baud_probe,
    "ab_swapped": ab_swapped,
    "noisy_line": noisy_line,
    "duplicate_address": duplicate_address,
    "one_silent": one_silent,
    "intermittent": intermittent,
    "swapped_word_order": swapped_word_order,
    "wrong_ble_key": wrong_ble_key,
    "ble_out_of_range": ble_out_of_range,
    "clock_wrong": clock_wrong,
}


async def run(only: Sequence[str] = ()) -> list[Outcome]:
    out = []
    for name, fault in FAULTS.items():
        if only and name not in only:
            continue
        out.append(await fault())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="One JSON document instead of a table.")
    parser.add_argument(
        "--only", action="append", default=[], choices=list(FAULTS), help="Run only this fault."
    )
    args = parser.parse_args()
    outcomes = asyncio.run(run(args.only))
    right = sum(o.right for o in outcomes)
    report = {
        "faults": [o.to_dict() for o in outcomes],
        "right": right,
        "total": len(outcomes),
        "accuracy": round(right / len(outcomes), 3) if outcomes else None,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for o in outcomes:
        t = "-" if o.seconds is None else f"{o.seconds / 60:.2f} min ({o.seconds:.1f} s, {o.transactions} tx)"
        print(f"{'OK  ' if o.right else 'MISS'} {o.fault:<48} named {o.named:<22} {t}")
        print(f"     {o.reason}")
    print(f"accuracy: {right}/{len(outcomes)}")


if __name__ == "__main__":
    main()
