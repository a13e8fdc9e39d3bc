"""Bulkheads: a fault in one device or one bus owner stays there; `reload` rewires like the start.

- `bulkhead.device_decode_raises`: in-process gateway (the real runtime) whose Modbus driver is a
  subclass raising in decode for one unit and in planning for another: the other devices go on, the
  faulted ones show `faulted` with the reason and a device_fault alarm, and recover.
- `bulkhead.bus_owner_crash`: a bus owner whose task dies of an unexpected exception is restarted
  with backoff and a bus_fault alarm; the other bus keeps polling.
- `bulkhead.reload_keeps_rules`: a real `citynerve run`; after `reload` restarts a bus, an offline rule
  still fires for a device on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import PollRequest, Sample, StateStore
from citynerve.gateway.config import GatewayConfig, load_config
from citynerve.gateway.control import ask
from citynerve.gateway.runtime import Gateway
from citynerve.hil.faults import Broken, scenario
from citynerve.hil.faults.alarms import ADDRESS_CODE, GatewayRun, building_toml, wait_until
from citynerve.hil.sim.modbus import ModbusBuilding


class BuggyModbusDriver(ModbusDriver):
    """The real Modbus driver with a decode bug for the units in `DECODE_BUG` and a planning bug
    for the units in `PLAN_BUG` (class-level sets, so a test can heal them)."""

    DECODE_BUG: ClassVar[set[int]] = set()
    PLAN_BUG: ClassVar[set[int]] = set()
    OPEN_BUG: ClassVar[list[int]] = [0]  # open raises a non-gateway error this many more times

    def plan(self, device: Any) -> Sequence[Any]:
        if device.address in self.PLAN_BUG:
            raise KeyError(f"planner bug for unit {device.address}")
        return super().plan(device)

    async def read(self, device: Any, request: PollRequest) -> tuple[Sample, ...]:
        samples = await super().read(device, request)
        if device.address in self.DECODE_BUG:
            raise ValueError(f"decoder bug for unit {device.address}")
        return samples

    async def open(self) -> None:
        if self.OPEN_BUG[0] > 0:
            self.OPEN_BUG[0] -= 1
            raise RuntimeError("owner bug while opening")
        await super().open()


def with_buggy_driver(config: GatewayConfig, buses: Sequence[str]) -> GatewayConfig:
    """The same config, its named buses driven by BuggyModbusDriver (the real driver, subclassed)."""
    spec = config.drivers["modbus_tcp"]

    def factory(bus: Any, devices: Sequence[Any], state: StateStore | None = None) -> ModbusDriver:
        cls = BuggyModbusDriver if bus.id in buses else ModbusDriver
        return cls(bus, devices, state)

    return dataclasses.replace(
        config, drivers={**config.drivers, "modbus_tcp": dataclasses.replace(spec, factory=factory)}
    )


@contextlib.asynccontextmanager
async def running(gateway: Gateway) -> Any:
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop), name="gateway")
    try:
        await wait_until(
            lambda: gateway.pipeline is not None and len(gateway.buses) > 0, "the gateway to start"
        )
        yield task
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


def _device(status: dict[str, Any], device_id: str) -> dict[str, Any]:
    for bus in status["buses"]:
        for dev in bus["devices"]:
            if dev["id"] == device_id:
                return dict(dev)
    raise KeyError(device_id)


@scenario(
    "bulkhead.device_decode_raises",
    area="bulkheads",
    promise="a device whose plan or decode raises is faulted (event, status) and restarted with "
    "backoff; the other devices of its bus go on; it recovers",
)
async def device_decode_raises(tmp: Path) -> str:
    BuggyModbusDriver.DECODE_BUG.clear()
    BuggyModbusDriver.PLAN_BUG.clear()
    async with ModbusBuilding() as building:
        host, port = building.endpoint
        path = tmp / "gw.toml"
        path.write_text(building_toml(host, port))
        config = with_buggy_driver(load_config(path), ["tcp-1"])
        BuggyModbusDriver.DECODE_BUG.add(2)  # wm-2's decoder raises
        BuggyModbusDriver.PLAN_BUG.add(3)  # wm-3's planner raises
        gateway = Gateway(config)
        async with running(gateway) as task:
            pipeline = gateway.pipeline
            assert pipeline is not None

            def em_count() -> int:
                return gateway.owners["tcp-1"].health["em-1"].transactions

            def faulted() -> bool:
                health = gateway.owners["tcp-1"].health
                return health["wm-2"].faulted is not None and health["wm-3"].faulted is not None

            await wait_until(faulted, "wm-2 and wm-3 faulted")
            # Restarted with backoff while the bug lasts: planned again, faulted again.
            await wait_until(lambda: gateway.owners["tcp-1"].health["wm-2"].faults >= 2, "wm-2 restarted")
            st = await gateway.status()
            for dev_id in ("wm-2", "wm-3"):
                reason = _device(st, dev_id).get("faulted")
                if not reason:
                    raise Broken(f"{dev_id} is not shown faulted: {_device(st, dev_id)}")
            if (
                "decoder bug" not in _device(st, "wm-2")["faulted"]
                or "planner bug" not in _device(st, "wm-3")["faulted"]
            ):
                raise Broken(
                    f"fault reasons: {_device(st, 'wm-2')['faulted']!r}, {_device(st, 'wm-3')['faulted']!r}"
                )
            faults = {a.device_id for a in gateway.alarms.active() if a.kind == "device_fault"}
            if faults != {"wm-2", "wm-3"}:
                raise Broken(f"device_fault alarms: {faults}")
            # The others go on: em-1 keeps being read, sd-11's rules still fire.
            before = em_count()
            building.trigger_smoke(11)
            await wait_until(
                lambda: any(a.device_id == "sd-11" for a in gateway.alarms.active()), "sd-11's alarm"
            )
            await wait_until(lambda: em_count() > before + 3, "em-1 polls to go on")
            if task.done():
                raise Broken("the gateway stopped")
            # Healed: both come back (planned again after their backoff) and the faults clear.
            BuggyModbusDriver.DECODE_BUG.clear()
            BuggyModbusDriver.PLAN_BUG.clear()
            await wait_until(
                lambda: not any(a.kind == "device_fault" for a in gateway.alarms.active()),
                "the faults to clear",
            )
            st = await gateway.status()
            if _device(st, "wm-2")["faulted"] or _device(st, "wm-3")["faulted"]:
                raise Broken("still shown faulted after recovering")
            if not pipeline.latest("wm-2") or not pipeline.latest("wm-3"):
                raise Broken("no readings from the recovered devices")
            restarts = _device(st, "wm-2")["faults"]
        return f"wm-2 faulted {restarts} times then recovered; em-1 polled throughout"


@scenario(
    "bulkhead.bus_owner_crash",
    area="bulkheads",
    promise="a bus owner task that dies of an unexpected exception is restarted with backoff and a "
    "bus_fault event; the other buses go on",
)
async def bus_owner_crash(tmp: Path) -> str:
    BuggyModbusDriver.DECODE_BUG.clear()
    BuggyModbusDriver.PLAN_BUG.clear()
    BuggyModbusDriver.OPEN_BUG[0] = 2  # the owner of tcp-2 crashes twice while opening
    async with ModbusBuilding() as building:
        host, port = building.endpoint
        path = tmp / "gw.toml"
        second = textwrap.dedent(
            f"""
            [[buses]]
            id = "tcp-2"
            protocol = "modbus_tcp"
            host = "{host}"
            port = {port}
            timeout_s = 0.3
            backoff_initial_s = 0.5
            backoff_max_s = 1
            [[devices]]
            id = "em-9"
            bus = "tcp-2"
            profile = "modbus-power-meter-3ph"
            address = 1
            poll_interval_s = 0.5
            location = {{ address_code = "{ADDRESS_CODE}" }}
            """
        )
        path.write_text(building_toml(host, port, extra=second))
        gateway = Gateway(with_buggy_driver(load_config(path), ["tcp-2"]))
        seen_fault: list[bool] = []

        def watch() -> bool:
            if any(a.kind == "bus_fault" for a in gateway.alarms.active()):
                seen_fault.append(True)
            return gateway.buses["tcp-2"].crashes >= 2

        async with running(gateway) as task:
            await wait_until(watch, "two crashes of tcp-2's owner")
            await wait_until(
                lambda: gateway.owners["tcp-2"].health["em-9"].online is True, "tcp-2 polling again"
            )
            await wait_until(
                lambda: not any(a.kind == "bus_fault" for a in gateway.alarms.active()),
                "the bus_fault to clear",
            )
            if not seen_fault:
                raise Broken("no bus_fault alarm was raised")
            if gateway.owners["tcp-1"].health["em-1"].online is not True or task.done():
                raise Broken("the other bus or the gateway stopped")
            st = await gateway.status()
            crashes = next(b["crashes"] for b in st["buses"] if b["id"] == "tcp-2")
        return f"tcp-2's owner crashed {crashes} times and was restarted; tcp-1 polled throughout"


@scenario(
    "bulkhead.reload_keeps_rules",
    area="bulkheads",
    promise="a bus restarted by `reload` is wired as at start: its devices' offline rules still fire",
)
async def reload_keeps_rules(tmp: Path) -> str:
    async with ModbusBuilding() as building:
        host, port = building.endpoint
        config = tmp / "gw.toml"
        config.write_text(building_toml(host, port))
        gw = GatewayRun(config)
        try:
            await gw.start()

            async def online() -> bool:
                return bool((await gw.status())["devices_online"] == 4)

            await gw.wait(online, "4 devices online")
            changed = building_toml(host, port).replace("timeout_s = 0.3", "timeout_s = 0.4")  # tcp-1 changes
            config.write_text(changed)
            result = await ask(gw.sock, "reload")
            if result.get("changed") != ["tcp-1"]:
                raise Broken(f"reload did not restart tcp-1: {result}")
            building.silence(2)

            async def rule_fired() -> bool:
                alarms = (await gw.status())["alarms"]
                return any(a["device_id"] == "wm-2" and a["rule"] == "meter_offline" for a in alarms)

            await gw.wait(rule_fired, "the offline rule for wm-2 on the reloaded bus")
            if await gw.stop() != 0:
                raise Broken("gateway did not stop cleanly")
        finally:
            await gw.kill()
    return "the offline rule fired for a device on the reloaded bus"
