"""Street lamps with DALI LED drivers behind an HMS Intesis Modbus-DALI gateway (issue 18 deliverable
1): the `modbus-intesis-dali-lamp` profile against the manual's register map. A real pymodbus server
holds the registers where the manual's formula puts them (7000 x channel + 100 x short address +
signal: written here from the manual, not from the profile file), one device per lamp behind the one
unit id (`register_base`), the real driver polls them and the shipped street-lamp pack raises on them."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from modbus_support import GATEWAY_RS485_TOML, LOCATION, BankServer, device_model, start_bank_server
from pydantic import ValidationError
from test_modbus_sim import FakeClock, at_local_hour, device_config

from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import ConfigError, EventState, SampleBatch
from citynerve.gateway.config import load_config
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.rules import PackRef, RuleEngine, RulesConfig, check_rules
from citynerve.hil.eval.harness import CollectingSink

PROFILE = "modbus-intesis-dali-lamp"
UNIT = 3
SHORT_ADDRESSES = (0, 5, 63)  # DALI short addresses 0..63 on the gateway's one channel

# Intesis "Modbus Server - DALI" user manual r1.3, 2.4.1: signal numbers of a ballast.
BALLAST_STATUS, ACTUAL_LEVEL, DEVICE_TYPE, LED_FAILURE = 5, 6, 7, 80
BALL_FAIL, LAMP_FAIL, LAMP_POWER_ON, POWER_CYCLE = 1 << 0, 1 << 1, 1 << 2, 1 << 7  # +5 bits
SHORT_CIRCUIT, OPEN_CIRCUIT, THERMAL_SHUTDOWN = 1 << 0, 1 << 1, 1 << 5  # +80 bits
LED = 6  # device type 6: LED module


def register(short_address: int, signal: int, channel: int = 0) -> int:
    """The manual's formula: Modbus address = 7000 x channel + 100 x short address + signal."""
    return 7000 * channel + 100 * short_address + signal


def lamp_model(sa: int) -> ModbusDeviceConfig:
    return device_config(PROFILE, UNIT, device_id=f"lamp-{sa}", register_base=100 * sa)


class Street:
    """Lamps on one DALI line behind one gateway (a real pymodbus server), each a device polled by
    the real driver into the pipeline and the shipped street-lamp pack (selected by profile)."""

    def __init__(self, srv: BankServer, clock: FakeClock) -> None:
        self.srv, self.clock = srv, clock
        self.bank = srv.banks[UNIT]
        self.bank.size = 20001  # the gateway answers 0..20000 (manual section 2; undefined reads 0)
        self.lamps = {sa: lamp_model(sa) for sa in SHORT_ADDRESSES}
        for sa in SHORT_ADDRESSES:
            self.put(sa, BALLAST_STATUS, LAMP_POWER_ON)
            self.put(sa, ACTUAL_LEVEL, 100)
            self.put(sa, DEVICE_TYPE, LED)
            self.put(sa, LED_FAILURE, 0)
        devices = list(self.lamps.values())
        self.driver = ModbusDriver(
            ModbusTcpBusConfig(id="b", host=srv.host, port=srv.port, timeout_s=0.5), devices
        )
        pack = PackRef(name="street-lamp", select={"profiles": [PROFILE]})  # type: ignore[arg-type]
        self.rules = RuleEngine(RulesConfig(packs=(pack,)), devices, clock=clock)
        self.sink = CollectingSink()
        self.pipe = Pipeline({d.id: d for d in devices}, self.sink, self.rules)

    def put(self, sa: int, signal: int, value: int) -> None:
        self.bank.put("holding", register(sa, signal), [value])

    async def read(self, sa: int) -> dict[str, Any]:
        cfg = self.lamps[sa]
        return {s.point: s.value for r in self.driver.plan(cfg) for s in await self.driver.read(cfg, r)}

    async def poll_until(self, t_end: float, step_s: float = 60.0) -> None:
        """The bus owner's 60 s polls of every lamp, one batch per request, and the runtime's tick."""
        while self.clock.t < t_end:
            for cfg in self.lamps.values():
                for r in self.driver.plan(cfg):
                    batch = SampleBatch(cfg.id, self.clock.t, tuple(await self.driver.read(cfg, r)))
                    self.pipe.submit(batch)
            self.pipe.tick(self.clock.t)
            self.clock.t += step_s

    def events(self) -> list[tuple[str, str, EventState, float]]:
        return [(e.device_id, e.kind, e.state, e.ts) for e in self.sink.events]


async def with_street(body: Callable[[Street], Any]) -> None:
    srv = await start_bank_server((UNIT,))
    street = Street(srv, FakeClock(at_local_hour(20.0)))
    await street.driver.open()
    try:
        await body(street)
    finally:
        await street.driver.close()
        await srv.server.shutdown()


async def test_each_lamp_is_read_at_its_short_address_per_the_manual() -> None:
    async def body(street: Street) -> None:
        for sa in SHORT_ADDRESSES:
            v = await street.read(sa)
            assert v["lamp_on"] is True and v["lamp_fault"] is False and v["driver_fault"] is False
            assert v["dimming"] == 100 and v["device_type"] == LED
            assert (v["open_circuit"], v["short_circuit"], v["thermal_shutdown"]) == (False,) * 3
        # Lamp 5's LED opens and its driver reports the lamp failure; dimmed to 40 % at midnight.
        street.put(5, BALLAST_STATUS, LAMP_POWER_ON | LAMP_FAIL | POWER_CYCLE)
        street.put(5, LED_FAILURE, OPEN_CIRCUIT)
        street.put(5, ACTUAL_LEVEL, 40)
        v = await street.read(5)
        assert (v["lamp_on"], v["lamp_fault"], v["driver_fault"], v["power_cycle_seen"]) == (
            True,
            True,
            False,
            True,
        )
        assert (v["open_circuit"], v["short_circuit"], v["dimming"]) == (True, False, 40)
        # Lamp 63's driver: control gear failure, output shut down on over-temperature.
        street.put(63, BALLAST_STATUS, LAMP_POWER_ON | BALL_FAIL)
        street.put(63, LED_FAILURE, THERMAL_SHUTDOWN | SHORT_CIRCUIT)
        v = await street.read(63)
        assert v["driver_fault"] is True and v["thermal_shutdown"] is True and v["short_circuit"] is True
        # The neighbours are untouched: each device reads its own ballast's block only.
        v = await street.read(0)
        assert (v["lamp_fault"], v["driver_fault"], v["open_circuit"], v["dimming"]) == (
            False,
            False,
            False,
            100,
        )
        # Every read stays inside its ballast's 100 registers, on FC 03 (the manual's read function).
        for fc, address, count in street.bank.requests:
            assert fc == 3
            first = address // 100
            assert (address + count - 1) // 100 == first and first in SHORT_ADDRESSES

    await with_street(body)


async def test_failed_lamps_and_drivers_raise_the_street_lamp_packs_events() -> None:
    async def body(street: Street) -> None:
        rules = {(i.device_id, i.rule.id) for i in street.rules.instances.values()}
        # The DALI map has no relay and no supply voltage (optional rules), no current (no lamp_dark).
        assert rules == {
            (f"lamp-{sa}", rule)
            for sa in SHORT_ADDRESSES
            for rule in (
                "street-lamp.lamp_out",
                "street-lamp.driver_fault",
                "street-lamp.driver_overheat",
                "street-lamp.controller_offline",
            )
        }
        t0 = street.clock.t
        await street.poll_until(t0 + 300)
        assert street.events() == []
        out = street.clock.t
        street.put(5, BALLAST_STATUS, LAMP_POWER_ON | LAMP_FAIL)
        street.put(5, LED_FAILURE, OPEN_CIRCUIT)
        await street.poll_until(out + 300)
        assert street.events() == [("lamp-5", "lamp_out", EventState.RAISED, out + 120)]
        failed = street.clock.t
        street.put(63, BALLAST_STATUS, LAMP_POWER_ON | BALL_FAIL)
        await street.poll_until(failed + 300)
        assert street.events()[1:] == [("lamp-63", "lamp_driver_fault", EventState.RAISED, failed + 120)]
        # Lamp 0's driver overheats: output off, no lamp failure bit; raised after the same hold.
        # It restarts when it cools and shuts down again: one event, cleared after a day without.
        hot = street.clock.t
        street.put(0, LED_FAILURE, THERMAL_SHUTDOWN)
        await street.poll_until(hot + 180)
        street.put(0, LED_FAILURE, 0)  # cooled: it restarts ...
        await street.poll_until(hot + 1800)
        street.put(0, LED_FAILURE, THERMAL_SHUTDOWN)  # ... and shuts down again half an hour later
        await street.poll_until(hot + 2400)
        street.put(0, LED_FAILURE, 0)
        await street.poll_until(hot + 2400 + 86400 + 120, step_s=600)
        assert street.events()[2:] == [
            ("lamp-0", "lamp_driver_overheat", EventState.RAISED, hot + 120),
            ("lamp-0", "lamp_driver_overheat", EventState.CLEARED, hot + 2400 + 86400),
        ]

    await with_street(body)


def _config(tmp_path: Path, lamps: str, packs: str = "") -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(GATEWAY_RS485_TOML + textwrap.dedent(packs) + textwrap.dedent(lamps))
    return path


def _lamp(dev: str, base: int, profile: str = PROFILE, address: int = UNIT) -> str:
    return f"""
        [[devices]]
        id = "{dev}"
        bus = "rs485-1"
        profile = "{profile}"
        address = {address}
        register_base = {base}
        location = {{ address_code = "310106013007" }}
        """


def test_lamps_behind_one_gateway_load_with_their_register_base(tmp_path: Path) -> None:
    """The installer writes one device per lamp: the gateway's unit id and 100 x the short address.
    The pack selected by id asks a DALI lamp for no relay or voltage; a lamp without its failure
    bit is still refused; two lamps at one base, or a base past the map, are typed errors."""
    packs = """
        [[rules.packs]]
        name = "street-lamp"
        select = { devices = ["lamp-0", "lamp-5", "ctl-1"] }
        """
    lamps = _lamp("lamp-0", 0) + _lamp("lamp-5", 500) + _lamp("ctl-1", 0, "modbus-lamp-controller", 9)
    cfg = load_config(_config(tmp_path, lamps, packs))
    by_id = {d.id: d for d in cfg.devices}
    assert cfg.profiles[PROFILE].device_class == "street-lamp"
    assert by_id["lamp-0"].points["lamp_fault"].address == register(0, BALLAST_STATUS)  # type: ignore[attr-defined]
    assert by_id["lamp-5"].points["lamp_fault"].address == register(5, BALLAST_STATUS)  # type: ignore[attr-defined]
    assert by_id["lamp-5"].points["open_circuit"].address == register(5, LED_FAILURE)  # type: ignore[attr-defined]
    # The profile's own table is untouched: the reference controller and lamp 0 still read at 0-based.
    assert by_id["ctl-1"].points["voltage"].address == 0  # type: ignore[attr-defined]
    engine = RuleEngine(cfg.rules, cfg.devices)
    rules: dict[str, set[str]] = {}
    for inst in engine.instances.values():
        rules.setdefault(inst.device_id, set()).add(inst.rule.id.split(".", 1)[1])
    assert rules["lamp-5"] == {"lamp_out", "driver_fault", "driver_overheat", "controller_offline"}
    assert {"lamp_out", "no_current", "relay_fault", "supply_voltage"} <= rules["ctl-1"]
    assert "driver_overheat" not in rules["ctl-1"]  # the reference controller has no such bit

    # A lamp whose failure bit was left out is still refused: the pack's lamp_out needs it.
    lamp = by_id["lamp-5"]
    bare = lamp.model_copy(update={"points": {k: v for k, v in lamp.points.items() if k != "lamp_fault"}})
    pack = PackRef(name="street-lamp", select={"devices": ["lamp-5"]})  # type: ignore[arg-type]
    issues = check_rules(RulesConfig(packs=(pack,)), [bare], "gw.toml", {PROFILE: "street-lamp"})
    assert [(i.path, i.message.split(";")[0]) for i in issues] == [
        ("rules.packs[0](street-lamp.lamp_out).point", "device 'lamp-5' has no point 'lamp_fault'"),
    ]

    # Two lamps at one short address of one gateway: the second is refused, naming the first.
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, _lamp("lamp-a", 500) + _lamp("lamp-b", 500)))
    found = {i.path: i.message for i in err.value.issues}
    assert "register_base 500" in found["devices[1].address"] and "devices[0]" in found["devices[1].address"]
    # A base that moves a point past the last Modbus address is a typed error on the device.
    with pytest.raises(ValidationError, match="register_base 65500 moves point"):
        device_model(
            id="lamp-x",
            bus="b",
            profile=PROFILE,
            address=UNIT,
            location=LOCATION,
            points={"open_circuit": {"table": "holding", "address": 80, "type": "bool", "bit": 1}},
            register_base=65500,
        )


def test_an_installer_adds_the_lamps_of_a_dali_line_from_the_cli(tmp_path: Path) -> None:
    """`citynerve devices add --set register_base=...` per lamp; `devices list` shows where each
    lamp's registers start; a second lamp at a taken short address leaves the file alone."""
    from click.testing import CliRunner

    from citynerve.gateway.cli import main

    path = _config(tmp_path, "")

    def cli(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    def add(dev: str, *extra: str) -> Any:
        return cli(
            "devices", "add", "-c", str(path), "--id", dev, "--bus", "rs485-1", "--profile", PROFILE,
            "--address", str(UNIT), "--no-reload", *extra,
        )  # fmt: skip

    assert add("lamp-0").exit_code == 0
    assert add("lamp-5", "--set", "register_base=500").exit_code == 0
    before = path.read_text()
    r = add("lamp-5b", "--set", "register_base=500")
    assert r.exit_code == 2 and "already used" in r.output and "register_base 500" in r.output
    assert path.read_text() == before
    r = cli("devices", "list", "-c", str(path), "--json")
    listed = {d["id"]: (d["address"], d.get("register_base")) for d in json.loads(r.output)["devices"]}
    assert listed == {"lamp-0": (UNIT, None), "lamp-5": (UNIT, 500)}
    assert f"{UNIT} +500" in cli("devices", "list", "-c", str(path)).output


def test_a_bad_register_base_is_a_typed_error_naming_the_device(tmp_path: Path) -> None:
    for bad, why in (
        ("-1", "greater than or equal to 0"),
        ("65536", "less than or equal to 65535"),
        ("2.5", "integer"),
    ):
        with pytest.raises(ConfigError) as err:
            load_config(
                _config(tmp_path, _lamp("lamp-x", 0).replace("register_base = 0", f"register_base = {bad}"))
            )
        found = {i.path: i.message for i in err.value.issues}
        assert why in found["devices[0].register_base"], found
    # Written as a string it still names the same base: two lamps there are refused.
    lamps = _lamp("lamp-a", 500) + _lamp("lamp-b", 0).replace("register_base = 0", 'register_base = "500"')
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, lamps))
    assert "already used" in {i.path: i.message for i in err.value.issues}["devices[1].address"]
