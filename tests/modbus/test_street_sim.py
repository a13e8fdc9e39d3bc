"""The street's Modbus devices (issue 18): the meter box's electrical fire detector and the street
lamp controller, simulated from their profiles on a real pymodbus server and read by the real driver."""

from __future__ import annotations

from typing import Any

from test_modbus_sim import FakeClock, at_local_hour, device_config

from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.hil.sim.modbus import SimDevice, SimProfile, serve_tcp


async def read_values(driver: ModbusDriver, device: ModbusDeviceConfig) -> dict[str, Any]:
    """Engineering values: the driver's raw samples times the point's scale (as the pipeline does)."""
    out: dict[str, Any] = {}
    for r in driver.plan(device):
        for s in await driver.read(device, r):
            scale = device.points[s.point].scale
            out[s.point] = s.value if isinstance(s.value, bool) else s.value * scale
    return out


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

    try:
        b = await read_values(driver, box_cfg)
        assert 20 < b["residual_current"] < 100 and b["residual_alarm"] is False  # natural leakage
        assert b["smoke"] is False and b["door_open"] is False and b["residual_setting"] == 300
        box.state.levels["residual_ma"] = 400.0  # an insulation fault
        box.state.levels["terminal_c"] = 50.0  # a loose terminal on phase A
        box.state.smoke = True
        b = await read_values(driver, box_cfg)
        assert b["residual_current"] > 400 and b["residual_alarm"] is True
        assert b["cable_temp_a"] > 70 and b["temperature_alarm"] is True and b["smoke"] is True
        lit = await read_values(driver, lamp_cfg)  # 20:00: the lamp is on and draws its current
        assert lit["lamp_on"] is True and lit["current"] > 0.4 and lit["lamp_fault"] is False
        lamp.state.fault = True  # the lamp fails: relay on, no current
        out = await read_values(driver, lamp_cfg)
        assert out["lamp_on"] is True and out["current"] < 0.05 and out["lamp_fault"] is True
        clock.t = at_local_hour(12.0)  # by day the relay is off: no fault bit, no current
        day = await read_values(driver, lamp_cfg)
        assert day["lamp_on"] is False and day["lamp_fault"] is False and day["dimming"] == 0
    finally:
        await driver.close()
        await endpoint.close()


async def test_lamp_on_without_current_raises_on_the_gateway_check_alone() -> None:
    """Issue 18: a lamp whose controller does not diagnose it (fault bit clear) is switched on and
    draws nothing. The pipeline derives `lamp_dark` from the relay coil and the current register, read
    by the real driver from the simulator in separate batches, and the shipped street-lamp pack raises
    `lamp_no_current` after three polls: not while switched off, not while a lamp strikes, cleared
    after a day without a dark night."""
    from citynerve.gateway.api import EventState, SampleBatch
    from citynerve.gateway.pipeline import Pipeline
    from citynerve.gateway.pipeline.derived import LAMP_DARK
    from citynerve.gateway.rules import PackRef, RuleEngine, RulesConfig
    from citynerve.hil.eval.harness import CollectingSink

    day1 = at_local_hour(12.0)
    clock = FakeClock(day1)
    lamp = SimDevice(SimProfile.load("modbus-lamp-controller"), 31, clock=clock)
    endpoint = await serve_tcp([lamp])
    cfg = device_config("modbus-lamp-controller", 31)
    driver = ModbusDriver(
        ModbusTcpBusConfig(id="b", host=endpoint.host, port=endpoint.port, timeout_s=0.5), [cfg]
    )
    rules = RuleEngine(RulesConfig(packs=(PackRef(name="street-lamp"),)), [cfg], clock=clock)
    sink = CollectingSink()
    pipe = Pipeline({cfg.id: cfg}, sink, rules)
    dark: list[tuple[float, object]] = []  # the derived point's values as polled

    async def poll_until(t_end: float, step_s: float) -> None:
        while clock.t < t_end:
            for r in driver.plan(cfg):  # one batch per request, as the bus owner submits them
                pipe.submit(SampleBatch(cfg.id, clock.t, tuple(await driver.read(cfg, r))))
            pipe.tick(clock.t)
            dark.append((clock.t, pipe.latest(cfg.id)[LAMP_DARK].value))
            clock.t += step_s

    def lamp_events() -> list[tuple[str, EventState, float]]:
        kinds = ("lamp_no_current", "lamp_out")
        return [(e.kind, e.state, e.ts) for e in sink.events if e.kind in kinds]

    await driver.open()
    try:
        # The lamp failed during the day: relay off, nothing to judge, no alarm.
        lamp.state.levels["undiagnosed"] = 1.0
        await poll_until(at_local_hour(18.0), 600.0)
        assert lamp_events() == [] and {v for _, v in dark} == {False}
        # Replaced before dusk; the new lamp strikes 150 s after the switch-on at 18:30: dark for two
        # polls, less than the hold.
        lamp.state.levels.update(undiagnosed=0.0, strike_s=150.0)
        await poll_until(at_local_hour(19.0), 60.0)
        assert [t for t, v in dark if v] == [at_local_hour(18.5) + k * 60 for k in range(3)]
        assert lamp_events() == []
        # 21:00: it fails, the controller's bit stays clear. Raised three polls later, by the gateway.
        fail = at_local_hour(21.0)
        await poll_until(fail, 300.0)
        lamp.state.levels["undiagnosed"] = 1.0
        await poll_until(fail + 600, 60.0)
        assert lamp_events() == [("lamp_no_current", EventState.RAISED, fail + 180)]
        assert pipe.latest(cfg.id)["lamp_fault"].value is False
        assert pipe.latest(cfg.id)["lamp_on"].value is True and pipe.latest(cfg.id)["current"].value < 0.01
        # Dawn switches it off (not dark while on any more), the crew replaces it by day, the next
        # night is lit: cleared a day after the last dark poll, not re-raised in between.
        await poll_until(day1 + 86400, 600.0)
        lamp.state.levels.update(undiagnosed=0.0, strike_s=0.0)  # an LED lamp: lit at once (a dark
        # poll while a lamp strikes would restart the clear hold, as with the controller's bit)
        await poll_until(day1 + 86400 + 19 * 3600.0, 600.0)
        dawn = at_local_hour(6.0) + 86400
        assert lamp_events() == [
            ("lamp_no_current", EventState.RAISED, fail + 180),
            ("lamp_no_current", EventState.CLEARED, dawn + 86400),
        ]
    finally:
        await driver.close()
        await endpoint.close()


async def test_residual_current_relays_simulated_on_their_manuals_maps() -> None:
    """The Acrel ASJ and Schneider RHU profiles (real devices' maps) are served by the simulator with
    the meter box's circuit: natural leakage, an insulation fault, the current transformer unplugged."""
    clock = FakeClock(at_local_hour(20.0))
    asj = SimDevice(SimProfile.load("modbus-acrel-asj-rcm"), 41, clock=clock)
    rhu = SimDevice(SimProfile.load("modbus-schneider-rhu-rcm"), 42, clock=clock)
    endpoint = await serve_tcp([asj, rhu])
    asj_cfg, rhu_cfg = (
        device_config("modbus-acrel-asj-rcm", 41),
        device_config("modbus-schneider-rhu-rcm", 42),
    )
    driver = ModbusDriver(
        ModbusTcpBusConfig(id="b", host=endpoint.host, port=endpoint.port, timeout_s=0.5), [asj_cfg, rhu_cfg]
    )
    await driver.open()

    try:
        a, r = await read_values(driver, asj_cfg), await read_values(driver, rhu_cfg)
        for v in (a, r):  # natural leakage, nothing raised
            assert 20 < v["residual_current"] < 100, v
            assert v["residual_alarm"] is False and v["residual_prewarning"] is False
            assert v["residual_setting"] == 300
        assert a["sensor_fault"] is False and a["prewarning_setting"] == 240
        assert r["toroid_connected"] is True and r["alarm_memorized"] is False
        for dev in (asj, rhu):
            dev.state.levels["residual_ma"] = 230.0  # an insulation fault: past the prewarning
        a, r = await read_values(driver, asj_cfg), await read_values(driver, rhu_cfg)
        for v in (a, r):
            assert v["residual_prewarning"] is True and v["residual_alarm"] is False, v
        for dev in (asj, rhu):
            dev.state.levels["residual_ma"] = 400.0  # worse: past the alarm setting
        a, r = await read_values(driver, asj_cfg), await read_values(driver, rhu_cfg)
        for v in (a, r):
            assert v["residual_current"] > 400 and v["residual_alarm"] is True, v
        assert r["alarm_memorized"] is True and r["residual_current_max"] > 400
        for dev in (asj, rhu):  # repaired, then the current transformer comes unplugged
            dev.state.levels["residual_ma"] = 0.0
            dev.state.fault = True
        a, r = await read_values(driver, asj_cfg), await read_values(driver, rhu_cfg)
        assert a["residual_current"] == 0 and a["sensor_fault"] is True and a["residual_alarm"] is False
        assert r["residual_current"] == 0 and r["toroid_connected"] is False
        assert r["alarm_memorized"] is True and r["residual_current_max"] > 400  # kept until reset
    finally:
        await driver.close()
        await endpoint.close()


async def test_dali_lamps_simulated_behind_one_modbus_dali_gateway() -> None:
    """The Intesis Modbus-DALI gateway's map (modbus-intesis-dali-lamp): three LED drivers at short
    addresses 0, 5 and 63 behind unit 40, each read by the real driver as its own device
    (`register_base` = 100 x short address): lit and dimmed at midnight, one lamp failed open, one
    driver shut down hot, dark by day; undefined signals read 0, past address 20000 an exception."""
    from pymodbus.constants import ExcCodes

    from citynerve.hil.sim.modbus import SimDaliGateway

    clock = FakeClock(at_local_hour(20.0))
    gateway = SimDaliGateway(40, (0, 5, 63), clock=clock)
    endpoint = await serve_tcp([gateway])
    lamps = {
        sa: device_config("modbus-intesis-dali-lamp", 40, device_id=f"lamp-{sa}", register_base=100 * sa)
        for sa in (0, 5, 63)
    }
    driver = ModbusDriver(
        ModbusTcpBusConfig(id="b", host=endpoint.host, port=endpoint.port, timeout_s=0.5),
        list(lamps.values()),
    )
    await driver.open()
    try:
        for cfg in lamps.values():
            v = await read_values(driver, cfg)
            assert v["lamp_on"] is True and v["dimming"] == 100 and v["device_type"] == 6
            assert v["lamp_fault"] is False and v["driver_fault"] is False and v["open_circuit"] is False
        gateway.ballasts[5].state.fault = True  # lamp 5's LED module fails open
        gateway.ballasts[63].state.levels["overheat"] = 1.0  # lamp 63's driver shuts down hot
        clock.t = at_local_hour(23.5)
        v0, v5, v63 = [await read_values(driver, lamps[sa]) for sa in (0, 5, 63)]
        assert v0["dimming"] == 50 and v0["lamp_fault"] is False and v0["thermal_shutdown"] is False
        assert v5["lamp_fault"] is True and v5["open_circuit"] is True and v5["driver_fault"] is False
        assert v63["thermal_shutdown"] is True and v63["lamp_fault"] is False
        clock.t = at_local_hour(12.0)  # by day: off, no lamp failure reported
        v5 = await read_values(driver, lamps[5])
        assert v5["lamp_on"] is False and v5["dimming"] == 0 and v5["lamp_fault"] is False
        # Signals the profile does not read are 0 (the manual: undefined addresses report 0) ...
        assert gateway.registers("holding", 520, 3) == [0, 0, 0]
        assert gateway.registers("holding", 1005, 1) == [0]  # short address 10: no ballast there
        # ... FC 04 reads the same registers, and nothing is answered past address 20000.
        assert gateway.registers("input", 505, 2) == gateway.registers("holding", 505, 2)
        assert gateway.registers("holding", 20000, 2) == ExcCodes.ILLEGAL_ADDRESS
        assert gateway.registers("coil", 0, 1) == ExcCodes.ILLEGAL_FUNCTION
    finally:
        await driver.close()
        await endpoint.close()
