"""Validated devices that repeat are held once (gateway/config/compact.py): the point table of a
profile and pydantic's set of given field names, measured with tracemalloc."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

from citynerve.gateway.config import load_config
from citynerve.hil.bench.footprint import config_text


def _meters(tmp_path: Path, n: int, extra: str = "") -> Path:
    path = tmp_path / "gw.toml"
    addresses = [("127.0.0.1", 15020 + i // 100, 1 + i % 100) for i in range(n)]
    path.write_text(config_text(addresses, None, 10.0) + extra)
    return path


def test_devices_of_one_profile_hold_one_point_table_and_one_field_set(tmp_path: Path) -> None:
    override = "\n[devices.points.flow_rate]\ndeadband = 0.5\n"  # the last device: its own table
    cfg = load_config(_meters(tmp_path, 30, override))
    first, *same, odd = cfg.devices
    assert all(d.points is first.points for d in same)
    assert odd.points is not first.points and odd.points["flow_rate"].deadband == 0.5
    assert all(d.model_fields_set is first.model_fields_set for d in same)
    assert all(d.location.model_fields_set is first.location.model_fields_set for d in same)
    # A copy with changes gets its own set; the shared one is untouched.
    renamed = first.model_copy(update={"name": "renamed"})
    assert "name" in renamed.model_fields_set and "name" not in first.model_fields_set
    assert renamed.points is first.points and renamed.model_dump() == {
        **first.model_dump(),
        "name": "renamed",
    }


def _retained_per_device(path: Path, n: int) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        cfg = load_config(path)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        del cfg
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (held - after) / n


def test_a_validated_meter_costs_about_a_kilobyte(tmp_path: Path) -> None:
    load_config(_meters(tmp_path, 10))  # imports and the profile's models, outside the measurement
    n = 400
    per_device = _retained_per_device(_meters(tmp_path, n), n)
    # 2,400 bytes before the tables and field sets were shared (a Modbus water meter, 13 points);
    # 1,015 before equal locations were (663 since).
    assert 200 < per_device < 800, per_device


def test_devices_at_equal_locations_share_one_location(tmp_path: Path) -> None:
    other = '\n[[devices]]\nid = "wm-other"\nbus = "tcp-0"\nprofile = "modbus-water-meter"\naddress = 99\n'
    path = _meters(tmp_path, 20, other + 'location = { address_code = "310106013007", room = "B1" }\n')
    first, *same, odd = load_config(path).devices
    assert all(d.location is first.location for d in same)
    assert odd.location is not first.location
    assert odd.location.room == "B1" and first.location.room == ""
    assert odd.location.address_code == first.location.address_code == "310106013007"
    # Given or defaulted is kept apart (what `exclude_unset` dumps): a room given as "" is not shared.
    given = other.replace("wm-other", "wm-given").replace("99", "98")
    path = _meters(tmp_path, 3, given + 'location = { address_code = "310106013007", room = "" }\n')
    *meters, given_room = load_config(path).devices
    assert given_room.location is not meters[0].location
    assert given_room.location.model_dump(exclude_unset=True) == {"address_code": "310106013007", "room": ""}
    # A copy with another location leaves the shared one alone.
    moved = meters[0].model_copy(update={"location": meters[0].location.model_copy(update={"room": "C"})})
    assert moved.location.room == "C" and meters[1].location.room == ""
