"""The shipped BTHome profiles and the street example load through the gateway's config loader."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from citynerve.drivers.bthome import DRIVER, BTHomeDevice
from citynerve.gateway.api import ConfigError
from citynerve.gateway.config import load_config

REPO = Path(__file__).resolve().parents[2]
PROFILES = sorted((REPO / "config" / "profiles").glob("bthome-*.toml"))


def test_the_profiles_ship() -> None:
    assert {p.stem for p in PROFILES} == {
        "bthome-manhole-cover",
        "bthome-smoke",
        "bthome-water-leak",
        "bthome-temperature",
        # issue 18: the rest of the street's battery nodes
        "bthome-bed-occupancy",
        "bthome-fire-hydrant",
        "bthome-fire-lane",
        "bthome-litter-bin",
        "bthome-curtain-wall",
        "bthome-entrance-door",
        # issue 18: the third signal of a household (door contact, PIR)
        "bthome-door-contact",
        "bthome-motion-pir",
    }


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_profile_points_validate(path: Path) -> None:
    data = tomllib.loads(path.read_text())
    assert data["id"] == path.stem and data["family"] == "bthome" and data["source"]
    for name, point in data["points"].items():
        DRIVER.point_model.model_validate({**point, "name": name})


def test_street_example_loads() -> None:
    cfg = load_config(REPO / "config" / "examples" / "street-manholes-ble.toml")
    (bus,) = cfg.buses
    assert bus.protocol == "bthome"
    devices = [d for d in cfg.devices if isinstance(d, BTHomeDevice)]
    assert len(devices) == 2
    mh = devices[0]
    assert mh.poll_interval_s in (None, 300) and mh.points["tilt_alarm"].event_kind == "manhole_tilt"


def test_bad_node_config_names_the_key_path(tmp_path: Path) -> None:
    text = (REPO / "config" / "examples" / "street-manholes-ble.toml").read_text()
    text = text.replace('address = "A4:C1:38:00:00:02"', 'address = "A4:C1:38"')
    text = text.replace('key = "00112233445566778899aabbccddeeff"', 'key = "0011"')
    text = text.replace('"/etc/citynerve/keys/mh-0001.key"', '"keys/mh-0001.key"')
    text = text.replace("../../var/", str(tmp_path) + "/")
    cfg = tmp_path / "street.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    paths = " ".join(i.path for i in info.value.issues)
    messages = " ".join(i.message for i in info.value.issues)
    assert "devices[1].address" in paths and "devices[1].key" in paths
    assert "16 bytes" in messages
    assert "devices[0].key_file" not in paths  # a relative key file is fine: see below


def test_relative_key_file_is_found_next_to_the_config(tmp_path: Path) -> None:
    text = (REPO / "config" / "examples" / "street-manholes-ble.toml").read_text()
    text = text.replace('"/etc/citynerve/keys/mh-0001.key"', '"keys/mh-0001.key"')
    text = text.replace("../../var/", str(tmp_path) + "/")
    (tmp_path / "cfg").mkdir()
    cfg = tmp_path / "cfg" / "street.toml"
    cfg.write_text(text)
    device = load_config(cfg).device("mh-0001")
    assert isinstance(device, BTHomeDevice)
    assert device.key_file == tmp_path / "cfg" / "keys" / "mh-0001.key"
