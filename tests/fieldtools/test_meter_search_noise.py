"""A meter search on a noisy line (or one opened with the wrong settings) stops early with a typed
reason: every question "collided", so the search walked to MAX_QUESTIONS (5,000 questions, each
waiting its full timeout: about 90 minutes at 2400 baud). A line of meters that really share an
address or three still finishes."""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.commissioning import discover
from citynerve.gateway.commissioning.meter_search import MAX_UNRESOLVED, WILDCARD, Stop, search
from citynerve.gateway.config import load_config

from .conftest import gateway_toml


def _line(addresses: list[str]) -> Any:
    """A modelled line: the meters that fit a pattern answer; two or more collide."""

    async def probe(pattern: str) -> dict[str, Any]:
        fits = [a for a in addresses if all(p in (WILDCARD, c) for p, c in zip(pattern, a, strict=True))]
        if not fits:
            return {"outcome": "silent"}
        return {"outcome": "one", "address": fits[0]} if len(fits) == 1 else {"outcome": "collision"}

    return probe


async def test_every_question_colliding_stops_at_the_fifth_full_address() -> None:
    async def noise(pattern: str) -> dict[str, Any]:
        return {"outcome": "collision"}

    r = await search("dlt645", noise, baudrate=2400, timeout_s=1.0)
    # 12 digits fixed one by one (12 questions after the first), then full addresses 0, 1, 2, 3.
    assert r.stop is Stop.NOISY and len(r.unresolved) == MAX_UNRESOLVED + 1 and r.asked == 16
    assert (
        r.stopped.startswith("line noisy or settings wrong")
        and "run `citynerve diag dlt645 probe`" in r.stopped
    )
    assert r.to_dict()["stop"] == "noisy"


async def test_meters_sharing_addresses_still_finish_the_search() -> None:
    shared = ["310106000001", "310106000002", "310106000003"]  # each twice: three real clashes
    others = [f"3101060001{i:02d}" for i in range(10)]
    r = await search("dlt645", _line(shared * 2 + others), baudrate=2400, timeout_s=1.0)
    assert r.stop is None and r.stopped == ""
    assert sorted(r.unresolved) == shared and set(r.found) == set(others)


@pytest.fixture
async def noisy_port() -> AsyncIterator[str]:
    """A serial line on which every request is answered by garbage (a bad termination, a meter at
    another baud rate talking over it): the driver's probe hears 'a collision' every time."""
    leader, follower = os.openpty()
    tty.setraw(follower)
    os.set_blocking(leader, False)
    loop = asyncio.get_running_loop()

    def answer() -> None:
        try:
            if os.read(leader, 4096):
                os.write(leader, b"\x68\x12\x34\xfe\x00\x91\x16\x68\xff")  # no frame: bad length, checksum
        except OSError:
            pass

    loop.add_reader(leader, answer)
    try:
        yield os.ttyname(follower)
    finally:
        loop.remove_reader(leader)
        os.close(leader)
        os.close(follower)


@pytest.mark.slow
async def test_discovery_on_a_noisy_line_reports_it_and_stops(short_dir: Path, noisy_port: str) -> None:
    path = short_dir / "gw.toml"
    base = gateway_toml("127.0.0.1", 1, devices=(), rules=False)
    path.write_text(
        base[: base.index("[[buses]]")]
        + f'[[buses]]\nid = "riser"\nprotocol = "dlt645"\nport = "{noisy_port}"\ntimeout_s = 0.2\n'
    )
    result = await discover(load_config(path))
    assert not result.found
    [problem] = result.problems
    assert problem.bus == "riser"
    assert problem.message.startswith("meter search incomplete: line noisy or settings wrong: 4 full")
    assert "stopped after 16 questions: run `citynerve diag dlt645 probe`" in problem.message
