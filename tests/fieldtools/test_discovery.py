"""Discovery on every kind of bus with real peers: DL/T 645 and CJ/T 188 meters on pty lines (their
wildcard read-address), BTHome nodes on a bumble virtual radio, and the proposals made from them."""

from __future__ import annotations

from pathlib import Path

from citynerve.gateway.commissioning import available_profiles, discover, identify_found, propose
from citynerve.gateway.commissioning.configfile import DeviceListEditor
from citynerve.gateway.config import load_config
from citynerve.hil.sim.ble import ManholeCoverNode, VirtualAdvertiser, VirtualRadio
from citynerve.hil.sim.serial import SerialMeterBus, SimCjt188Meter, SimDlt645Meter

from .conftest import PROFILES, gateway_toml

KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
MAC = "A4:C1:38:00:00:07"


def _config(short_dir: Path, buses: str) -> Path:
    path = short_dir / "gw.toml"
    base = gateway_toml("127.0.0.1", 1, devices=(), rules=False)
    base = base[: base.index("[[buses]]")]  # no Modbus bus here
    path.write_text(base + buses)
    return path


async def test_meters_found_and_identified(short_dir: Path) -> None:
    electricity = SimDlt645Meter("000000000161")  # three phases
    household = SimDlt645Meter("000000000162", phases=1)
    heat = SimCjt188Meter("00000000000077", meter_type=0x20)
    async with (
        SerialMeterBus(meters=[electricity, household], baudrate=2400, wire_time=False) as em_bus,
        SerialMeterBus(meters=[heat], baudrate=2400, wire_time=False) as heat_bus,
    ):
        buses = (
            f'[[buses]]\nid = "em"\nprotocol = "dlt645"\nport = "{em_bus.port}"\ntimeout_s = 0.3\n\n'
            f'[[buses]]\nid = "heat"\nprotocol = "cjt188"\nport = "{heat_bus.port}"\ntimeout_s = 0.3\n'
        )
        path = _config(short_dir, buses)
        cfg = load_config(path)
        seen: list[tuple[str, int, int]] = []
        result = await discover(cfg, progress=lambda b, d, t: seen.append((b, d, t)))
        assert not result.problems, result.problems
        profiles = available_profiles(path, [str(PROFILES)])
        verdicts = await identify_found(cfg, result.found, profiles)
    assert result.route == {"em": "direct", "heat": "direct"}
    found = {f.address: f for f in result.found}
    assert set(found) == {"000000000161", "000000000162", "00000000000077"}
    assert found["00000000000077"].detail["meter_type"] == "20"
    assert ("heat", 1, 1) in seen and seen[-1][1] == seen[-1][2]

    proposals = {
        p.found.address: p
        for p in propose(result.found, profiles, verdicts=verdicts, address_code="310106013")
    }
    heat_p = proposals["00000000000077"]
    assert heat_p.profile == "cjt188-heat"  # the meter type in the reply picks the profile
    assert heat_p.entry is not None and heat_p.entry["meter_type"] == 0x20
    # Asked, not guessed: a 2007 meter with a phase B is three-phase; without one, single-phase.
    assert proposals["000000000161"].profile == "dlt645-three-phase", proposals["000000000161"].to_dict()
    assert proposals["000000000162"].profile == "dlt645-single-phase", proposals["000000000162"].to_dict()
    em = proposals["000000000161"]
    assert em.entry is not None and em.entry["id"] == "em-000000000161"
    best = em.to_dict()["evidence"][0]
    checks = {e["check"]: e["passed"] for e in best["evidence"]}
    assert checks["DI 02010200 (phase B voltage) answers with data"] is True
    assert 180 < best["first_values"]["voltage_a"] < 260

    # The proposals make a valid config.
    editor = DeviceListEditor(path)
    cfg, _ = editor.save(editor.add(*(p.entry for p in proposals.values() if p.entry)))
    assert {d.address for d in cfg.devices} == set(found)


async def test_silent_line_finds_nothing_and_a_missing_port_is_a_problem(short_dir: Path) -> None:
    async with SerialMeterBus(meters=[], baudrate=2400, wire_time=False) as empty:
        buses = (
            f'[[buses]]\nid = "em"\nprotocol = "dlt645"\nport = "{empty.port}"\ntimeout_s = 0.3\n\n'
            '[[buses]]\nid = "gone"\nprotocol = "cjt188"\nport = "/dev/ttyUSB-gone"\n'
        )
        cfg = load_config(_config(short_dir, buses))
        result = await discover(cfg)
    assert result.found == ()
    assert [p.bus for p in result.problems] == ["em", "gone"]
    # The silent line is named with its settings (a typo'd baud rate looks just like this).
    assert result.problems[0].message.startswith(f"no meter answered at {empty.port} 2400 8E1: ")
    assert "ttyUSB-gone" in result.problems[1].message
    assert not result.problems[1].message.startswith("bus gone: ")  # shown under its bus already


async def test_ble_nodes_found_by_scanning(short_dir: Path) -> None:
    with VirtualRadio("ft-discover") as radio:
        node = ManholeCoverNode(radio, MAC, key=KEY)
        stranger = VirtualAdvertiser(radio, "11:22:33:44:55:66")
        await node.advertiser.advertise(node.payload(node.objects(tilt_deg=2.0, water_mm=40)), interval_ms=50)
        await stranger.advertise(bytes.fromhex("4002CA0903BF13"), interval_ms=50)
        try:
            buses = '[[buses]]\nid = "ble0"\nprotocol = "bthome"\nbackend = "bumble"\n'
            buses += f'transport = "{radio.transport}"\n'
            path = _config(short_dir, buses)
            cfg = load_config(path)
            result = await discover(cfg, ble_duration_s=1.5)
        finally:
            await node.close()
            await stranger.close()
    assert not result.problems, result.problems
    by_mac = {f.address: f for f in result.found}
    assert set(by_mac) == {MAC, "11:22:33:44:55:66"}
    assert by_mac[MAC].detail["encrypted"] is True
    assert by_mac["11:22:33:44:55:66"].detail["values"] == {"temperature": 25.06, "humidity": 50.55}

    proposals = {
        p.found.address: p for p in propose(result.found, available_profiles(path), address_code="310106013")
    }
    assert any("key" in n for n in proposals[MAC].notes)
    # The plain node sends temperature and humidity: the temperature profile fits best.
    assert proposals["11:22:33:44:55:66"].candidates[0].id == "bthome-temperature"
