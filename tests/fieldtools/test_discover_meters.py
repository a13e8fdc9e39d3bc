"""`init --discover` and `report` on RS-485 meters played by the simulators on ptys: a three-phase
DL/T 645-1997 meter gets the 1997 three-phase profile (its single-phase profile asks that phase B
does not answer), a CJ/T 188 hot-water meter (T=11) the hot-water profile, and the hand-over report
of the running gateway judges each device's evidence as discovery did (same checks, same score)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from citynerve.gateway.cli import main
from citynerve.gateway.config import load_config
from citynerve.hil.sim.serial import SerialMeterBus, SimCjt188Meter, SimDlt645Meter

from .conftest import run_gateway

IDENTITY = ("--gateway-id", "gw-1", "--city", "310100", "--district", "310106", "--street", "310106013")
HOT = "00000000000011"
EM_2007_1PH = "000000000161"
EM_1997_3PH = "000000000197"
EM_1997_1PH = "000000000198"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@dataclass
class Site:
    path: Path
    init: dict[str, Any]  # what `init --discover --json` said


@pytest.fixture
async def site(short_dir: Path) -> AsyncIterator[Site]:
    water = [SimCjt188Meter(HOT, meter_type=0x11)]
    power = [
        SimDlt645Meter(EM_2007_1PH, phases=1),
        SimDlt645Meter(EM_1997_3PH, version="1997"),
        SimDlt645Meter(EM_1997_1PH, version="1997", phases=1),
    ]
    async with (
        SerialMeterBus(meters=water, baudrate=2400, wire_time=False) as w,
        SerialMeterBus(meters=power, baudrate=2400, wire_time=False) as p,
    ):
        path = short_dir / "gateway.toml"
        r = await asyncio.to_thread(
            cli, "init", "-c", str(path), *IDENTITY, "--bus", f"water:cjt188:{w.port}",
            "--bus", f"power:dlt645:{p.port}", "--discover", "--search-timeout", "0.3", "--yes", "--json",
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        yield Site(path, json.loads(r.output))


def _assigned(site: Site) -> dict[str, str | None]:
    return {str(d["found"]["address"]): d["profile"] for d in site.init["discovered"]}


async def test_a_three_phase_1997_meter_gets_the_1997_three_phase_profile(site: Site) -> None:
    assigned = _assigned(site)
    assert (assigned[EM_1997_3PH], assigned[EM_1997_1PH], assigned[EM_2007_1PH]) == (
        "dlt645-1997-three-phase",
        "dlt645-1997-single-phase",
        "dlt645-single-phase",
    )
    evidence = {str(d["found"]["address"]): d["evidence"] for d in site.init["discovered"]}
    # The 1997 single-phase profile no longer fits a meter whose phase B answers (it scored 12 vs -20).
    three = {v["profile"]: v for v in evidence[EM_1997_3PH]}
    phase_b = [e for e in three["dlt645-1997-single-phase"]["evidence"] if "B612" in e["check"]]
    assert [(e["passed"], e["found"]) for e in phase_b] == [(False, "data")]
    assert 180 < three["dlt645-1997-three-phase"]["first_values"]["voltage_b"] < 260
    one = {v["profile"]: v for v in evidence[EM_1997_1PH]}
    phase_b = [e for e in one["dlt645-1997-single-phase"]["evidence"] if "B612" in e["check"]]
    assert [(e["passed"], e["found"]) for e in phase_b] == [(True, "error")]


async def test_a_hot_water_meter_gets_the_hot_water_profile(site: Site) -> None:
    assert _assigned(site)[HOT] == "cjt188-water-hot"
    hot = {d.id: d for d in load_config(site.path).devices}[f"meter-{HOT}"]
    assert (hot.profile, getattr(hot, "meter_type", None)) == ("cjt188-water-hot", 0x11)
    assert f"meter-{HOT}" in site.init["added"]


async def test_the_report_of_the_running_gateway_judges_as_discovery_did(site: Site, short_dir: Path) -> None:
    with site.path.open("a") as f:
        f.write(f'\n[store]\npath = "{short_dir}/outbox.db"\n[control]\nsocket = "{short_dir}/gw.sock"\n')
    by_id = {f"{'meter' if a == HOT else 'em'}-{a}": a for a in _assigned(site)}
    init_scores = {
        str(d["found"]["address"]): next(v["score"] for v in d["evidence"] if v["profile"] == d["profile"])
        for d in site.init["discovered"]
    }
    async with run_gateway(load_config(site.path)):
        r = await asyncio.to_thread(cli, "report", "-c", str(site.path), "--json")
    report = json.loads(r.output)
    assert report["running"] is True
    for dev in report["devices"]:
        assert [o for o in dev["open"] if o.startswith("check")] == [], dev
        assert all(e["passed"] is True for e in dev["evidence"]), dev["evidence"]
        assert dev["identified"] and dev["score"] == init_scores[by_id[dev["id"]]], dev
    em = next(d for d in report["devices"] if d["id"] == f"em-{EM_2007_1PH}")
    phase_b = next(e for e in em["evidence"] if "02010200" in e["check"])
    assert (phase_b["passed"], phase_b["weight"], phase_b["found"]) == (True, 4, "error")


async def test_a_line_where_nothing_answers_says_what_to_check(short_dir: Path) -> None:
    # The meters answer at 2400 baud only (a pty carries the setting the gateway opened it at); the
    # installer typed 9600. Discovery ended with "no new devices found" and exit 0, and a missing
    # port's error was shown as "bus x: bus x: cannot open ...".
    power = [SimDlt645Meter(EM_2007_1PH, phases=1)]
    async with SerialMeterBus(meters=power, baudrate=2400, enforce_baud=True) as p:
        path = short_dir / "gateway.toml"
        r = await asyncio.to_thread(
            cli, "init", "-c", str(path), *IDENTITY, "--bus", f"power:dlt645:{p.port}:9600",
            "--bus", f"gone:dlt645:{short_dir}/ttyUSB-gone", "--discover", "--search-timeout", "0.2",
            "--yes", "--no-interactive",
        )  # fmt: skip
        assert r.exit_code == 1, r.output
        assert p.requests >= 1  # it was asked, at the wrong speed
    text = " ".join(r.output.split())  # rich wraps at 80 columns
    assert (
        f"bus power: no meter answered at {p.port} 9600 8E1: check A/B polarity, the meters' power and "
        "that they use this baud rate and parity"
    ) in text, text
    assert "`citynerve diag dlt645 read-address --port PORT --baud B --parity P`" in text
    assert f"bus gone: serial port {short_dir}/ttyUSB-gone not found (is the adapter plugged in?)" in text
    assert "bus gone: bus gone" not in text
    # At the meters' speed the same line is found, with nothing to say about it.
    path.unlink()
    async with SerialMeterBus(meters=power, baudrate=2400, enforce_baud=True) as p:
        r = await asyncio.to_thread(
            cli, "init", "-c", str(path), *IDENTITY, "--bus", f"power:dlt645:{p.port}",
            "--discover", "--search-timeout", "0.2", "--yes", "--json",
        )  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["problems"] == [] and [d["found"]["address"] for d in out["discovered"]] == [EM_2007_1PH]
