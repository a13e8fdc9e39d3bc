"""The household's third signal (issue 18): the flat's door contact (BTHome 0x1A door) and the PIR
(0x21 motion) profiles, their adverts decoded by our codec through the profile's points and by
Home Assistant's bthome-ble as the oracle: both read the same values."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from citynerve.drivers.bthome import BTHomeDevice, codec
from citynerve.drivers.bthome.objects import OBJECTS
from citynerve.hil.sim.ble.oracle import bthome_ble_values

PROFILES = Path(__file__).resolve().parents[2] / "config" / "profiles"
MAC = "A4:C1:38:00:30:01"
KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")


def _device(profile: str) -> BTHomeDevice:
    prof = tomllib.loads((PROFILES / f"{profile}.toml").read_text())
    points = {name: {**p, "name": name} for name, p in prof["points"].items()}
    return BTHomeDevice.model_validate(
        {
            "id": "n1",
            "bus": "ble0",
            "profile": profile,
            "address": MAC,
            "location": {"address_code": "320508001"},
            "points": points,
        }
    )


def _object_id(name: str) -> int:
    return next(i for i, o in OBJECTS.items() if o.name == name)


# (profile, {point: value sent}, {point: the oracle's key})
CASES = [
    ("bthome-door-contact", {"door_open": True, "battery": 87}, {"door_open": "binary:door"}),
    ("bthome-door-contact", {"door_open": False, "battery": 12}, {"door_open": "binary:door"}),
    (
        "bthome-motion-pir",
        {"motion": True, "illuminance": 132.5, "battery": 64},
        {"motion": "binary:motion"},
    ),
    ("bthome-motion-pir", {"motion": False, "illuminance": 0.0, "battery": 99}, {"motion": "binary:motion"}),
]


@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize(("profile", "sent", "keys"), CASES)
def test_profile_points_read_what_bthome_ble_reads(
    profile: str, sent: dict[str, object], keys: dict[str, str], encrypted: bool
) -> None:
    dev = _device(profile)
    objs = sorted((_object_id(str(dev.points[p].object)), v) for p, v in sent.items())
    key = KEY if encrypted else None
    data = codec.build(objs, mac=MAC, key=key, counter=7 if encrypted else None)  # type: ignore[arg-type]
    advert = codec.parse(data, mac=MAC, key=key)
    ours = {}
    for name, point in dev.points.items():
        m = advert.find(point.object)
        assert m is not None, name
        ours[name] = m.value
    assert ours == pytest.approx(sent)
    oracle = bthome_ble_values(data, MAC, key)
    for name, value in sent.items():
        assert oracle[keys.get(name, name)] == pytest.approx(value), name


def test_the_profiles_name_the_objects_the_household_reads() -> None:
    door, pir = _device("bthome-door-contact"), _device("bthome-motion-pir")
    assert door.points["door_open"].object == "door" and _object_id("door") == 0x1A
    assert pir.points["motion"].object == "motion" and _object_id("motion") == 0x21
    assert door.points["door_open"].max_interval_s == pir.points["motion"].max_interval_s == 600
