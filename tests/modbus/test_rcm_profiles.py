"""Residual-current relays in a meter box (issue 18 deliverable 1): the Acrel ASJ and Schneider RHU
profiles against their manuals' register tables. A real pymodbus server holds the registers at the
manuals' addresses (written here from the manuals, not from the profile files), the real driver
polls them through the profile, and the shipped meter-box pack raises its events on them."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modbus_support import GATEWAY_RS485_TOML, LOCATION, BankServer, device_model, start_bank_server
from test_modbus_sim import FakeClock, at_local_hour, device_config

from citynerve.drivers.modbus.config import ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import EventState, SampleBatch
from citynerve.gateway.config import load_config
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.rules import PackRef, RuleEngine, RulesConfig, check_rules
from citynerve.hil.eval.harness import CollectingSink

ASJ, RHU = "modbus-acrel-asj-rcm", "modbus-schneider-rhu-rcm"
UNIT = 7

# Acrel ASJ user manual 8.3 "Communication Address Table": word addresses, FC 03.
ASJ_RESIDUAL, ASJ_SETTING, ASJ_PREWARNING_SETTING = 0x0000, 0x0008, 0x0009
ASJ_UNIT_ID, ASJ_BAUD, ASJ_STATUS, ASJ_DI = 0x0018, 0x0019, 0x001B, 0x001E
ASJ_PREWARNING, ASJ_ALARM, ASJ_BREAK_LINE = 0b001, 0b010, 0b100  # 001BH bits 2..0
# Schneider VigiPacT RHU "Channel Summary Registers": 0-based addresses (register - 1).
RHU_ALARM, RHU_PREALARM, RHU_MEMORIZED, RHU_TOROID = 0x00C9, 0x00CB, 0x00CD, 0x00CF
RHU_VALIDITY = (0x00C8, 0x00CA, 0x00CC, 0x00CE)  # 1 = the status bit after it is valid
RHU_RESIDUAL, RHU_RESIDUAL_MAX, RHU_THRESHOLD = 0x0190, 0x01A4, 0x01F4

# What each manual's device holds in a healthy box: a 35-40 mA natural leakage, 300 mA set.
HEALTHY: dict[str, dict[int, int]] = {
    ASJ: {
        ASJ_RESIDUAL: 35,
        ASJ_SETTING: 300,
        ASJ_PREWARNING_SETTING: 150,
        ASJ_UNIT_ID: UNIT,
        ASJ_BAUD: 2,  # 9600
        ASJ_STATUS: 0,
        ASJ_DI: 0,
    },
    RHU: {
        **dict.fromkeys(RHU_VALIDITY, 1),
        RHU_ALARM: 0,
        RHU_PREALARM: 0,
        RHU_MEMORIZED: 0,
        RHU_TOROID: 1,  # a toroid is connected
        RHU_RESIDUAL: 40,
        RHU_RESIDUAL_MAX: 120,
        RHU_THRESHOLD: 300,
    },
}
RESIDUAL = {ASJ: ASJ_RESIDUAL, RHU: RHU_RESIDUAL}


class Relay:
    """One relay on a real pymodbus server, polled by the real driver into the pipeline and the
    shipped meter-box pack (selected by the relay's profile, as an installer would)."""

    def __init__(self, srv: BankServer, profile: str, clock: FakeClock) -> None:
        self.srv, self.clock = srv, clock
        self.bank = srv.banks[UNIT]
        for address, value in HEALTHY[profile].items():
            self.bank.put("holding", address, [value])
        self.cfg = device_config(profile, UNIT)
        self.driver = ModbusDriver(
            ModbusTcpBusConfig(id="b", host=srv.host, port=srv.port, timeout_s=0.5), [self.cfg]
        )
        pack = PackRef(name="meter-box", select={"profiles": [profile]})  # type: ignore[arg-type]
        self.rules = RuleEngine(RulesConfig(packs=(pack,)), [self.cfg], clock=clock)
        self.sink = CollectingSink()
        self.pipe = Pipeline({self.cfg.id: self.cfg}, self.sink, self.rules)

    def put(self, address: int, value: int) -> None:
        self.bank.put("holding", address, [value])

    async def read(self) -> dict[str, Any]:
        """Engineering values straight from the driver (raw times the point's scale)."""
        out: dict[str, Any] = {}
        for r in self.driver.plan(self.cfg):
            for s in await self.driver.read(self.cfg, r):
                out[s.point] = (
                    s.value if isinstance(s.value, bool) else s.value * self.cfg.points[s.point].scale
                )
        return out

    async def poll_until(self, t_end: float, step_s: float = 10.0) -> None:
        """The bus owner's 10 s polls, one batch per request, and the runtime's tick."""
        while self.clock.t < t_end:
            for r in self.driver.plan(self.cfg):
                self.pipe.submit(
                    SampleBatch(self.cfg.id, self.clock.t, tuple(await self.driver.read(self.cfg, r)))
                )
            self.pipe.tick(self.clock.t)
            self.clock.t += step_s

    def events(self) -> list[tuple[str, EventState, float]]:
        return [(e.kind, e.state, e.ts) for e in self.sink.events]

    def rule_ids(self) -> set[str]:
        return {inst.rule.id for inst in self.rules.instances.values()}


async def with_relay(profile: str, body: Callable[[Relay], Any]) -> None:
    srv = await start_bank_server((UNIT,))
    relay = Relay(srv, profile, FakeClock(at_local_hour(20.0)))
    await relay.driver.open()
    try:
        await body(relay)
    finally:
        await relay.driver.close()
        await srv.server.shutdown()


# The meter-box pack's rules a residual-current relay gets: none on temperatures, smoke or the door.
RELAY_RULES = {
    "meter-box.residual_current",
    "meter-box.detector_residual_alarm",
    "meter-box.detector_residual_prewarning",
    "meter-box.bus_offline",
}


async def test_acrel_asj_registers_decode_per_the_manual() -> None:
    async def body(relay: Relay) -> None:
        v = await relay.read()
        assert v["residual_current"] == 35 and v["residual_setting"] == 300 and v["prewarning_setting"] == 150
        assert (v["residual_prewarning"], v["residual_alarm"], v["sensor_fault"]) == (False, False, False)
        # 001BH is a status code whose values are single bits: 1 prewarning, 2 alarm, 4 break line.
        for code, expected in (
            (ASJ_PREWARNING, (True, False, False)),
            (ASJ_ALARM, (False, True, False)),
            (ASJ_BREAK_LINE, (False, False, True)),
            (0, (False, False, False)),
        ):
            relay.put(ASJ_STATUS, code)
            v = await relay.read()
            assert (v["residual_prewarning"], v["residual_alarm"], v["sensor_fault"]) == expected, code
        relay.put(ASJ_DI, 0b10)
        v = await relay.read()
        assert (v["input_1"], v["input_2"]) == (False, True)
        relay.put(ASJ_RESIDUAL, 30000)  # the top of the manual's 0-30000 mA range
        assert (await relay.read())["residual_current"] == 30000

    await with_relay(ASJ, body)


async def test_schneider_rhu_registers_decode_per_the_manual() -> None:
    async def body(relay: Relay) -> None:
        v = await relay.read()
        assert (
            v["residual_current"] == 40 and v["residual_current_max"] == 120 and v["residual_setting"] == 300
        )
        assert v["residual_alarm"] is False and v["residual_prewarning"] is False
        assert v["alarm_memorized"] is False and v["toroid_connected"] is True
        relay.put(RHU_ALARM, 1)
        relay.put(RHU_PREALARM, 1)
        relay.put(RHU_MEMORIZED, 1)
        relay.put(RHU_TOROID, 0)  # no toroid: a wiring fault
        relay.put(RHU_RESIDUAL, 60000)  # the top of the manual's 0-60000 mA range
        v = await relay.read()
        assert v["residual_alarm"] is True and v["residual_prewarning"] is True
        assert v["alarm_memorized"] is True and v["toroid_connected"] is False
        assert v["residual_current"] == 60000
        # Bits 1-15 are reserved: a set reserved bit is not the alarm.
        relay.put(RHU_ALARM, 0b10)
        assert (await relay.read())["residual_alarm"] is False

    await with_relay(RHU, body)


async def test_asj_in_a_meter_box_raises_the_packs_events() -> None:
    async def body(relay: Relay) -> None:
        assert relay.rule_ids() == RELAY_RULES | {"meter-box.sensor_fault"}
        t0 = relay.clock.t
        # A switching transient: one poll at 450 mA is less than the 30 s hold.
        await relay.poll_until(t0 + 60)
        relay.put(ASJ_RESIDUAL, 450)
        await relay.poll_until(t0 + 70)
        relay.put(ASJ_RESIDUAL, 35)
        await relay.poll_until(t0 + 120)
        assert relay.events() == []
        # An insulation fault: 420 mA held; the relay prewarns, then alarms. Raised three polls later.
        fault = t0 + 120
        relay.put(ASJ_RESIDUAL, 420)
        relay.put(ASJ_STATUS, ASJ_PREWARNING)
        await relay.poll_until(fault + 20)
        relay.put(ASJ_STATUS, ASJ_ALARM)
        await relay.poll_until(fault + 60)
        assert relay.events() == [
            ("detector_residual_prewarning", EventState.RAISED, fault),
            ("detector_residual_alarm", EventState.RAISED, fault + 20),
            ("residual_current", EventState.RAISED, fault + 30),
        ]
        # The current transformer comes off: break line, raised as a detector fault after 60 s.
        broken = relay.clock.t
        relay.put(ASJ_STATUS, ASJ_BREAK_LINE)
        await relay.poll_until(broken + 70)
        assert ("detector_fault", EventState.RAISED, broken + 60) in relay.events()

    await with_relay(ASJ, body)


async def test_rhu_in_a_meter_box_raises_the_packs_events() -> None:
    async def body(relay: Relay) -> None:
        assert relay.rule_ids() == RELAY_RULES | {"meter-box.toroid_missing"}
        t0 = relay.clock.t
        await relay.poll_until(t0 + 30)
        assert relay.events() == []  # a connected toroid is no fault
        fault = relay.clock.t
        relay.put(RHU_RESIDUAL, 350)
        relay.put(RHU_ALARM, 1)
        await relay.poll_until(fault + 40)
        assert relay.events() == [
            ("detector_residual_alarm", EventState.RAISED, fault),
            ("residual_current", EventState.RAISED, fault + 30),
        ]
        unplugged = relay.clock.t
        relay.put(RHU_TOROID, 0)
        await relay.poll_until(unplugged + 70)
        assert ("detector_fault", EventState.RAISED, unplugged + 60) in relay.events()

    await with_relay(RHU, body)


def test_a_relay_selected_by_id_loads_without_the_meter_box_only_points(tmp_path: Path) -> None:
    """The installer names the devices: the pack's temperature, smoke and door rules are not asked of
    a residual-current relay (its class is not theirs), and its own rules are not asked of the
    combined detector; a relay missing its own residual point is still refused."""
    path = tmp_path / "gw.toml"
    devices = "".join(
        textwrap.dedent(f"""
        [[devices]]
        id = "{dev}"
        bus = "rs485-1"
        profile = "{profile}"
        address = {n}
        location = {{ address_code = "310106013007" }}
        """)
        for n, (dev, profile) in enumerate(
            (("asj-1", ASJ), ("rhu-1", RHU), ("efm-1", "modbus-meter-box-efm")), start=1
        )
    )
    head = GATEWAY_RS485_TOML + textwrap.dedent("""
        [[rules.packs]]
        name = "meter-box"
        select = { devices = ["asj-1", "rhu-1", "efm-1"] }
        """)
    path.write_text(head + devices)
    cfg = load_config(path)
    assert {d.profile for d in cfg.devices} == {ASJ, RHU, "modbus-meter-box-efm"}
    assert cfg.profiles[ASJ].device_class == cfg.profiles[RHU].device_class == "residual-current-monitor"
    engine = RuleEngine(cfg.rules, cfg.devices)
    by_dev: dict[str, set[str]] = {}
    for inst in engine.instances.values():
        by_dev.setdefault(inst.device_id, set()).add(inst.rule.id.split(".", 1)[1])
    assert by_dev["asj-1"] == {r.split(".", 1)[1] for r in RELAY_RULES} | {"sensor_fault"}
    assert by_dev["rhu-1"] == {r.split(".", 1)[1] for r in RELAY_RULES} | {"toroid_missing"}
    assert {"cable_hot_a", "box_hot", "smoke", "door_open", "sensor_fault"} <= by_dev["efm-1"]
    assert not {"detector_residual_prewarning", "toroid_missing"} & by_dev["efm-1"]

    # Held to its own class's rules: a relay whose residual point was left out is refused.
    asj = cfg.profiles[ASJ]
    points = {k: v for k, v in asj.points.items() if k != "residual_current"}
    bare = device_model(id="asj-1", bus="rs485-1", profile=ASJ, address=1, location=LOCATION, points=points)
    pack = PackRef(name="meter-box", select={"devices": ["asj-1"]})  # type: ignore[arg-type]
    issues = check_rules(RulesConfig(packs=(pack,)), [bare], "gw.toml", {ASJ: asj.device_class})
    assert [(i.path, i.message.split(";")[0]) for i in issues] == [
        (
            "rules.packs[0](meter-box.residual_current).point",
            "device 'asj-1' has no point 'residual_current'",
        ),
    ]
