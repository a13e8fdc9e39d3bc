"""Every config mistake, for every protocol, ends `citynerve config check` with exit 2 and lines that
name the entry by index and id plus the key path: never a traceback.

The broken configs are generated: one valid base per protocol (a bus and a device on a shipped
profile), then one mistake at a time (wrong types, unknown and missing keys, NaN and infinity,
bad ids, out-of-range values) in the device, its point overrides and its bus.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from click.testing import CliRunner

from gateway.cli import main

REPO = Path(__file__).resolve().parents[2]
NAN = float("nan")
INF = float("inf")

GATEWAY = {"id": "gw-1", "org": {"city": "310100", "district": "310106", "street": "310106013"}}
LOCATION = {"address_code": "310106013007", "building": "7"}

# protocol -> (bus table, device table without id/bus, a point of its profile)
BASES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "modbus_tcp": (
        {"protocol": "modbus_tcp", "host": "127.0.0.1", "port": 1502},
        {"profile": "modbus-water-meter", "address": 1},
        "flow_rate",
    ),
    "modbus_rtu": (
        {"protocol": "modbus_rtu", "port": "/dev/ttyUSB0", "baudrate": 9600},
        {"profile": "modbus-water-meter", "address": 3},
        "flow_rate",
    ),
    "dlt645": (
        {"protocol": "dlt645", "port": "/dev/ttyUSB1", "baudrate": 2400, "parity": "E"},
        {"profile": "dlt645-single-phase", "address": "000000000301", "poll_interval_s": 300},
        "voltage",
    ),
    "cjt188": (
        {"protocol": "cjt188", "port": "/dev/ttyUSB2", "baudrate": 2400, "parity": "E"},
        {"profile": "cjt188-water-cold", "address": "00000000000301", "poll_interval_s": 900},
        "flow_total",
    ),
    "firepanel": (
        {"protocol": "firepanel", "port": "/dev/ttyUSB3"},
        {"profile": "firepanel-gst", "address": "GST-200-01"},
        "fire_alarm",
    ),
    "bthome": (
        {"protocol": "bthome", "adapter": "hci0"},
        {"profile": "bthome-manhole-cover", "address": "A4:C1:38:00:00:01", "key": "00" * 16},
        "tilt",
    ),
}

DEVICE_ID = "dev-7"
BUS_ID = "bus-1"


def base(protocol: str) -> dict[str, Any]:
    bus, device, _ = BASES[protocol]
    good = {"id": "dev-0", "bus": BUS_ID, **device, "location": LOCATION}
    if "address" in good and isinstance(good["address"], int):
        good["address"] = good["address"] + 1  # two devices, two addresses
    elif isinstance(good["address"], str):
        good["address"] = good["address"][:-1] + "9"
    return {
        "gateway": GATEWAY,
        "store": {"path": "var/gw.db"},
        "control": {"socket": "var/gw.sock"},
        # a good device first: the broken one is devices[1], so the index in the message matters
        "buses": [{"id": BUS_ID, **bus}],
        "devices": [good, {"id": DEVICE_ID, "bus": BUS_ID, **device, "location": LOCATION}],
    }


def _device(cfg: dict[str, Any]) -> dict[str, Any]:
    device: dict[str, Any] = cfg["devices"][1]
    return device


def _point(cfg: dict[str, Any], protocol: str, **override: Any) -> None:
    point = BASES[protocol][2]
    _device(cfg).setdefault("points", {})[point] = override


# mistake -> (mutation, the key path expected after "devices[1] (id 'dev-7')" or "buses[0] (id ...)")
Mutation = Any
MISTAKES: dict[str, tuple[Mutation, str]] = {
    "point_scale_wrong_type": (
        lambda c, p: _point(c, p, scale="abc"),
        "devices[1] (id 'dev-7').points.{point}.scale",
    ),
    "point_scale_nan": (lambda c, p: _point(c, p, scale=NAN), "devices[1] (id 'dev-7').points.{point}.scale"),
    "point_offset_inf": (
        lambda c, p: _point(c, p, offset=-INF),
        "devices[1] (id 'dev-7').points.{point}.offset",
    ),
    "point_deadband_nan": (
        lambda c, p: _point(c, p, deadband=NAN),
        "devices[1] (id 'dev-7').points.{point}.deadband",
    ),
    "point_scale_huge": (
        lambda c, p: _point(c, p, scale=1e300),
        "devices[1] (id 'dev-7').points.{point}.scale",
    ),
    "point_max_interval_inf": (
        lambda c, p: _point(c, p, max_interval_s=INF),
        "devices[1] (id 'dev-7').points.{point}.max_interval_s",
    ),
    "point_unknown_key": (
        lambda c, p: _point(c, p, scalee=2),
        "devices[1] (id 'dev-7').points.{point}.scalee",
    ),
    "point_not_a_table": (
        lambda c, p: _device(c).update(points={BASES[p][2]: 5}),
        "devices[1] (id 'dev-7').points",
    ),
    "point_not_in_profile": (
        lambda c, p: _device(c).update(points={"no_such_point": {"scale": 2}}),
        "devices[1] (id 'dev-7').points.no_such_point",
    ),
    "device_unknown_key": (lambda c, p: _device(c).update(colour="red"), "devices[1] (id 'dev-7').colour"),
    "device_missing_location": (lambda c, p: _device(c).pop("location"), "devices[1] (id 'dev-7').location"),
    "device_missing_address": (lambda c, p: _device(c).pop("address"), "devices[1] (id 'dev-7').address"),
    "device_poll_nan": (
        lambda c, p: _device(c).update(poll_interval_s=NAN),
        "devices[1] (id 'dev-7').poll_interval_s",
    ),
    "device_poll_too_fast": (
        lambda c, p: _device(c).update(poll_interval_s=0.01),
        "devices[1] (id 'dev-7').poll_interval_s",
    ),
    "device_address_wrong_type": (
        lambda c, p: _device(c).update(address=[1, 2]),
        "devices[1] (id 'dev-7').address",
    ),
    "device_location_lat_nan": (
        lambda c, p: _device(c).update(location={**LOCATION, "lat": NAN}),
        "devices[1] (id 'dev-7').location.lat",
    ),
    "profile_id_is_a_path": (
        lambda c, p: _device(c).update(profile="../../etc/passwd"),
        "devices[1] (id 'dev-7').profile",
    ),
    "device_id_bad": (lambda c, p: _device(c).update(id="dev/7\n"), "devices[1] (id 'dev/7\\n').id"),
    "bus_unknown_key": (lambda c, p: c["buses"][0].update(speed=9600), "buses[0] (id 'bus-1').speed"),
    "bus_timeout_nan": (lambda c, p: c["buses"][0].update(timeout_s=NAN), "buses[0] (id 'bus-1').timeout_s"),
    "bus_backoff_wrong_type": (
        lambda c, p: c["buses"][0].update(backoff_max_s="long"),
        "buses[0] (id 'bus-1').backoff_max_s",
    ),
}


def _write(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(tomli_w.dumps(cfg))
    return path


@pytest.mark.parametrize("protocol", sorted(BASES))
def test_the_base_config_of_every_protocol_is_valid(tmp_path: Path, protocol: str) -> None:
    result = CliRunner().invoke(main, ["config", "check", str(_write(tmp_path, base(protocol)))])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
@pytest.mark.parametrize("protocol", sorted(BASES))
def test_every_mistake_is_exit_2_with_the_entry_id_and_key_path(
    tmp_path: Path, protocol: str, mistake: str
) -> None:
    cfg = base(protocol)
    mutate, where = MISTAKES[mistake]
    mutate(cfg, protocol)
    path = _write(tmp_path, cfg)
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    expected = f"{path}: {where.format(point=BASES[protocol][2])}"
    assert expected in result.output, result.output
    # One mistake is reported for the broken entry only: the good device is not blamed for it.
    if mistake.startswith("bus_"):
        assert "devices[0] (id 'dev-0').bus: bus 'bus-1' has errors (see buses[0])" in result.output
    else:
        assert "devices[0]" not in result.output


def test_the_real_cli_process_gives_the_same_lines(tmp_path: Path) -> None:
    """The DL/T 645 point mistake that used to end in a traceback, through a real process."""
    cfg = base("dlt645")
    _point(cfg, "dlt645", di="ZZ", scale=NAN)
    path = _write(tmp_path, cfg)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert "devices[1] (id 'dev-7').points.voltage.di: " in out
    assert "devices[1] (id 'dev-7').points.voltage.scale: expected: input should be a finite number" in out


def test_json_output_keeps_the_plain_path_and_names_the_id(tmp_path: Path) -> None:
    cfg = base("cjt188")
    _point(cfg, "cjt188", deadband=INF)
    result = CliRunner().invoke(main, ["config", "check", "--json", str(_write(tmp_path, cfg))])
    assert result.exit_code == 2
    assert '"path": "devices[1].points.flow_total.deadband"' in result.output
    assert '"id": "dev-7"' in result.output
