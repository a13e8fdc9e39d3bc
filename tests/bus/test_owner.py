"""Bus owner behaviour with a scripted driver (subclass of the real PollDriver interface).

The owner's scheduling, retry, backoff and online/offline logic is protocol-independent; the Modbus
and serial integration tests exercise it again against real peers.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from citynerve.gateway.api import (
    BusConfig,
    ChannelError,
    DeviceConfig,
    DeviceExceptionError,
    DeviceTimeoutError,
    Event,
    EventState,
    Location,
    PointConfig,
    PollDriver,
    PollRequest,
    Quality,
    Sample,
    SampleBatch,
    Value,
)
from citynerve.gateway.bus import OFFLINE_KIND, BusNotRunningError, BusOwner
from citynerve.gateway.bus.schedule import FIRST_POLL_SPREAD_S

LOC = Location(address_code="310106013001")


def device(dev_id: str, interval: float = 0.05) -> DeviceConfig:
    return DeviceConfig(
        id=dev_id,
        bus="b1",
        profile="p",
        address=1,
        location=LOC,
        poll_interval_s=interval,
        points={"v": PointConfig(name="v"), "w": PointConfig(name="w", writable=True)},
    )


class ScriptedDriver(PollDriver[BusConfig, DeviceConfig]):
    """Answers like a bus would; `silent` devices time out after the bus timeout."""

    def __init__(self, bus: BusConfig, devices: Sequence[DeviceConfig]) -> None:
        super().__init__(bus, devices)
        self.silent: set[str] = set()
        self.refusing: set[str] = set()
        self.hanging: set[str] = set()  # a driver bug: the read never ends, whatever its timeout
        self.reads: list[tuple[str, float]] = []
        self.writes: list[tuple[str, str, Value]] = []
        self.opens = 0
        self.open_fails = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def open(self) -> None:
        if self.open_fails:
            self.open_fails -= 1
            raise ChannelError(self.bus.id, "no such port /dev/ttyUSB9")
        self.opens += 1

    async def close(self) -> None:
        pass

    def plan(self, device: DeviceConfig) -> Sequence[PollRequest]:
        return [PollRequest(("v",), device.poll_interval_s or 60)]

    async def read(self, device: DeviceConfig, request: PollRequest) -> tuple[Sample, ...]:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.reads.append((device.id, time.monotonic()))
            if device.id in self.silent:
                await asyncio.sleep(self.bus.timeout_s)
                raise DeviceTimeoutError(device.id, request.points, self.bus.timeout_s)
            if device.id in self.hanging:
                await asyncio.sleep(3600)
            if device.id in self.refusing:
                raise DeviceExceptionError(device.id, 2, "illegal data address", request.points)
            await asyncio.sleep(0.001)
            return (Sample("v", 42),)
        finally:
            self.in_flight -= 1

    async def write(self, device: DeviceConfig, point: str, value: Value) -> None:
        self.writes.append((device.id, point, value))


@dataclass
class Collector:
    batches: list[SampleBatch]
    events: list[Event]
    offline: list[str]

    def submit(self, batch: SampleBatch) -> None:
        self.batches.append(batch)

    def event(self, event: Event) -> None:
        self.events.append(event)

    def mark_offline(self, device_id: str, ts: float) -> None:
        self.offline.append(device_id)


def make(n: int = 2, **bus_kw: float) -> tuple[BusOwner, ScriptedDriver, Collector]:
    bus = BusConfig(
        id="b1",
        protocol="test",
        **{
            "timeout_s": 0.05,
            "retries": 1,
            "offline_after": 2,
            "backoff_initial_s": 0.2,
            "backoff_max_s": 0.4,
            **bus_kw,
        },
    )
    devices = [device(f"d{i}") for i in range(n)]
    driver = ScriptedDriver(bus, devices)
    sink = Collector([], [], [])
    return BusOwner(bus, devices, driver, sink, rng=random.Random(1)), driver, sink


async def run_for(owner: BusOwner, seconds: float) -> None:
    task = asyncio.create_task(owner.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_polls_every_device_on_schedule_one_at_a_time() -> None:
    owner, driver, sink = make(3)
    await run_for(owner, 0.5)
    per_device = {d: sum(1 for r in driver.reads if r[0] == d) for d in ("d0", "d1", "d2")}
    # 50 ms interval over ~0.5 s (minus up to one interval of start jitter): 8..11 polls each.
    assert all(7 <= n <= 11 for n in per_device.values()), per_device
    assert driver.max_in_flight == 1
    assert all(b.samples == (Sample("v", 42),) for b in sink.batches)


def test_first_polls_of_slowly_polled_meters_come_within_half_a_minute_and_spread() -> None:
    """CJ/T 188 meters polled every 900 s: their first poll was drawn over the whole interval (up to
    15 minutes after every start, reload or `devices add`); now within FIRST_POLL_SPREAD_S, still
    spread. A device polled faster keeps its own interval as the bound."""
    bus = BusConfig(id="b1", protocol="scripted")
    devices = [device(f"m{i}", interval=900.0) for i in range(40)] + [device("fast", interval=2.0)]
    owner = BusOwner(bus, devices, ScriptedDriver(bus, devices), Collector([], [], []), rng=random.Random(7))
    owner._schedule_all(1000.0)
    due = {e.device_id: e.due - 1000.0 for e in owner._heap}
    slow = [due[f"m{i}"] for i in range(40)]
    assert max(slow) <= FIRST_POLL_SPREAD_S == 30.0
    assert max(slow) - min(slow) > FIRST_POLL_SPREAD_S / 2  # spread, not in lockstep
    assert 0 <= due["fast"] <= 2.0


async def test_silent_device_goes_offline_once_and_does_not_starve_others() -> None:
    owner, driver, sink = make(2)
    driver.silent.add("d1")
    await run_for(owner, 1.0)
    offline = [e for e in sink.events if e.kind == OFFLINE_KIND]
    assert [(e.device_id, e.state) for e in offline] == [("d1", EventState.RAISED)]
    assert offline[0].attrs["location"] == {"address_code": "310106013001"}
    assert sink.offline == ["d1"]
    assert owner.health["d1"].online is False
    # d0 keeps its cadence: the silent device costs at most one timeout between two of d0's polls
    # (its retry takes a turn of its own), then one timeout per backoff period (0.2..0.4 s).
    d0_polls = sum(1 for r in driver.reads if r[0] == "d0")
    assert d0_polls >= 12, d0_polls
    d1_polls = sum(1 for r in driver.reads if r[0] == "d1")
    assert d1_polls <= 2 * 2 + 5, d1_polls  # 2 polls x 2 attempts, then a few single probes


async def test_device_comes_back_online_with_one_cleared_event() -> None:
    owner, driver, sink = make(1)
    driver.silent.add("d0")
    task = asyncio.create_task(owner.run())
    await asyncio.sleep(0.5)
    assert owner.health["d0"].online is False
    driver.silent.clear()
    await asyncio.sleep(0.8)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    states = [e.state for e in sink.events if e.kind == OFFLINE_KIND]
    assert states == [EventState.RAISED, EventState.CLEARED]
    assert owner.health["d0"].online is True


async def test_a_read_that_hangs_is_ended_by_the_owners_guard_and_the_others_go_on() -> None:
    # guard = 2 x bus timeout + 1 s: 1.1 s here
    owner, driver, sink = make(2, retries=0, offline_after=1)
    driver.hanging.add("d0")
    task = asyncio.create_task(owner.run())
    for _ in range(400):  # up to 20 s
        if owner.health["d0"].online is False:
            break
        await asyncio.sleep(0.05)
    assert owner.health["d0"].online is False
    polls_after = len([r for r in driver.reads if r[0] == "d1"])
    await asyncio.sleep(0.3)
    hung = driver.in_flight  # the next probe of d0 may be hanging again, nothing else
    task.cancel()  # a cancel from outside still stops the owner, hanging read or not
    with pytest.raises(asyncio.CancelledError):
        await task
    assert owner.counters.timeouts >= 1
    assert [e.device_id for e in sink.events if e.kind == OFFLINE_KIND] == ["d0"]
    assert len([r for r in driver.reads if r[0] == "d1"]) > polls_after  # d1 polled on
    assert hung <= 1 and driver.in_flight == 0


def test_wake_times_are_rounded_up_to_a_shared_grid() -> None:
    from citynerve.gateway.bus.jobs import COALESCE_S, wake_time

    assert COALESCE_S == 0.2
    assert wake_time(100.05, 10.0) == pytest.approx(100.2)  # 0.2 s grid for a 10 s interval
    assert wake_time(100.05, 60.0) == pytest.approx(100.2)  # capped at 0.2 s
    assert wake_time(100.005, 1.0) == pytest.approx(100.02)  # 2 % of a 1 s interval
    assert wake_time(100.4, 10.0) >= 100.4  # on the grid already: not moved (never early)
    assert wake_time(5.0001, 0.0) == 5.0001  # no interval (a replan): no rounding
    rng = random.Random(3)
    for _ in range(10_000):
        due, interval = rng.uniform(0, 1e6), rng.choice([0.05, 1.0, 10.0, 60.0, 3600.0])
        wake = wake_time(due, interval)
        assert due <= wake <= due + min(0.2, interval * 0.02) + 1e-6


def test_owners_of_several_buses_wake_on_the_same_grid() -> None:
    """Every timer an owner arms to wait for a poll ends on the 20 ms grid of a 1 s interval, on
    every bus: the owners wake together (the loop is the real one, counting what it is asked)."""
    from citynerve.gateway.bus import jobs

    class RecordingLoop(asyncio.SelectorEventLoop):
        def __init__(self) -> None:
            super().__init__()
            self.waits: list[float] = []

        def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
            if callback is jobs._over:  # an owner's sleep until its next poll
                self.waits.append(when)
            return super().call_at(when, callback, *args, context=context)

    async def main() -> list[ScriptedDriver]:
        drivers = []
        tasks = []
        for b in range(3):
            bus = BusConfig(id=f"b{b}", protocol="test", timeout_s=0.05, retries=0)
            devices = [device(f"d{b}{i}", interval=1.0) for i in range(4)]
            driver = ScriptedDriver(bus, devices)
            owner = BusOwner(bus, devices, driver, Collector([], [], []), rng=random.Random(b))
            drivers.append(driver)
            tasks.append(asyncio.create_task(owner.run()))
        await asyncio.sleep(2.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return drivers

    loop = RecordingLoop()
    try:
        drivers = loop.run_until_complete(main())
    finally:
        loop.close()
    assert all(len(d.reads) >= 8 for d in drivers)  # 4 devices x 2 s at 1 s: the cadence holds
    assert len(loop.waits) >= 10
    for when in loop.waits:
        # computed as the grid point minus the few microseconds between two clock reads
        off = when - round(when / 0.02) * 0.02
        assert abs(off) < 0.002, (when, off)


async def test_exception_reply_marks_points_bad_but_device_stays_online() -> None:
    owner, driver, sink = make(1)
    driver.refusing.add("d0")
    await run_for(owner, 0.3)
    assert owner.health["d0"].online is True
    assert sink.batches and all(b.samples[0].quality is Quality.BAD for b in sink.batches)
    assert not sink.events


async def test_writes_and_reads_go_through_the_owner_between_polls() -> None:
    owner, driver, _ = make(2)
    task = asyncio.create_task(owner.run())
    await asyncio.sleep(0.05)
    await owner.write("d0", "w", 7)
    samples = await owner.read_now("d1", "v")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert driver.writes == [("d0", "w", 7)]
    assert samples == (Sample("v", 42),)
    assert driver.max_in_flight == 1


async def test_a_job_tries_the_open_at_once_whatever_the_channel_backoff() -> None:
    """The open is retried on its own backoff (here 10 s) while polls fall due on their schedule; a
    technician's job after the adapter is plugged back in opens the channel then, not at the retry."""
    owner, driver, _ = make(1, backoff_initial_s=40.0, backoff_max_s=300.0)
    driver.open_fails = 1
    task = asyncio.create_task(owner.run())
    await asyncio.sleep(0.05)
    assert owner.channel_open is False and driver.opens == 0
    await asyncio.wait_for(owner.write("d0", "w", 1), timeout=2.0)  # the adapter is back
    assert owner.channel_open is True and driver.writes == [("d0", "w", 1)]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_channel_that_cannot_open_is_retried_and_jobs_fail_clearly() -> None:
    owner, driver, _ = make(1, backoff_initial_s=0.2)
    driver.open_fails = 2
    task = asyncio.create_task(owner.run())
    await asyncio.sleep(0.01)
    with pytest.raises(BusNotRunningError) as info:
        await owner.write("d0", "w", 1)
    assert "ttyUSB9" in str(info.value)
    await asyncio.sleep(0.6)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert driver.opens == 1 and owner.channel_open is False  # closed on the way out
    assert any(r[0] == "d0" for r in driver.reads)


async def test_the_open_backoff_is_jittered_so_buses_do_not_retry_in_lockstep() -> None:
    """Twenty gateways after a power cut, their ports there but not opening yet: each failed open
    waits the doubling backoff (backoff_initial_s / 4 .. backoff_max_s) less up to half of it drawn
    at random, so their retries spread instead of hitting the line (and the log) in step; the
    configured maximum stays the maximum. Driven through the owner's open, no clock involved."""
    bus = BusConfig(id="b1", protocol="test", backoff_initial_s=40.0, backoff_max_s=300.0)
    delays: list[list[float]] = []
    for seed in range(20):
        driver = ScriptedDriver(bus, [device("d0")])
        driver.open_fails = 7
        owner = BusOwner(bus, [device("d0")], driver, Collector([], [], []), rng=random.Random(seed))
        waits = []
        for _ in range(7):
            assert await owner._open() is False
            waits.append(owner._channel_backoff)
        delays.append(waits)
    for attempt, base in enumerate([10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]):
        waits = [d[attempt] for d in delays]
        assert all(base / 2 <= w <= base for w in waits), (attempt, waits)
        assert max(waits) - min(waits) > base / 10, f"retry {attempt} in lockstep: {waits}"


def test_the_offline_backoff_never_exceeds_backoff_max_s() -> None:
    """An offline device's probe backoff doubles up to backoff_max_s, jittered +-20 %: the jitter is
    drawn before the cap (350.9 s was seen with a 300 s maximum)."""
    owner, _, _ = make(1, backoff_initial_s=40.0, backoff_max_s=300.0, offline_after=1)
    d0 = owner.devices["d0"]
    waits = []
    for _ in range(30):
        owner._failure(d0, 0, "no answer", 0.0, probe=True)
        waits.append(owner.health["d0"].backoff_s)
    assert owner.health["d0"].online is False
    assert max(waits) <= 300.0, max(waits)
    assert min(waits[5:]) >= 0.8 * 300.0  # at the maximum, less the jitter
