"""Meter search on a shared RS-485 line: 30 DL/T 645 and 30 CJ/T 188 meters on one line each, found
without knowing any address, through the real drivers on pty lines where overlapping replies collide."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.commissioning import discover
from citynerve.gateway.commissioning.meter_search import SearchProgress, estimate_s
from citynerve.gateway.config import load_config
from citynerve.hil.sim.serial import SerialMeterBus, SimDlt645Meter, riser_cjt188, riser_dlt645

from .conftest import gateway_toml

pytestmark = pytest.mark.slow
TIMEOUT_S = 0.25  # a pty answers at once; generous for a loaded CI machine (each silent question costs it)


def _config(folder: Path, protocol: str, port: str) -> Path:
    folder.mkdir()
    path = folder / "gw.toml"
    base = gateway_toml("127.0.0.1", 1, devices=(), rules=False)
    base = base[: base.index("[[buses]]")]
    path.write_text(
        base + f'[[buses]]\nid = "riser"\nprotocol = "{protocol}"\nport = "{port}"\ntimeout_s = {TIMEOUT_S}\n'
    )
    return path


@pytest.mark.long
async def test_thirty_meters_on_each_line(short_dir: Path) -> None:
    # Both risers searched at once (two lines, two searches): half the wall time of one after the other.
    dlt_meters, cjt_meters = riser_dlt645(), riser_cjt188()
    async with (
        SerialMeterBus(meters=dlt_meters, baudrate=2400, wire_time=False) as dlt_bus,
        SerialMeterBus(meters=cjt_meters, baudrate=2400, wire_time=False) as cjt_bus,
    ):
        dlt_cfg = load_config(_config(short_dir / "dlt", "dlt645", dlt_bus.port))
        cjt_cfg = load_config(_config(short_dir / "cjt", "cjt188", cjt_bus.port))
        notes: list[SearchProgress] = []
        dlt, cjt = await asyncio.gather(
            discover(dlt_cfg, search_note=lambda _bus, p: notes.append(p)), discover(cjt_cfg)
        )
        collisions = (dlt_bus.collisions, cjt_bus.collisions)

    # DL/T 645: all 30, none invented; every digit collided on the way to the pair that differs
    # only in its first digit.
    assert not dlt.problems, dlt.problems
    found = {f.address: f for f in dlt.found}
    assert set(found) == {m.address for m in dlt_meters}
    assert collisions[0] >= 12 and notes[-1].pending == 0 and notes[-1].found == 30
    # The version is asked, not guessed: four meters still speak 1997.
    old = {m.address for m in dlt_meters if m.version == "1997"}
    assert len(old) == 4
    assert {a for a, f in found.items() if f.detail["version"] == "1997"} == old
    assert all(f.detail["version"] == "2007" for a, f in found.items() if a not in old)
    assert found["310106000003"].detail["evidence"]["2007"].startswith("error reply")
    # Progress: the estimate of what is left falls to the last question's time.
    assert notes[0].seconds_left > notes[-1].seconds_left
    assert notes[-1].asked < 300, notes[-1].asked

    # CJ/T 188: all 30, with the type and the DI byte order each meter's reply shows.
    assert not cjt.problems, cjt.problems
    by_address = {f.address: f for f in cjt.found}
    assert set(by_address) == {m.address for m in cjt_meters}
    assert collisions[1] >= 14
    for m in cjt_meters:
        detail = by_address[m.address].detail
        assert detail["meter_type"] == f"{m.meter_type:02X}"
        assert detail["di_order"] == m.di_order.value


def test_time_estimate_from_the_baud_rate() -> None:
    slow = estimate_s("dlt645", 30, 1200, 1.0)
    fast = estimate_s("dlt645", 30, 9600, 1.0)
    assert fast < slow
    # 30 meters at 2400 baud with a 1 s timeout: a few minutes, dominated by silent questions.
    assert 250 < estimate_s("dlt645", 30, 2400, 1.0) < 400


async def test_init_shows_the_estimate_and_the_meters_found(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from citynerve.gateway.cli import cmd_init, main

    asked: list[object] = []
    real_discover = cmd_init.discover

    async def discover(*args: Any, **kwargs: Any) -> Any:  # the real search, its settings recorded
        asked.append(kwargs.get("search_timeout_s"))
        return await real_discover(*args, **kwargs)

    monkeypatch.setattr(cmd_init, "discover", discover)

    meters = [SimDlt645Meter("310106000001", phases=1), SimDlt645Meter("310106000002", phases=1)]
    async with SerialMeterBus(meters=meters, baudrate=2400, wire_time=False) as bus:
        args = [
            "init", "-c", str(short_dir / "gw.toml"), "--gateway-id", "gw-1", "--city", "310100",
            "--district", "310106", "--street", "310106013", "--no-interactive",
            "--bus", f"riser:dlt645:{bus.port}", "--discover", "--search-timeout", "0.3", "--yes",
        ]  # fmt: skip
        r = await asyncio.to_thread(CliRunner().invoke, main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "meter search on riser (2400 baud, 0.3 s per silent question): about" in r.output
    assert "added 2 devices" in r.output
    assert asked == [0.3]  # --search-timeout reaches the search (it was shown in the estimate only)
