"""Config models: point combinations, device limits, bus models, shipped profiles, entry points."""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from modbus_support import device_model
from pydantic import ValidationError

from citynerve.drivers.modbus import RTU_DRIVER, RTU_OVER_TCP_DRIVER, TCP_DRIVER
from citynerve.drivers.modbus.config import (
    ModbusDeviceConfig,
    ModbusPointConfig,
    ModbusRtuBusConfig,
    ModbusRtuOverTcpBusConfig,
    ModbusTcpBusConfig,
    ModbusTcpDeviceConfig,
)
from citynerve.drivers.modbus.driver import plan_device
from citynerve.gateway.api import DriverSpec

PROFILES = sorted((Path(__file__).resolve().parents[2] / "config" / "profiles").glob("modbus-*.toml"))


def errors_of(**fields: Any) -> str:
    with pytest.raises(ValidationError) as info:
        ModbusPointConfig(**fields)
    return str(info.value)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"table": "holding", "address": 0, "type": "bool"}, "needs 'bit'"),
        ({"table": "coil", "address": 0, "type": "uint16"}, "type must be 'bool'"),
        ({"table": "coil", "address": 0, "bit": 3}, "already a bit"),
        ({"table": "holding", "address": 0, "type": "uint16", "bit": 3}, "only for type 'bool'"),
        ({"table": "holding", "address": 0, "type": "string"}, "needs 'length'"),
        ({"table": "holding", "address": 0, "type": "float32", "length": 2}, "only for strings"),
        ({"table": "input", "address": 0, "writable": True}, "read-only"),
        ({"table": "discrete", "address": 0, "writable": True}, "read-only"),
        ({"table": "holding", "address": 0, "type": "bool", "bit": 1, "writable": True}, "cannot be written"),
        ({"table": "holding", "address": 65535, "type": "float32"}, "runs past the last address"),
        ({"table": "holding", "address": 65536}, "less than or equal to 65535"),
        ({"table": "holding", "address": 0, "bit": 16, "type": "bool"}, "less than or equal to 15"),
        ({"table": "holding", "address": 0, "type": "float16"}, "float32"),
        ({"table": "holdings", "address": 0}, "'coil', 'discrete', 'input' or 'holding'"),
        ({"table": "holding", "address": 0, "word_order": "ABCD"}, "'big' or 'little'"),
        ({"table": "holding", "address": 0, "registr": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_point_combinations_are_named(fields: dict[str, Any], fragment: str) -> None:
    assert fragment in errors_of(**fields)


def test_good_points_and_register_counts() -> None:
    assert ModbusPointConfig(table="coil", address=5).type == "bool"
    assert ModbusPointConfig(table="discrete", address=5, writable=False).register_count == 1
    assert ModbusPointConfig(table="holding", address=0, type="int64").register_count == 4
    assert ModbusPointConfig(table="holding", address=0, type="string", length=8).register_count == 8
    assert ModbusPointConfig(table="holding", address=0, type="bool", bit=15).register_count == 1
    assert ModbusPointConfig(table="coil", address=0, writable=True).writable
    assert ModbusPointConfig(table="holding", address=65534, type="float32").address == 65534


def test_device_model_narrows_address_and_limits() -> None:
    base = {"id": "m1", "bus": "b", "profile": "p", "location": {"address_code": "320508"}}
    device = device_model(address=17, **base)
    assert (device.max_request_registers, device.max_request_bits, device.max_gap) == (125, 2000, 10)
    for bad in (
        {"address": 248},
        {"address": "meter-1"},
        {"address": 1, "max_request_registers": 126},
        {"address": 1, "max_request_bits": 2001},
        {"address": 1, "max_gap": -1},
        {"address": 1, "timeout_s": 0},
    ):
        with pytest.raises(ValidationError):
            device_model(**base, **bad)
    with pytest.raises(ValidationError) as info:
        device_model(address=1, points={"x": {"table": "input", "address": 0, "writable": True}}, **base)
    assert info.value.errors()[0]["loc"][:2] == ("points", "x")
    assert "read-only" in str(info.value)


def test_bus_models() -> None:
    tcp = ModbusTcpBusConfig(id="t", host="10.0.0.5")
    assert (tcp.protocol, tcp.port, tcp.timeout_s) == ("modbus_tcp", 502, 1.0)
    rtu = ModbusRtuBusConfig(id="r", port="socket://127.0.0.1:5020")
    assert (rtu.baudrate, rtu.bytesize, rtu.parity, rtu.stopbits) == (9600, 8, "N", 1)
    rtu2 = ModbusRtuBusConfig(id="r", port="/dev/ttyUSB0", baudrate=19200, parity="E", protocol="modbus_rtu")
    assert rtu2.parity == "E"
    over = ModbusRtuOverTcpBusConfig(id="g", host="gw.local", port=8899)
    assert over.protocol == "modbus_rtu_over_tcp"
    with pytest.raises(ValidationError):
        ModbusTcpBusConfig.model_validate({"id": "t", "host": "h", "protocol": "modbus_rtu"})
    with pytest.raises(ValidationError):
        ModbusRtuBusConfig(id="r", port="")
    with pytest.raises(ValidationError):
        ModbusRtuBusConfig.model_validate({"id": "r", "port": "/dev/x", "parity": "X"})
    with pytest.raises(ValidationError):
        ModbusTcpBusConfig(id="t", host="h", port=70000)


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_shipped_profiles_are_valid_and_documented(path: Path) -> None:
    data = tomllib.loads(path.read_text())
    assert data["id"] == path.stem
    assert data["family"] == "modbus"
    for key in ("description", "vendor", "model", "source"):
        assert len(data[key]) > 5, key
    assert data["poll_interval_s"] > 0
    points = data["points"]
    assert points
    device = device_model(
        id="d",
        bus="b",
        profile=data["id"],
        address=1,
        location={"address_code": "320508"},
        poll_interval_s=data["poll_interval_s"],
        points=points,
        **data.get("device", {}),
    )
    for name, point in device.points.items():
        assert point.description, name
    plan = plan_device(device)
    assert sorted(n for r in plan for n in r.points) == sorted(points)


def test_profiles_ship_the_device_types() -> None:
    assert [p.stem for p in PROFILES] == [
        "modbus-acrel-asj-rcm",
        "modbus-intesis-dali-lamp",
        "modbus-lamp-controller",
        "modbus-meter-box-efm",
        "modbus-power-meter-3ph",
        "modbus-schneider-rhu-rcm",
        "modbus-smoke-detector",
        "modbus-water-meter",
    ]


def test_power_meter_plan_is_compact() -> None:
    data = tomllib.loads(next(p for p in PROFILES if p.stem == "modbus-power-meter-3ph").read_text())
    device = device_model(
        id="d",
        bus="b",
        profile="p",
        address=1,
        location={"address_code": "320508"},
        poll_interval_s=data["poll_interval_s"],
        points=data["points"],
    )
    plan = plan_device(device)
    # 24 float32 points -> 6 reads; points read one by one would be 24 transactions.
    assert len(plan) == 6
    assert all(r.function == 4 for r in plan)


@pytest.mark.parametrize(
    ("name", "spec", "bus_model"),
    [
        ("modbus_tcp", TCP_DRIVER, ModbusTcpBusConfig),
        ("modbus_rtu", RTU_DRIVER, ModbusRtuBusConfig),
        ("modbus_rtu_over_tcp", RTU_OVER_TCP_DRIVER, ModbusRtuOverTcpBusConfig),
    ],
)
def test_driver_specs_are_found_through_entry_points(name: str, spec: DriverSpec, bus_model: type) -> None:
    (ep,) = [e for e in entry_points(group="citynerve.drivers") if e.name == name]
    loaded = ep.load()
    assert loaded is spec
    assert (spec.protocol, spec.family, spec.bus_model) == (name, "modbus", bus_model)
    assert issubclass(spec.device_model, ModbusDeviceConfig) and spec.point_model is ModbusPointConfig
    # Modbus TCP devices take the TCP unit ids (0 and 248..255 of a device itself) and reply_unit.
    assert (spec.device_model is ModbusTcpDeviceConfig) == (name == "modbus_tcp")


def test_decoder_entry_point() -> None:
    (ep,) = [e for e in entry_points(group="citynerve.decoders") if e.name == "modbus-rtu"]
    from citynerve.drivers.modbus.decode import decode_rtu

    assert ep.load() is decode_rtu


def test_point_span_for_the_writable_overlap_check() -> None:
    assert ModbusPointConfig(table="holding", address=10, type="float64").span() == ("holding", 10, 13)
    assert ModbusPointConfig(table="coil", address=3).span() == ("coil", 3, 3)


def write_gateway(tmp_path: Path, points: str, devices: str = "") -> Path:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "modbus-test-valves.toml").write_text(
        'id = "modbus-test-valves"\nfamily = "modbus"\ndescription = "test"\nvendor = "x"\nmodel = "y"\n'
        'source = "test"\npoll_interval_s = 10\n' + points
    )
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        '[gateway]\nid = "gw-1"\norg = { city = "310100", district = "310106", street = "310106013" }\n'
        '[store]\npath = "gw.db"\n'
        '[[buses]]\nid = "rs485"\nprotocol = "modbus_rtu"\nport = "/dev/ttyUSB0"\n'
        '[[devices]]\nid = "v1"\nbus = "rs485"\nprofile = "modbus-test-valves"\naddress = 3\n'
        'location = { address_code = "310106013007" }\n' + devices
    )
    return cfg


def test_the_gateway_loader_uses_these_models(tmp_path: Path) -> None:
    from citynerve.gateway.config import load_config

    cfg = write_gateway(
        tmp_path,
        '[points.setpoint]\ntable = "holding"\naddress = 0\ntype = "float32"\nwritable = true\n'
        '[points.mode]\ntable = "holding"\naddress = 2\nwritable = true\n',
        "[devices.points.mode]\naddress = 5\n",
    )
    config = load_config(cfg)
    (device,) = config.devices
    assert isinstance(device, ModbusDeviceConfig)
    assert device.address == 3 and device.poll_interval_s == 10
    assert device.points["mode"].address == 5 and device.points["mode"].name == "mode"
    assert [(r.address, r.count) for r in plan_device(device)] == [(0, 6)]


def test_the_gateway_loader_reports_modbus_point_errors_with_key_paths(tmp_path: Path) -> None:
    from citynerve.gateway.api import ConfigError
    from citynerve.gateway.config import load_config

    cfg = write_gateway(
        tmp_path,
        '[points.setpoint]\ntable = "holding"\naddress = 0\ntype = "float32"\nwritable = true\n'
        '[points.mode]\ntable = "holding"\naddress = 2\nwritable = true\n',
        "[devices.points.mode]\naddress = 1\n",  # overlaps the float32 at 0..1
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    paths = [i.path for i in info.value.issues]
    assert "devices[0].points.mode" in paths
    assert any("overlaps" in i.message for i in info.value.issues)
    (tmp_path / "b").mkdir()
    bad = write_gateway(
        tmp_path / "b",
        '[points.flag]\ntable = "input"\naddress = 0\ntype = "bool"\n',
    )
    with pytest.raises(ConfigError) as info2:
        load_config(bad)
    assert any("needs 'bit'" in i.message for i in info2.value.issues)


point_fields = st.fixed_dictionaries(
    {"table": st.sampled_from(["coil", "discrete", "input", "holding", "eeprom"])},
    optional={
        "address": st.integers(-2, 65540),
        "type": st.sampled_from(
            [
                "bool",
                "int16",
                "uint16",
                "int32",
                "uint32",
                "int64",
                "uint64",
                "float32",
                "float64",
                "string",
                "bcd",
            ]
        ),
        "word_order": st.sampled_from(["big", "little", "ABCD"]),
        "byte_order": st.sampled_from(["big", "little"]),
        "length": st.integers(-1, 130),
        "bit": st.integers(-1, 17),
        "writable": st.booleans(),
        "scale": st.floats(allow_nan=False),
    },
)


@settings(max_examples=400)
@given(point_fields)
def test_any_point_table_validates_or_is_rejected_cleanly(fields: dict[str, Any]) -> None:
    try:
        point = ModbusPointConfig(**fields)
    except ValidationError:
        return
    # Whatever validates is readable and fits the address space and one request.
    assert 1 <= point.register_count <= 125
    assert point.address + point.register_count <= 65536
    table, first, last = point.span()
    assert (table, last - first + 1) == (point.table, point.register_count)
    if point.writable:
        assert point.table in ("coil", "holding") and point.bit is None


def test_every_point_must_fit_one_request_of_the_device() -> None:
    base = {"id": "m1", "bus": "b", "profile": "p", "address": 1, "location": {"address_code": "320508"}}
    points = {"sn": {"table": "holding", "address": 0, "type": "string", "length": 10}}
    assert device_model(**base, points=points, max_request_registers=10).points["sn"].register_count == 10
    with pytest.raises(ValidationError) as info:
        device_model(**base, points=points, max_request_registers=8)
    assert "shorter than point sn (10 registers)" in str(info.value)


def test_broadcast_devices_cannot_poll() -> None:
    base = {"id": "all", "bus": "b", "profile": "p", "address": 0, "location": {"address_code": "320508"}}
    with pytest.raises(ValidationError) as info:
        device_model(**base, points={"reset": {"table": "holding", "address": 0, "writable": True}})
    assert "broadcast" in str(info.value)
    ok = device_model(
        **base, points={"reset": {"table": "holding", "address": 0, "writable": True, "enabled": False}}
    )
    assert plan_device(ok) == ()
