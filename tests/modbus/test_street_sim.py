"""The street's Modbus devices (issue 18): the meter box's electrical fire detector and the street
lamp controller, simulated from their profiles on a real pymodbus server and read by the real driver."""

from __future__ import annotations

from typing import Any

from test_modbus_sim import FakeClock, at_local_hour, device_config

from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.hil.sim.modbus import SimDevice, SimProfile, serve_tcp


async def test_meter_box_and_lamp_over_tcp_with_faults() -> None:
    clock = FakeClock(at_local_hour(20.0))
    box = SimDevice(SimProfile.load("modbus-meter-box-efm"), 21, clock=clock)
    lamp = SimDevice(SimProfile.load("modbus-lamp-controller"), 31, clock=clock)
    endpoint = await serve_tcp([box, lamp])
    box_cfg, lamp_cfg = device_config("modbus-meter-box-efm", 21), device_config("modbus-lamp-controller", 31)
    driver = ModbusDriver(
        ModbusTcpBusConfig(id="b", host=endpoint.host, port=endpoint.port, timeout_s=0.5), [box_cfg, lamp_cfg]
    )
    await driver.open()

    async def read(device: ModbusDeviceConfig) -> dict[str, Any]:
        """Engineering values: the driver's raw samples times the point's scale (as the pipeline does)."""
        out: dict[str, Any] = {}
        for r in driver.plan(device):
            for s in await driver.read(device, r):
                scale = device.points[s.point].scale
                out[s.point] = s.value if isinstance(s.value, bool) else s.value * scale
        return out

    try:
        b = await read(box_cfg)
        assert 20 < b["residual_current"] < 100 and b["residual_alarm"] is False  # natural leakage
        assert b["smoke"] is False and b["door_open"] is False and b["residual_setting"] == 300
        box.state.levels["residual_ma"] = 400.0  # an insulation fault
        box.state.levels["terminal_c"] = 50.0  # a loose terminal on phase A
        box.state.smoke = True
        b = await read(box_cfg)
        assert b["residual_current"] > 400 and b["residual_alarm"] is True
        assert b["cable_temp_a"] > 70 and b["temperature_alarm"] is True and b["smoke"] is True
        lit = await read(lamp_cfg)  # 20:00: the lamp is on and draws its current
        assert lit["lamp_on"] is True and lit["current"] > 0.4 and lit["lamp_fault"] is False
        lamp.state.fault = True  # the lamp fails: relay on, no current
        out = await read(lamp_cfg)
        assert out["lamp_on"] is True and out["current"] < 0.05 and out["lamp_fault"] is True
        clock.t = at_local_hour(12.0)  # by day the relay is off: no fault bit, no current
        day = await read(lamp_cfg)
        assert day["lamp_on"] is False and day["lamp_fault"] is False and day["dimming"] == 0
    finally:
        await driver.close()
        await endpoint.close()
