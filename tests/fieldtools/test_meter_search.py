"""Meter search on a shared RS-485 line: 30 DL/T 645 and 30 CJ/T 188 meters on one line each, found
without knowing any address, through the real drivers on pty lines where overlapping replies collide."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.commissioning import discover
from gateway.commissioning.meter_search import SearchProgress, estimate_s
from gateway.config import load_config
from hil.sim.serial import SerialMeterBus, riser_cjt188, riser_dlt645

from .conftest import gateway_toml

pytestmark = pytest.mark.slow
TIMEOUT_S = 0.12  # a pty answers at once; the timeout is what each silent question costs


def _config(short_dir: Path, protocol: str, port: str) -> Path:
    path = short_dir / "gw.toml"
    base = gateway_toml("127.0.0.1", 1, devices=(), rules=False)
    base = base[: base.index("[[buses]]")]
    path.write_text(
        base + f'[[buses]]\nid = "riser"\nprotocol = "{protocol}"\nport = "{port}"\ntimeout_s = {TIMEOUT_S}\n'
    )
    return path


async def test_thirty_dlt645_meters_on_one_line(short_dir: Path) -> None:
    meters = riser_dlt645()
    async with SerialMeterBus(meters=meters, baudrate=2400, wire_time=False) as bus:
        cfg = load_config(_config(short_dir, "dlt645", bus.port))
        notes: list[SearchProgress] = []
        result = await discover(cfg, search_note=lambda _bus, p: notes.append(p))
        collisions = bus.collisions
    assert not result.problems, result.problems
    found = {f.address: f for f in result.found}
    assert set(found) == {m.address for m in meters}  # all 30, none invented
    # Every digit collided on the way down to the pair that differs only in its first digit.
    assert collisions >= 12 and notes[-1].pending == 0 and notes[-1].found == 30
    # The version is asked, not guessed: four meters still speak 1997.
    assert {a for a, f in found.items() if f.detail["version"] == "1997"} == {
        m.address for m in meters if m.version == "1997"
    }
    assert all(
        f.detail["version"] == "2007"
        for a, f in found.items()
        if a not in {m.address for m in meters if m.version == "1997"}
    )
    assert found["310106000003"].detail["evidence"]["2007"].startswith("error reply")
    # Progress: the estimate of what is left falls to the last question's time.
    assert notes[0].seconds_left > notes[-1].seconds_left
    asked = notes[-1].asked
    assert asked < 300, asked


async def test_thirty_cjt188_meters_type_and_byte_order_from_the_reply(short_dir: Path) -> None:
    meters = riser_cjt188()
    async with SerialMeterBus(meters=meters, baudrate=2400, wire_time=False) as bus:
        cfg = load_config(_config(short_dir, "cjt188", bus.port))
        result = await discover(cfg)
        collisions = bus.collisions
    assert not result.problems, result.problems
    found = {f.address: f for f in result.found}
    assert set(found) == {m.address for m in meters}
    assert collisions >= 14
    for m in meters:
        detail = found[m.address].detail
        assert detail["meter_type"] == f"{m.meter_type:02X}"
        assert detail["di_order"] == m.di_order.value


def test_time_estimate_from_the_baud_rate() -> None:
    slow = estimate_s("dlt645", 30, 1200, 1.0)
    fast = estimate_s("dlt645", 30, 9600, 1.0)
    assert fast < slow
    # 30 meters at 2400 baud with a 1 s timeout: a few minutes, dominated by silent questions.
    assert 250 < estimate_s("dlt645", 30, 2400, 1.0) < 400
