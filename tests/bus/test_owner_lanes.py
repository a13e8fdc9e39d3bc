"""The owner's lanes (gateway/bus/schedule.py) with the scripted driver of test_owner.py: a device
that falls silent while many offline ones are probed still goes offline on time (the failing go
before the offline's probes), and a retry waits for the answering devices' polls due. The budget
against real peers: tests/modbus/test_modbus_silent_share.py."""

from __future__ import annotations

import asyncio
import random
import time

from citynerve.gateway.api import BusConfig
from citynerve.gateway.bus import BusOwner
from tests.bus.test_owner import Collector, ScriptedDriver, device


async def test_a_device_that_falls_silent_goes_offline_on_time_while_twenty_offline_ones_are_probed() -> None:
    """Twenty devices offline since the last stop (silent, probed every 0.1..0.4 s, each probe one
    50 ms timeout: more than the line holds) and one that answers, then falls silent: it goes
    offline after its 4 failed transactions (1 + retries, then offline_after - 1), each a turn of
    its own between the answering polls, not behind the probes. It waited behind the probes due
    before each of its polls (about 2 s here)."""
    bus = BusConfig(
        id="b1", protocol="test", timeout_s=0.05, retries=1, offline_after=3,
        backoff_initial_s=0.1, backoff_max_s=0.4,
    )  # fmt: skip
    devices = [device(f"d{i}") for i in range(21)]
    driver = ScriptedDriver(bus, devices)
    driver.silent.update(f"d{i}" for i in range(1, 21))
    sink = Collector([], [], [])
    offline = [f"d{i}" for i in range(1, 21)]
    owner = BusOwner(bus, devices, driver, sink, rng=random.Random(2), offline=offline)
    task = asyncio.create_task(owner.run())
    try:
        await asyncio.sleep(1.0)
        assert owner.health["d0"].online is True
        driver.silent.add("d0")
        started = time.monotonic()
        while owner.health["d0"].online is not False:
            assert time.monotonic() - started < 5.0, "d0 never went offline"
            await asyncio.sleep(0.005)
        took = time.monotonic() - started
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # 4 transactions of 50 ms, its 50 ms interval and a probe in flight at each: well under 1 s.
    assert took < 1.0, took
