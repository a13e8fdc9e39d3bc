"""The shipped dlt645/cjt188/firepanel profiles load through the gateway's config loader, and a
building config with them validates; bad entries give every issue with its key path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynerve.drivers.cjt188 import Cjt188Device
from citynerve.drivers.dlt645 import Dlt645Device
from citynerve.drivers.firepanel import FirePanelDevice
from citynerve.gateway.api import ConfigError
from citynerve.gateway.cli import main
from citynerve.gateway.config import load_config

DATA = Path(__file__).parent / "data"
PROFILES = Path(__file__).resolve().parents[2] / "config" / "profiles"
MINE = sorted(
    p.stem for p in PROFILES.glob("*.toml") if p.stem.split("-")[0] in {"dlt645", "cjt188", "firepanel"}
)


def test_profiles_shipped() -> None:
    assert len(MINE) >= 7
    assert {
        "dlt645-three-phase",
        "dlt645-1997-single-phase",
        "cjt188-water-cold",
        "cjt188-heat",
        "firepanel-gst",
    } <= set(MINE)


def test_building_config_validates(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    shutil.copy(DATA / "building-meters.toml", path)
    cfg = load_config(path)
    devices = {d.id: d for d in cfg.devices}
    incomer = devices["em-incomer"]
    assert isinstance(incomer, Dlt645Device) and incomer.version == "2007" and len(incomer.points) == 16
    assert isinstance(devices["em-old"], Dlt645Device) and devices["em-old"].version == "1997"
    water = devices["wm-0301"]
    assert isinstance(water, Cjt188Device) and water.meter_type == 0x10
    assert water.points["flow_total"].deadband == 0.001 and water.points["valve"].writable
    assert isinstance(devices["wm-0302"], Cjt188Device) and devices["wm-0302"].di_order == "1F90"
    assert isinstance(devices["fp-main"], FirePanelDevice) and devices["fp-main"].panel_model == "gst"
    power = cfg.bus("rs485-power")
    assert (power.baudrate, power.parity) == (2400, "E")  # type: ignore[attr-defined]
    assert (cfg.bus("fire-panel").baudrate, cfg.bus("fire-panel").parity) == (9600, "N")  # type: ignore[attr-defined]


def test_bad_entries_are_all_reported(tmp_path: Path) -> None:
    text = (DATA / "building-meters.toml").read_text(encoding="utf-8")
    text = text.replace('address = "000000000301"', 'address = "30A"')
    text = text.replace('address = "00000000000302"', 'address = "00000000000302"\nmeter_type = "ZZ"')
    text = text.replace('profile = "firepanel-gst"', 'profile = "firepanel-gst"\npanel_model = "acme"')
    text = text.replace('parity = "E"', 'parity = "X"')
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    paths = " ".join(issue.path for issue in info.value.issues)
    for where in ("address", "meter_type", "panel_model", "parity"):
        assert where in paths, (where, [str(i) for i in info.value.issues])


@pytest.mark.parametrize(
    ("bus", "profile", "address", "says"),
    [
        ("rs485-water", "cjt188-water-cold", "1234567890123", "a CJ/T 188 address is 14 digits, found 13"),
        ("rs485-power", "dlt645-single-phase", "12345", "a DL/T 645 address is 12 digits, found 5"),
        ("rs485-power", "dlt645-single-phase", "16A", "a DL/T 645 address is 12 digits, found '16A'"),
    ],
)
def test_devices_add_says_a_meter_address_s_length_in_the_diag_commands_words(
    tmp_path: Path, bus: str, profile: str, address: str, says: str
) -> None:
    # It said "string should match pattern '^[0-9]{14}$'".
    path = tmp_path / "gateway.toml"
    shutil.copy(DATA / "building-meters.toml", path)
    r = CliRunner().invoke(
        main,
        [
            "devices", "add", "-c", str(path), "--id", "m-x", "--bus", bus, "--profile", profile,
            "--address", address,
        ],
    )  # fmt: skip
    text = " ".join(r.output.split())
    assert r.exit_code == 2, text
    assert f"devices[7] (id 'm-x').address: {says} (as printed on the meter, leading zeros included)" in text
    assert "pattern" not in text and "expected:" not in text, text
    # diag says it the same way (one wording helper)
    diag = CliRunner().invoke(
        main, ["diag", "dlt645", "read", "--port", "/dev/null", "--address", "12345", "--di", "00010000"]
    )
    assert "error: --address: a DL/T 645 address is 12 digits, found 5 (as printed" in diag.output


def test_a_profile_typo_gets_a_did_you_mean_and_each_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # From the config's folder (`-c gateway.toml`), "profiles" was listed twice: the folder's own and
    # its parent's, both `profiles` for a bare file name (and the parent's was never searched).
    shutil.copy(DATA / "building-meters.toml", tmp_path / "gateway.toml")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(
        main,
        [
            "devices", "add", "-c", "gateway.toml", "--id", "wm-x", "--bus", "rs485-water",
            "--profile", "cjt188-watr-cold", "--address", "12345678901234",
        ],
    )  # fmt: skip
    text = " ".join(r.output.split())
    assert r.exit_code == 2, text
    assert "no profile 'cjt188-watr-cold' (did you mean 'cjt188-water-cold'?); looked for" in text, text
    searched = text.split("looked for cjt188-watr-cold.toml in ")[1].split(" gateway.toml was not")[0]
    folders = searched.split(", ")
    assert len(folders) == len(set(folders)), folders
    assert folders[:2] == [str(tmp_path / "profiles"), str(tmp_path.parent / "profiles")], folders
