"""Broken gateway configs, generated: one valid base per protocol (a bus, a good device, then the
device under test on a shipped profile) and one mistake at a time in the device, its point overrides
or its bus, with the key path `citynerve config check` must name. Used by the config fault scenarios
and tests/config/test_broken_configs.py.
"""

from __future__ import annotations

from typing import Any

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
    "modbus_rtu_over_tcp": (
        {"protocol": "modbus_rtu_over_tcp", "host": "127.0.0.1", "port": 4001},
        {"profile": "modbus-water-meter", "address": 5},
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


def device_under_test(cfg: dict[str, Any]) -> dict[str, Any]:
    device: dict[str, Any] = cfg["devices"][1]
    return device


def point_override(cfg: dict[str, Any], protocol: str, **override: Any) -> None:
    point = BASES[protocol][2]
    device_under_test(cfg).setdefault("points", {})[point] = override


# mistake -> (mutation, the key path expected after "devices[1] (id 'dev-7')" or "buses[0] (id ...)")
Mutation = Any
MISTAKES: dict[str, tuple[Mutation, str]] = {
    "point_scale_wrong_type": (
        lambda c, p: point_override(c, p, scale="abc"),
        "devices[1] (id 'dev-7').points.{point}.scale",
    ),
    "point_scale_nan": (
        lambda c, p: point_override(c, p, scale=NAN),
        "devices[1] (id 'dev-7').points.{point}.scale",
    ),
    "point_offset_inf": (
        lambda c, p: point_override(c, p, offset=-INF),
        "devices[1] (id 'dev-7').points.{point}.offset",
    ),
    "point_deadband_nan": (
        lambda c, p: point_override(c, p, deadband=NAN),
        "devices[1] (id 'dev-7').points.{point}.deadband",
    ),
    "point_scale_huge": (
        lambda c, p: point_override(c, p, scale=1e300),
        "devices[1] (id 'dev-7').points.{point}.scale",
    ),
    "point_max_interval_inf": (
        lambda c, p: point_override(c, p, max_interval_s=INF),
        "devices[1] (id 'dev-7').points.{point}.max_interval_s",
    ),
    "point_unknown_key": (
        lambda c, p: point_override(c, p, scalee=2),
        "devices[1] (id 'dev-7').points.{point}.scalee",
    ),
    "point_not_a_table": (
        lambda c, p: device_under_test(c).update(points={BASES[p][2]: 5}),
        "devices[1] (id 'dev-7').points",
    ),
    "point_not_in_profile": (
        lambda c, p: device_under_test(c).update(points={"no_such_point": {"scale": 2}}),
        "devices[1] (id 'dev-7').points.no_such_point",
    ),
    "device_unknown_key": (
        lambda c, p: device_under_test(c).update(colour="red"),
        "devices[1] (id 'dev-7').colour",
    ),
    "device_missing_location": (
        lambda c, p: device_under_test(c).pop("location"),
        "devices[1] (id 'dev-7').location",
    ),
    "device_missing_address": (
        lambda c, p: device_under_test(c).pop("address"),
        "devices[1] (id 'dev-7').address",
    ),
    "device_poll_nan": (
        lambda c, p: device_under_test(c).update(poll_interval_s=NAN),
        "devices[1] (id 'dev-7').poll_interval_s",
    ),
    "device_poll_too_fast": (
        lambda c, p: device_under_test(c).update(poll_interval_s=0.01),
        "devices[1] (id 'dev-7').poll_interval_s",
    ),
    "device_address_wrong_type": (
        lambda c, p: device_under_test(c).update(address=[1, 2]),
        "devices[1] (id 'dev-7').address",
    ),
    "device_location_lat_nan": (
        lambda c, p: device_under_test(c).update(location={**LOCATION, "lat": NAN}),
        "devices[1] (id 'dev-7').location.lat",
    ),
    "profile_id_is_a_path": (
        lambda c, p: device_under_test(c).update(profile="../../etc/passwd"),
        "devices[1] (id 'dev-7').profile",
    ),
    "device_id_bad": (
        lambda c, p: device_under_test(c).update(id="dev/7\n"),
        "devices[1] (id 'dev/7\\n').id",
    ),
    "bus_unknown_key": (lambda c, p: c["buses"][0].update(speed=9600), "buses[0] (id 'bus-1').speed"),
    "bus_timeout_nan": (lambda c, p: c["buses"][0].update(timeout_s=NAN), "buses[0] (id 'bus-1').timeout_s"),
    "bus_backoff_wrong_type": (
        lambda c, p: c["buses"][0].update(backoff_max_s="long"),
        "buses[0] (id 'bus-1').backoff_max_s",
    ),
}
