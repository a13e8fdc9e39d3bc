"""The manhole node firmware, run by the real MicroPython interpreter on host stand-ins.

Every `test_*` function in device_fw/tests/test_*.py runs as its own pytest case (so CPython-only
code in the firmware fails here), and the firmware's advert bytes are checked against the
gateway's decoder and the third-party bthome-ble parser.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hypothesis import given, settings
from hypothesis import strategies as st

from citynerve.drivers.bthome import DecryptionError, codec
from citynerve.hil.sim.ble.firmware import TESTS, micropython_binary, micropython_env, run_scenario
from citynerve.hil.sim.ble.oracle import bthome_ble_values

KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
MAC = "A4:C1:38:00:00:01"


def _firmware_tests() -> list[tuple[str, str]]:
    out = []
    for path in sorted(TESTS.glob("test_*.py")):
        for name in re.findall(r"^def (test_\w+)\(", path.read_text(), re.M):
            out.append((path.stem, name))
    return out


def _run(module: str, test: str, tmp_path: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [micropython_binary(), str(TESTS / "run.py"), module, test],
        cwd=str(tmp_path),
        env=micropython_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(("module", "test"), _firmware_tests(), ids=lambda v: str(v))
def test_under_micropython(module: str, test: str, tmp_path: object) -> None:
    proc = _run(module, test, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ok {test}" in proc.stdout


def test_there_are_firmware_tests() -> None:
    mods = {m for m, _ in _firmware_tests()}
    assert {"test_tilt", "test_alarm", "test_counter", "test_ccm", "test_node"} <= mods


def test_ccm_multi_block_matches_cryptography(tmp_path: object) -> None:
    proc = _run("test_ccm", "test_multi_block_message", tmp_path)
    got = re.search(r"CCM40 ([0-9a-f]+)", proc.stdout)
    assert got, proc.stdout
    want = AESCCM(KEY, tag_length=4).encrypt(bytes(13), bytes(range(40)), None)
    assert bytes.fromhex(got.group(1)) == want


def test_advert_bytes_exact_and_cross_checked() -> None:
    boots = [
        {"tilt": 3.2, "water_v": 0.12, "battery_v": 3.45},
        {"tilt": 35.0, "water_v": 0.62, "battery_v": 3.3, "tamper": True},
    ]
    scenario = {"mac": MAC.replace(":", "").lower(), "boots": boots}
    adverts = run_scenario(scenario)
    assert len(adverts) == 2
    expected_objects = [
        [(0x01, 75), (0x0C, 3.45), (0x11, False), (0x20, False), (0x2B, False), (0x3F, 3.2), (0x40, 120)],
        [(0x01, 50), (0x0C, 3.3), (0x11, True), (0x20, True), (0x2B, True), (0x3F, 35.0), (0x40, 620)],
    ]
    for i, (fw, objs) in enumerate(zip(adverts, expected_objects, strict=True)):
        sd = fw.service_data
        assert len(fw.adv) <= 31
        advert = codec.parse(sd, mac=MAC, key=KEY)
        # Exact bytes: the gateway's encoder, same objects and counter, gives the same payload.
        assert advert.counter == i + 1
        assert sd == codec.build(objs, mac=MAC, key=KEY, counter=advert.counter)
        ours = {m.name: m.value for m in advert.measurements}
        theirs = bthome_ble_values(sd, MAC, KEY)
        assert ours["rotation"] == theirs["rotation"] == objs[5][1]
        assert ours["distance_mm"] == theirs["distance"] == objs[6][1]
        assert ours["battery"] == theirs["battery"] == objs[0][1]
        assert ours["voltage"] == theirs["voltage"] == objs[1][1]
        assert ours["opening"] == theirs["binary:opening"] == objs[2][1]
        assert ours["moisture_detected"] == theirs["binary:moisture"] == objs[3][1]
        assert ours["tamper"] == theirs["binary:tamper"] == objs[4][1]
    assert adverts[0].interval_ms == 200 and adverts[1].interval_ms == 50  # heartbeat vs alarm burst
    assert adverts[1].tilt_alarm and adverts[1].sleep_ms == 10_000


def test_wrong_key_does_not_decode_firmware_advert() -> None:
    fw = run_scenario({"boots": [{"tilt": 1.0}]})[0]
    with pytest.raises(DecryptionError):
        codec.parse(fw.service_data, mac=MAC, key=bytes(16))


def test_provision_tool(tmp_path: Path) -> None:
    import tomllib

    from citynerve.drivers.bthome import BTHomeDevice

    tool = TESTS.parent / "tools" / "provision.py"
    out = subprocess.run(
        [
            sys.executable,
            str(tool),
            "--id",
            "mh-0009",
            "--mac",
            "a4:c1:38:12:34:56",
            "--address-code",
            "320508001001",
            "--component-code",
            "3205080101000009",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    cfg = json.loads((tmp_path / "config.json").read_text())
    key = (tmp_path / "mh-0009.key").read_text().strip()
    assert cfg["key"] == key and len(key) == 32
    assert (tmp_path / "mh-0009.key").stat().st_mode & 0o777 == 0o600
    entry = tomllib.loads("\n".join(line for line in out.splitlines() if not line.startswith("#")))
    dev = BTHomeDevice.model_validate({**entry["devices"][0]})
    assert dev.address == "A4:C1:38:12:34:56" and dev.poll_interval_s == 300
    bad = subprocess.run(
        [
            sys.executable,
            str(tool),
            "--id",
            "x",
            "--mac",
            "nope",
            "--address-code",
            "1234567",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 2 and "MAC" in bad.stderr and "Traceback" not in bad.stderr


def test_counter_across_real_process_restarts(tmp_path: Path) -> None:
    # Each run is a fresh MicroPython process: RTC memory is gone (power loss), counter.dat stays.
    scenario = {"config": {"counter_block": 8}, "boots": [{"tilt": 1.0}] * 3}
    first = [
        codec.parse(a.service_data, mac=MAC, key=KEY).counter
        for a in run_scenario(scenario, workdir=str(tmp_path))
    ]
    second = [
        codec.parse(a.service_data, mac=MAC, key=KEY).counter
        for a in run_scenario(scenario, workdir=str(tmp_path))
    ]
    assert first == [1, 2, 3]
    assert second == [9, 10, 11]  # the rest of the reserved block is skipped, nothing reused


@settings(max_examples=15, deadline=None)
@given(
    boots=st.lists(
        st.fixed_dictionaries(
            {
                "tilt": st.floats(0, 179.9),
                "water_v": st.floats(0, 3.3),
                "battery_v": st.floats(2.8, 3.7),
                "tamper": st.booleans(),
            }
        ),
        min_size=1,
        max_size=8,
    )
)
def test_firmware_adverts_decode_as_measured(boots: list[dict[str, Any]]) -> None:
    adverts = run_scenario({"mac": MAC.replace(":", "").lower(), "boots": boots})
    assert len(adverts) == len(boots)
    counters = []
    for fw, boot in zip(adverts, boots, strict=True):
        advert = codec.parse(fw.service_data, mac=MAC, key=KEY)
        counters.append(advert.counter)
        ours = {m.name: m.value for m in advert.measurements}
        theirs = bthome_ble_values(fw.service_data, MAC, KEY)
        assert ours["rotation"] == theirs["rotation"]
        # 1 mg accelerometer steps (the emulated LIS3DH) and 0.1 deg in the advert
        assert abs(ours["rotation"] - boot["tilt"]) <= 0.15
        assert abs(ours["distance_mm"] - min(65535, boot["water_v"] * 1000)) <= 1
        assert abs(ours["voltage"] - boot["battery_v"]) <= 0.0011
        assert ours["tamper"] is boot["tamper"] is theirs["binary:tamper"]
        assert 0 <= ours["battery"] <= 100
    assert counters == sorted(set(counters))


def test_family_builds_adverts_decode_into_their_profiles(tmp_path: Path) -> None:
    """The bed-foot and hydrant builds (issue 18): their adverts, from MicroPython, decoded by the
    gateway with the shipped profiles' objects."""
    import tomllib

    proc = subprocess.run(
        [micropython_binary(), str(TESTS / "emit_family.py"), MAC.replace(":", "").lower()],
        cwd=str(tmp_path),
        env=micropython_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = dict(line.split() for line in proc.stdout.splitlines() if line.startswith(("BED", "HYDRANT")))
    profiles = TESTS.parents[1] / "config" / "profiles"
    for build, profile, want in (
        ("BED", "bthome-bed-occupancy", {"occupancy": True}),
        ("HYDRANT", "bthome-fire-hydrant", {"opening": True, "pressure": 3200.0}),
        # a sensor that reads nothing: 0x26 problem in the reading's place
        ("BED_FAULT", "bthome-bed-occupancy", {"problem": True}),
        ("HYDRANT_FAULT", "bthome-fire-hydrant", {"problem": True, "pressure": 3200.0}),
    ):
        adv = bytes.fromhex(lines[build])
        assert len(adv) <= 31
        sdata = adv[4 : 1 + adv[0]]
        advert = codec.parse(sdata, mac=MAC, key=KEY)
        got = {m.name: m.value for m in advert.measurements}
        objects = {
            p["object"] for p in tomllib.loads((profiles / f"{profile}.toml").read_text())["points"].values()
        }
        assert set(got) - {"voltage"} <= objects | {"voltage"}, (build, got)
        for name, value in want.items():
            assert got[name] == pytest.approx(value), (build, got)
        theirs = bthome_ble_values(sdata, MAC, KEY)
        assert theirs, build
        if build.endswith("_FAULT"):
            assert theirs["binary:problem"] is True, theirs
            assert "rotation" not in got and "occupancy" not in got, (build, got)


def test_dead_accelerometer_advert_says_problem_not_rotation() -> None:
    """A manhole node whose accelerometer reads no gravity: the gateway's codec and bthome-ble both
    read a problem (0x26) and no rotation, in the 31 bytes, gas detector or not."""
    for gas in (False, True):
        boots = [{"accel": [0.0, 0.0, 0.0], "gas": gas}]
        scenario = {"mac": MAC.replace(":", "").lower(), "config": {"gas": gas}, "boots": boots}
        (fw,) = run_scenario(scenario)
        assert len(fw.adv) <= 31
        ours = {m.name: m.value for m in codec.parse(fw.service_data, mac=MAC, key=KEY).measurements}
        theirs = bthome_ble_values(fw.service_data, MAC, KEY)
        assert ours["problem"] is True and theirs["binary:problem"] is True
        assert "rotation" not in ours and "rotation" not in theirs
        assert ours["opening"] is False  # the node does not know; the fault says so
