"""A smoke detector stuck in alarm is removed from the config (a technician replaced it) while its
alarm holds a leak's valve close back (the shipped interlock `water_on_during_fire`), against a real
pymodbus server: a riser valve controller (unit 1) and the detector's input (unit 2), building 7.

After a restart, the platform was told the detector's alarm cleared, but its interlock entry stayed:
the held close never ran and every later close in the building was `interlocked ... smoke raised
on sd-3`, the valve open on a live leak until the next restart. A reload removing the detector did
the same until a restart."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import ModbusTcpServer

from citynerve.gateway.alarms import STATE_KEY as ALARMS_KEY
from citynerve.gateway.config import load_config
from citynerve.gateway.store import AsyncOutbox
from citynerve.hil.faults.config import GATEWAY_HEAD, PROFILE, RULES
from tests.fieldtools.conftest import run_gateway, wait_for
from tests.integration.run_process import Run


class Site:
    """The pymodbus server: the riser's open valve (coil 3) and leak input, the detector's smoke."""

    def __init__(self) -> None:
        self.riser_coils = ModbusSequentialDataBlock(0, [0] * 16)
        self.riser_inputs = ModbusSequentialDataBlock(0, [0] * 16)
        self.detector_inputs = ModbusSequentialDataBlock(0, [0] * 16)
        self.riser_coils.setValues(4, [1])  # the valve is open (coil 3; blocks are 1-based)
        devices = {
            1: ModbusDeviceContext(co=self.riser_coils, di=self.riser_inputs),
            2: ModbusDeviceContext(co=ModbusSequentialDataBlock(0, [0] * 16), di=self.detector_inputs),
        }
        context = ModbusServerContext(devices=devices, single=False)
        self.server = ModbusTcpServer(context, address=("127.0.0.1", 0))

    def valve_open(self) -> bool:
        return bool(self.riser_coils.getValues(4, 1)[0])  # type: ignore[index]

    def leak(self) -> None:
        self.riser_inputs.setValues(1, [1])

    def smoke(self) -> None:
        self.detector_inputs.setValues(2, [1])

    def config(self, folder: Path, *, detector: bool) -> Path:
        port = self.server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        (folder / "profiles").mkdir(exist_ok=True)
        (folder / "profiles" / "valve-controller.toml").write_text(PROFILE)
        text = GATEWAY_HEAD + '\n[log]\nformat = "json"\nlevel = "info"\n' + RULES
        text += f'\n[[buses]]\nid = "tcp-1"\nprotocol = "modbus_tcp"\nhost = "127.0.0.1"\nport = {port}\n'
        text += "timeout_s = 0.5\n" + device("riser-1", 1)
        if detector:
            text += device("sd-3", 2)
        path = folder / "gw.toml"
        path.write_text(text)
        return path


def device(device_id: str, unit: int) -> str:
    return textwrap.dedent(
        f"""
        [[devices]]
        id = "{device_id}"
        bus = "tcp-1"
        profile = "valve-controller"
        address = {unit}
        location = {{ address_code = "310106013007", building = "7" }}
        """
    )


@contextlib.asynccontextmanager
async def site() -> AsyncIterator[Site]:
    s = Site()
    await s.server.serve_forever(background=True)
    try:
        yield s
    finally:
        await s.server.shutdown()


async def stuck_smoke_holds_the_close(s: Site, short_dir: Path) -> None:
    """Run 1: sd-3 stuck in alarm, then the riser leaks: its close is held by the interlock."""
    async with Run(s.config(short_dir, detector=True)) as run:
        s.smoke()  # stuck in alarm
        await run.until("rule smoke on sd-3: raised")
        s.leak()
        held = await run.until("action close_valve on riser-1.valve")
        assert "interlocked interlock water_on_during_fire: smoke raised on sd-3" in held, held


async def test_a_detector_removed_while_in_alarm_releases_the_valve_after_a_restart(short_dir: Path) -> None:
    async with site() as s:
        await stuck_smoke_holds_the_close(s, short_dir)
        assert s.valve_open()
        # The technician replaces the detector and removes it from the config; the riser still leaks.
        async with Run(s.config(short_dir, detector=False)) as run:
            await run.until("alarm smoke on sd-3 (smoke) no longer active: cleared")
            done = await run.until("action close_valve on riser-1.valve = False: ")
            assert done.endswith(": done "), done
            assert not s.valve_open()


async def test_a_detector_removed_by_a_reload_while_in_alarm_releases_the_valve(short_dir: Path) -> None:
    async with site() as s, run_gateway(load_config(s.config(short_dir, detector=True))) as gw:
        assert gw.rules is not None
        s.smoke()
        await wait_for(lambda: any(a.device_id == "sd-3" for a in gw.alarms.active()), 10.0)
        s.leak()
        await wait_for(lambda: bool(gw.rules and gw.rules.actions._held), 10.0)  # interlocked
        s.config(short_dir, detector=False)
        report: dict[str, Any] = await gw.reload()
        assert report["restart_needed_for"] == []  # the rule engine takes the new devices
        assert not any(a.device_id == "sd-3" for a in gw.alarms.active())  # told cleared
        await wait_for(lambda: not s.valve_open(), 10.0)
        assert gw.rules.actions.interlocks.blocking("close_valve", "riser-1", "valve", False) is None
        await gw.rules.actions.wait_idle()  # its read-back, before the stop takes the bus away


async def test_a_detector_removed_while_the_alarm_registry_is_unreadable_releases_it_too(
    short_dir: Path,
) -> None:
    """A damaged alarm registry: the rules snapshot is the truth, but an interlock entry of a device
    no longer configured is dropped all the same (nothing could ever clear it)."""
    async with site() as s:
        first = load_config(s.config(short_dir, detector=True))
        async with run_gateway(first) as gw:
            s.smoke()
            await wait_for(lambda: any(a.device_id == "sd-3" for a in gw.alarms.active()), 10.0)
            s.leak()  # after the smoke: a leak read first would close the valve before the interlock
            await wait_for(lambda: bool(gw.rules and gw.rules.actions._held), 10.0)  # interlocked
        async with AsyncOutbox.from_config(first.store) as outbox:
            await outbox.put(ALARMS_KEY, "{damaged")
        async with run_gateway(load_config(s.config(short_dir, detector=False))) as gw:
            assert gw.alarms.unreadable and gw.rules is not None
            await wait_for(lambda: not s.valve_open(), 10.0)
            await gw.rules.actions.wait_idle()
