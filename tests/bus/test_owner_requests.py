"""A bus owner with devices of several requests, in front of the real Pipeline: a request that fails
while its device answers others, a device dead on every request, read-now screening, a huge int.

The driver subclasses the real PollDriver interface and answers from a script; nothing waits on
luck: each test waits for a condition (a number of reads, a state) with a generous timeout.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence

import pytest

from citynerve.gateway.api import (
    BusConfig,
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
    Reading,
    Sample,
    Value,
)
from citynerve.gateway.bus import OFFLINE_KIND, BusOwner
from citynerve.gateway.pipeline import NoRules, Pipeline
from citynerve.gateway.pipeline.derived import LAMP_DARK

LOC = Location(address_code="310106013001")
Answer = Callable[[DeviceConfig, PollRequest], tuple[Sample, ...]]


class Script(PollDriver[BusConfig, DeviceConfig]):
    """One request per point, in the points' order (`grouped`: one for all); `answer` replies or
    raises (a timeout at once: the owner's budget is not what these tests look at)."""

    def __init__(
        self, bus: BusConfig, devices: Sequence[DeviceConfig], answer: Answer, grouped: bool = False
    ) -> None:
        super().__init__(bus, devices)
        self.answer = answer
        self.grouped = grouped
        self.reads: list[tuple[str, ...]] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def plan(self, device: DeviceConfig) -> Sequence[PollRequest]:
        interval = device.poll_interval_s or 60
        if self.grouped:
            return [PollRequest(tuple(device.points), interval)]
        return [PollRequest((p,), interval) for p in device.points]

    async def read(self, device: DeviceConfig, request: PollRequest) -> tuple[Sample, ...]:
        self.reads.append(request.points)
        await asyncio.sleep(0.001)
        return self.answer(device, request)

    async def write(self, device: DeviceConfig, point: str, value: Value) -> None:
        pass


class Outbox(NoRules):
    """The pipeline's sink and rules hook: what is stored, what the rules see."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.events: list[Event] = []
        self.seen: list[Reading] = []

    def put_readings(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)

    def put_event(self, event: Event) -> None:
        self.events.append(event)

    def evaluate(self, readings: Sequence[Reading]) -> Sequence[Event]:
        self.seen.extend(readings)
        return ()


def timeout(device: DeviceConfig, request: PollRequest) -> DeviceTimeoutError:
    return DeviceTimeoutError(device.id, request.points, 0.05)


def setup(
    points: dict[str, PointConfig], answer: Answer, interval: float = 0.05, grouped: bool = False
) -> tuple[BusOwner, Script, Pipeline, Outbox]:
    bus = BusConfig(
        id="b1", protocol="test", timeout_s=0.05, retries=0, offline_after=3,
        backoff_initial_s=0.2, backoff_max_s=0.4,
    )  # fmt: skip
    dev = DeviceConfig(
        id="d1", bus="b1", profile="p", address=1, location=LOC, poll_interval_s=interval, points=points
    )
    driver = Script(bus, [dev], answer, grouped)
    out = Outbox()
    pipe = Pipeline({dev.id: dev}, out, out)
    return BusOwner(bus, [dev], driver, pipe, rng=random.Random(1)), driver, pipe, out


async def run_until(owner: BusOwner, done: Callable[[], bool], timeout_s: float = 30.0) -> None:
    task = asyncio.create_task(owner.run())
    try:
        for _ in range(int(timeout_s / 0.01)):
            if done():
                break
            await asyncio.sleep(0.01)
        assert done(), "the condition was not met in time"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def offline_events(out: Outbox) -> list[EventState]:
    return [e.state for e in out.events if e.kind == OFFLINE_KIND]


async def test_a_request_that_times_out_marks_its_points_bad_and_lamp_dark_unknown() -> None:
    """The coil request of a lamp controller times out from its second poll on, the current request
    answers: the device stays online (it answers), lamp_on goes BAD, and lamp_dark is unknown, not
    derived for ever from the relay read at the start (the lamp was switched off since: no current,
    and a relay frozen at `on` made it 'dark', the street-lamp pack's false lamp_no_current)."""
    coil_reads = 0

    def answer(device: DeviceConfig, request: PollRequest) -> tuple[Sample, ...]:
        nonlocal coil_reads
        if request.points == ("lamp_on",):
            coil_reads += 1
            if coil_reads > 1:
                raise timeout(device, request)
            return (Sample("lamp_on", True),)
        return (Sample("current", 2.5 if coil_reads <= 1 else 0.0),)  # lit, then switched off

    pts = {"lamp_on": PointConfig(name="lamp_on"), "current": PointConfig(name="current", unit="A")}
    owner, driver, pipe, out = setup(pts, answer)
    await run_until(owner, lambda: driver.reads.count(("current",)) >= 12)
    dark = [(r.value, r.quality) for r in out.seen if r.point == LAMP_DARK]
    assert dark[0] == (False, Quality.GOOD)  # on and lit
    assert (True, Quality.GOOD) not in dark, dark
    assert dark[-1] == (None, Quality.BAD)
    assert pipe.latest("d1")["lamp_on"].quality is Quality.BAD
    assert [(r.value, r.quality) for r in out.readings if r.point == "lamp_on"][:2] == [
        (True, Quality.GOOD),
        (None, Quality.BAD),
    ]
    assert owner.health["d1"].online is True and not offline_events(out)


async def test_a_device_that_drops_its_other_requests_stays_online_without_flapping() -> None:
    """The device answers its first request and silently drops the three others: it used to go
    offline after three of them, answer the probe (the first request), come back, and so on every
    backoff (99 events in 5 s). It is online; the dropped requests' points are BAD and count as
    errors."""

    def answer(device: DeviceConfig, request: PollRequest) -> tuple[Sample, ...]:
        if request.points == ("p0",):
            return (Sample("p0", 1),)
        raise timeout(device, request)

    owner, driver, pipe, out = setup({f"p{i}": PointConfig(name=f"p{i}") for i in range(4)}, answer)
    await run_until(owner, lambda: driver.reads.count(("p0",)) >= 15)
    assert offline_events(out) == []
    assert owner.health["d1"].online is True
    assert owner.health["d1"].errors >= 3 * 14
    latest = pipe.latest("d1")
    assert latest["p0"].quality is Quality.GOOD and latest["p0"].value == 1
    assert all(latest[p].quality is Quality.BAD and latest[p].value is None for p in ("p1", "p2", "p3"))
    assert not any(r.quality is Quality.STALE for r in out.readings)


async def test_a_dead_device_of_several_requests_goes_offline_after_offline_after_and_back_on_the_probe() -> (
    None
):
    """Every request fails from the fourth round on: offline after `offline_after` (3) failed
    transactions, the first of them the probe, as with one request; probed alone while offline;
    back at the first answer of the probe, with one cleared event."""
    log: list[tuple[str, bool | None]] = []  # each read: its point, the device online before it

    def answer(device: DeviceConfig, request: PollRequest) -> tuple[Sample, ...]:
        log.append((request.points[0], owner.health["d1"].online))
        if 9 < len(log) <= 15:  # three rounds answered; then six failures: three polls, three probes
            raise timeout(device, request)
        return (Sample(request.points[0], 7),)

    owner, _, pipe, out = setup({f"p{i}": PointConfig(name=f"p{i}") for i in range(3)}, answer)
    await run_until(owner, lambda: len(log) >= 21 and pipe.latest("d1")["p2"].quality is Quality.GOOD)
    assert log[9:16] == [
        ("p0", True), ("p1", True), ("p2", True),  # the third failure takes it offline
        ("p0", False), ("p0", False), ("p0", False),  # probes, the first request only
        ("p0", False),  # answered: online again
    ]  # fmt: skip
    assert log[16:18] == [("p1", True), ("p2", True)]
    assert offline_events(out) == [EventState.RAISED, EventState.CLEARED]
    stale = [r.point for r in out.readings if r.quality is Quality.STALE]
    assert stale == ["p0", "p1", "p2"]


def bus_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "citynerve.bus"]


async def test_two_refused_requests_log_once_each_and_a_change_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A meter configured with a profile of more points than it has (a single-phase DL/T 645 meter
    with the three-phase profile) refuses two requests at every poll: their texts name their points,
    alternated in the one `last_error` and each logged at every poll (14,399 lines/h at 1 s polls,
    into journald on the SD card). Each logs once; a changed error of a request logs, and so does
    its error after it answered once. The counters and `last_error` still see every error."""
    rounds = 0
    code_p1 = 2

    def answer(device: DeviceConfig, request: PollRequest) -> tuple[Sample, ...]:
        nonlocal rounds
        point = request.points[0]
        if point == "p0":
            rounds += 1
            return (Sample("p0", 1),)
        if point == "p1" and 20 < rounds <= 25:
            return (Sample("p1", 2),)  # answers for a while
        code = code_p1 if point == "p1" else 2
        raise DeviceExceptionError(device.id, code, "no such data", request.points)

    caplog.set_level(logging.INFO, logger="citynerve.bus")
    owner, _, pipe, _ = setup({f"p{i}": PointConfig(name=f"p{i}") for i in range(3)}, answer)
    await run_until(owner, lambda: rounds >= 10)
    assert bus_lines(caplog) == [
        "bus b1: device d1: error 0x02 (no such data) for p1",
        "bus b1: device d1: error 0x02 (no such data) for p2",
    ]
    code_p1 = 4  # the same request, another error: news
    await run_until(owner, lambda: rounds >= 35)
    assert bus_lines(caplog)[2:] == [
        "bus b1: device d1: error 0x04 (no such data) for p1",
        "bus b1: device d1: error 0x04 (no such data) for p1",  # again after it answered (21..25)
    ]
    health = owner.health["d1"]
    assert health.errors >= 2 * 35 - 5 - 4  # every refusal counted (rounds may stop mid-round)
    assert health.last_error is not None and health.last_error.startswith("device d1: error 0x0")
    assert health.online is True and pipe.latest("d1")["p2"].quality is Quality.BAD
    assert set(health.logged_errors) <= {0, 1, 2}  # one per request of the plan at most


async def test_a_request_that_times_out_at_every_poll_logs_not_answering_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The device answers its first request and never its second: 'not answering' was logged at
    every poll (the first request's answer reset the failure count). Once; when the whole device
    dies, at most one more 'not answering', one line when it goes offline and one when it is back."""
    rounds = 0

    def answer(device: DeviceConfig, request: PollRequest) -> tuple[Sample, ...]:
        nonlocal rounds
        if request.points == ("p0",):
            rounds += 1
            if 20 < rounds <= 24:  # the whole device dies for a while (p0 is its probe)
                raise timeout(device, request)
            return (Sample("p0", 1),)
        raise timeout(device, request)

    caplog.set_level(logging.INFO, logger="citynerve.bus")
    owner, _, _, out = setup({"p0": PointConfig(name="p0"), "p1": PointConfig(name="p1")}, answer)
    await run_until(owner, lambda: rounds >= 20)
    assert bus_lines(caplog) == [
        "device d1 on bus b1 not answering: device d1: no answer within 0.05 s reading p1",
    ]
    await run_until(owner, lambda: rounds >= 30 and owner.health["d1"].online is True)
    later = [line.split(":")[0] for line in bus_lines(caplog)[1:]]
    assert later[-2:] == [
        "device d1 on bus b1 is offline after 3 failed polls",
        "device d1 on bus b1 is back online",
    ]
    assert later[:-2] in ([], ["device d1 on bus b1 not answering"]), later  # p0 logs if p1 did not fail last
    assert offline_events(out) == [EventState.RAISED, EventState.CLEARED]
    assert owner.health["d1"].errors >= 20


async def test_read_now_screens_plausibility_like_a_poll() -> None:
    """A platform 'read now' of a swapped-word voltage (8.08e37 V) is SUSPECT, as the same value
    polled is: it used to reach the rules and the outbox GOOD."""
    pts = {"voltage": PointConfig(name="voltage", unit="V")}
    owner, _, _, out = setup(pts, lambda d, r: (Sample("voltage", 8.08e37),), interval=3600.0)
    task = asyncio.create_task(owner.run())
    try:
        async with asyncio.timeout(30):
            samples = await owner.read_now("d1", "voltage")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert samples == (Sample("voltage", 8.08e37, Quality.SUSPECT),)
    assert [(r.value, r.quality) for r in out.seen if r.point == "voltage"][-1] == (8.08e37, Quality.SUSPECT)
    assert owner.quality.implausible_points("d1") == ["voltage"]


async def test_an_int_beyond_floats_in_a_screened_point_is_bad_and_faults_nothing() -> None:
    """Plausibility screening took float(10**400) and raised OverflowError: the device was faulted
    and every point of its batch dropped. The value is the pipeline's BAD; the others are stored."""

    def answer(device: DeviceConfig, request: PollRequest) -> tuple[Sample, ...]:
        return (Sample("voltage", 10**400), Sample("temp", 21.5))

    pts = {"voltage": PointConfig(name="voltage", unit="V"), "temp": PointConfig(name="temp", unit="degC")}
    owner, driver, pipe, out = setup(pts, answer, grouped=True)
    await run_until(owner, lambda: len(driver.reads) >= 3)
    assert owner.health["d1"].faulted is None and not out.events
    latest = pipe.latest("d1")
    assert (latest["voltage"].value, latest["voltage"].quality) == (None, Quality.BAD)
    assert (latest["temp"].value, latest["temp"].quality) == (21.5, Quality.GOOD)
