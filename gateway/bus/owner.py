"""Bus owners: one asyncio task per physical channel. Only the owner touches its channel.

Polls, technician diagnostics, platform commands and local actions all go through the owner, which
runs them one at a time (RS-485 is half duplex with one master; most Modbus TCP devices take one
request at a time). Scheduling, timeouts, retries, backoff and online/offline live here, the same for
every protocol; drivers only frame and parse.

Budget of silent devices (schedule.py): a transaction of a failing or offline device runs only after
the answering devices' polls due when the previous one ended, so an answering device waits at most
one of them (one timeout) however many are silent. Retries are for answering devices, each one a
turn of its own among the failing; a failing device is asked once per poll, an offline one probed
once per backoff period.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import tzinfo
from typing import Any, TypeVar

from citynerve.gateway.api import (
    SYSTEM_CLOCK,
    BusConfig,
    ChannelError,
    Clock,
    DeviceConfig,
    DeviceExceptionError,
    DeviceTimeoutError,
    DeviceUnreachableError,
    Driver,
    FrameError,
    GatewayError,
    ListenDriver,
    PermanentError,
    PollDriver,
    PollRequest,
    Quality,
    Sample,
    SampleBatch,
    SerialTimeout,
    TransientError,
    Value,
)
from citynerve.gateway.backoff import Backoff
from citynerve.gateway.bus import linetest, probe
from citynerve.gateway.bus.adapter import AdapterWatch
from citynerve.gateway.bus.channel import ChannelLoss
from citynerve.gateway.bus.events import DeviceFaultError
from citynerve.gateway.bus.facts import bus_verdict
from citynerve.gateway.bus.health import BusCounters, DeviceHealth
from citynerve.gateway.bus.jobs import (
    BusNotRunningError,
    BusSink,
    BusStoppedError,
    Wakeup,
    _Entry,
    _Job,
    run_job,
    wake_time,
)
from citynerve.gateway.bus.listening import run_listen
from citynerve.gateway.bus.schedule import PollSchedule
from citynerve.gateway.bus.screening import Screening
from citynerve.gateway.bus.states import _REPLAN
from citynerve.gateway.bus.verdict import LineQuality, kind_of
from citynerve.gateway.timecheck import SITE_ZONE

log = logging.getLogger("citynerve.bus")
T = TypeVar("T")


def _step(step: Callable[[], Awaitable[T]]) -> Callable[[Driver[Any, Any]], Awaitable[T]]:
    async def run(_: Driver[Any, Any]) -> T:
        return await step()

    return run


def _retried(err: GatewayError) -> bool:
    """Whether a poll asks again (within the bus's `retries`): transient errors, and exception
    replies the protocol calls transient (Modbus 5 acknowledge, 6 busy)."""
    return isinstance(err, TransientError) or (isinstance(err, DeviceExceptionError) and err.transient)


OFFLINE_KIND = "device_offline"
OPEN_JITTER = 0.5
"""A failed open waits its doubling backoff less up to this share of it, drawn at random: buses (and
gateways) that a power cut restarted together do not retry their opens in lockstep."""


class BusOwner(PollSchedule, ChannelLoss):
    """Owns one bus: opens its channel, polls or listens, and serializes every other use of it."""

    def __init__(
        self,
        bus: BusConfig,
        devices: Sequence[DeviceConfig],
        driver: Driver[Any, Any],
        sink: BusSink,
        *,
        rng: random.Random | None = None,
        offline: Collection[str] = (),
        faulted: Collection[str] = (),
        clock: Clock = SYSTEM_CLOCK,
        tz: tzinfo = SITE_ZONE,
    ) -> None:
        """`offline`, `faulted`: devices that were offline or faulted when the gateway last stopped
        (their alarm is still active): they start so, and their first good poll clears it. `tz`:
        the site's zone (`[gateway] tz`), in which the meters' clocks are read."""
        self.bus = bus
        self.clock = clock
        self.progress = clock.monotonic()  # last turn of the owner's loop (the service watchdog)
        self._heard: dict[str, float] = {}
        self._in_diag = False  # listening buses: monotonic time each device was last heard
        self._stopped = False  # the owner task ended: a job queued now would wait for ever
        self.devices = {d.id: d for d in devices if d.enabled}
        self.driver = driver
        self.sink = sink
        self.health = {d: DeviceHealth(d) for d in self.devices}
        for device_id in offline:
            if device_id in self.health:
                health = self.health[device_id]
                health.online = False
                health.offline_alarm = True  # cleared by its first answer (no offline counted yet)
                health.consecutive_failures = bus.offline_after
                health.backoff_s = bus.backoff_initial_s
        for device_id in faulted:
            if device_id in self.health:
                self.health[device_id].faulted = "faulted when the gateway last stopped"
        self.counters = BusCounters()
        self.quality = LineQuality()  # outcomes of every attempt (before retries), for the verdict
        self._screening = Screening(tz)  # plausibility, and the meters' own clocks for the time check
        self._guard = SerialTimeout()  # the owner's guard around each transaction (one loop timer)
        self.channel_open = False
        self.channel_error: str | None = None
        self._rng = rng or random.Random()
        self._jobs: deque[_Job] = deque()
        self._wakeup = Wakeup()
        self._heap: list[_Entry] = []  # the poll schedule's three lanes (schedule.py)
        self._failing: list[_Entry] = []
        self._offline: list[_Entry] = []
        self._owed_before = -math.inf
        self._order = 0
        self._plans: dict[str, Sequence[PollRequest]] = {}  # a driver may share one between devices
        self._channel_backoff = 0.0  # the wait before the next open attempt while the channel is down
        self._open_backoff = Backoff(bus.backoff_initial_s / 4, bus.backoff_max_s, OPEN_JITTER, rng=self._rng)
        self._channel_retry_at = 0.0  # loop time of the next open attempt while the channel is down
        ChannelLoss.__init__(self)
        self.adapter = AdapterWatch(bus)  # a serial port found missing: opened as soon as it is back
        self._restart = False

    # -- public API: everything else asks the owner ----------------------------------------------

    async def write(self, device_id: str, point: str, value: Value) -> None:
        """Write one point through this bus (platform commands, local actions, technicians)."""
        device = self._device(device_id)
        if not isinstance(self.driver, PollDriver):
            from citynerve.gateway.api import WriteRejectedError

            raise WriteRejectedError(device_id, point, f"bus {self.bus.id} is listen-only")
        driver = self.driver

        async def run(_: Driver[Any, Any]) -> None:
            await driver.write(device, point, value)

        await self._submit(run, f"write {device_id}.{point}")
        log.info("wrote %s.%s = %r on bus %s", device_id, point, value, self.bus.id)

    async def read_now(self, device_id: str, point: str | None = None) -> tuple[Sample, ...]:
        """Read a device now (the transactions holding `point`, or all) and return raw samples.

        The samples also flow into the pipeline like any poll.
        """
        device = self._device(device_id)
        driver = self.driver
        if not isinstance(driver, PollDriver):
            raise PermanentError(f"bus {self.bus.id} is listen-only: devices cannot be read on demand")
        requests = [r for r in self._plan(device) if point is None or point in r.points]
        if not requests:
            raise PermanentError(f"device {device_id} has no point {point!r}")

        async def run(_: Driver[Any, Any]) -> tuple[Sample, ...]:
            out: list[Sample] = []
            for request in requests:
                samples = self._plausible(device, await driver.read(device, request))  # as a poll's
                self.sink.submit(SampleBatch(device_id, self.clock.wall(), samples))
                out.extend(samples)
            return tuple(s for s in out if point is None or s.point == point)

        result: tuple[Sample, ...] = await self._submit(run, f"read {device_id}")
        return result

    async def diag(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run a driver's diagnostic action between polls (scan, read-address, raw read...)."""
        if isinstance(self.driver, ListenDriver):
            return await self.driver.diag(action, params)
        if probe.needs_other_driver(action, params):
            return await self._submit(self._elsewhere(action, params), f"diag {action}")
        if action == linetest.LINE_TEST:  # one job per transaction: polls go on between them
            return await linetest.line_test_with(
                self.driver, list(self.devices.values()), self.bus, params, self._line_transact
            )
        steps = self.driver.diag_steps(action, params)
        if steps is not None:  # a scan: one job per unit id, the polls due run between them
            results = [await self._submit(_step(step), f"diag {action}", step=True) for step in steps.steps]
            return steps.join(results)

        async def run(drv: Driver[Any, Any]) -> dict[str, Any]:
            return await drv.diag(action, params)

        result: dict[str, Any] = await self._submit(run, f"diag {action}")
        return result

    def _elsewhere(self, action: str, params: dict[str, Any]) -> Callable[[Driver[Any, Any]], Awaitable[Any]]:
        """A job that runs `action` on fresh drivers with other line settings (probe, scan at another
        baud rate): polling pauses while it runs; the configured settings are reopened after it."""
        devices = list(self.devices.values())
        kind = type(self.driver)

        async def run(_: Driver[Any, Any]) -> dict[str, Any]:
            await self._close()  # one master, one open port: the owner's own driver steps aside
            return await probe.run_elsewhere(lambda b: kind(b, devices), self.bus, devices, action, params)

        return run

    async def _line_transact(self, device: DeviceConfig, request: PollRequest) -> object:
        driver = self.driver
        assert isinstance(driver, PollDriver)

        async def run(_: Driver[Any, Any]) -> object:
            return await driver.read(device, request)

        return await self._submit(run, f"line test {device.id}", step=True)

    async def restart(self) -> None:
        """Close and reopen the channel (platform command 'restart bus')."""
        self._restart = True
        self._wakeup.set()

    def snapshot(self) -> dict[str, Any]:
        stats = getattr(self.driver, "stats", None)  # radio drivers: per-node link statistics
        verdict = bus_verdict(
            self.bus,
            self.devices,
            self.health,
            self.quality,
            channel_error=None if self.channel_open else self.channel_error,
            link_stats=stats() if isinstance(self.driver, ListenDriver) and callable(stats) else None,
        )
        return {
            "id": self.bus.id,
            "protocol": self.bus.protocol,
            "channel": "open" if self.channel_open else "down",
            "channel_error": self.channel_error,
            # The serial port's device node is missing (adapter unplugged): looked for every second.
            "adapter_missing": self.adapter.port if self.adapter.missing else None,
            "counters": self.counters.to_dict(),
            "verdict": verdict.to_dict(),
            "devices": [{**h.to_dict(), **verdict.devices[d].to_dict()} for d, h in self.health.items()],
            # What a listening bus refused (garbage, over-rate lines): counted, never stored.
            "input": self.driver.input_stats() if isinstance(self.driver, ListenDriver) else {},
        }

    # -- the owner task --------------------------------------------------------------------------

    async def run(self) -> None:
        """The owner task: runs until cancelled; closes the channel on the way out."""
        try:
            if isinstance(self.driver, ListenDriver):
                await run_listen(self, self.driver)
            else:
                await self._run_poll()
        finally:
            self._stopped = True
            self._fail_jobs(BusStoppedError(self.bus.id))
            await self._close()

    def _device(self, device_id: str) -> DeviceConfig:
        try:
            return self.devices[device_id]
        except KeyError:
            raise PermanentError(f"no device {device_id!r} on bus {self.bus.id}") from None

    async def _submit(
        self, run: Callable[[Driver[Any, Any]], Awaitable[T]], name: str, *, step: bool = False
    ) -> T:
        """Queue a job and wait for its result. `step`: one of many of a diag (a scan's unit): the
        polls due by the time it is queued run before it (a job otherwise goes before polls).
        Raises BusStoppedError at once when the owner has stopped (a reload restarted the bus while a
        scan held this owner: its next step waited for ever)."""
        if self._stopped:
            raise BusStoppedError(self.bus.id)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.append(_Job(run, future, name, loop.time() if step else None))
        self._wakeup.set()
        return await future

    def _fail_jobs(self, err: Exception) -> None:
        while self._jobs:
            job = self._jobs.popleft()
            if not job.future.done():
                job.future.set_exception(err)

    async def _close(self) -> None:
        self.channel_open = False
        try:
            await self.driver.close()
        except Exception:  # closing a broken channel must not mask why it broke
            log.debug("bus %s: error while closing", self.bus.id, exc_info=True)

    async def _open(self) -> bool:
        try:
            await self.driver.open()
        except GatewayError as err:  # an untyped error is a driver bug: the supervisor's bus_fault
            self.counters.channel_errors += 1
            reason = err.reason if isinstance(err, ChannelError) else str(err)
            self.adapter.failed(err)
            if self.channel_error != self.adapter.reason(reason):
                # The OS's own text (errno and all) stays in the journal; the status shows `reason`.
                cause = f" ({err.__cause__})" if err.__cause__ is not None else ""
                log.error("bus %s: cannot open channel: %s%s", self.bus.id, reason, cause)
            self.channel_error = self.adapter.reason(reason)
            await self._close()
            self._channel_backoff = self._open_backoff.next_delay()
            return False
        self._channel_opened()
        self.channel_open = True
        self.channel_error = None
        self._channel_backoff = 0.0
        self.adapter.opened()
        return True

    # -- polling ---------------------------------------------------------------------------------

    async def _run_poll(self) -> None:
        loop = asyncio.get_running_loop()
        self._schedule_all(loop.time())
        while True:
            self.progress = self.clock.monotonic()
            if self._restart:
                self._restart = False
                log.info("bus %s: restarting channel", self.bus.id)
                await self._close()
                self._channel_retry_at = 0.0
            if not self.channel_open:
                # A job (a technician's diag, a command) or a missing port that is back tries the
                # open at once: the adapter was plugged back in, and the backoff can be minutes by now.
                due = self.adapter.due() or self._jobs or loop.time() >= self._channel_retry_at
                if due and not await self._open():
                    self._channel_retry_at = loop.time() + self._channel_backoff
                if not self.channel_open:
                    self._fail_jobs(BusNotRunningError(self.bus.id, self.channel_error or "channel down"))
                    self._count_missed_polls(loop.time())
                    await self._wait(self._channel_down_wait(loop.time()))
                    continue
            if self._jobs and not self._polls_owed(self._jobs[0], loop.time()):
                await self._run_job(self._jobs.popleft())
                continue
            now = loop.time()
            queue = self._due_queue(now)
            if queue is None:
                first = self._earliest()
                if first is None:
                    await self._wait(3600)
                else:
                    await self._wait(wake_time(first[0].due, first[0].request.interval_s) - now)
                continue
            entry = heapq.heappop(queue)
            if entry.index == _REPLAN:
                self._schedule_device(self.devices[entry.device_id], loop.time())
                continue
            if (lane := self._lane(entry)) is not queue:  # its device answered or failed since queued
                heapq.heappush(lane, entry)  # same due, same place among its device's requests
                continue
            try:
                await self._poll(entry, loop.time())
            except Exception as err:  # a bug around one device faults that device, not the bus
                self._fault(self.devices[entry.device_id], f"poll raised {err!r}", loop.time())
            if queue is not self._heap:  # the answering devices' polls due by now go first
                self._owed_before = loop.time()

    def progress_at(self) -> float:
        """Monotonic time of the owner's last progress, for the service watchdog. A technician's
        diag action (a bus scan can take minutes) counts as progress while it runs."""
        return self.clock.monotonic() if self._in_diag else self.progress

    async def _run_job(self, job: _Job) -> None:
        self._in_diag = job.name.startswith("diag ")
        try:
            error = await run_job(job, self.driver, bus_id=self.bus.id, name=f"bus[{self.bus.id}].{job.name}")
        finally:
            self._in_diag = False
        if isinstance(error, ChannelError):  # any other failure belongs to the asker, not the bus
            self._channel_broken(error)

    async def _poll(self, entry: _Entry, now: float) -> None:
        device = self.devices[entry.device_id]
        health = self.health[device.id]
        if health.online is False and entry.index != 0:
            # Offline devices are probed with their first transaction only.
            self._reschedule(entry, now)
            return
        error = await self._transact(device, entry.request)
        self.quality.record(device.id, None if error is None else kind_of(error))
        # Retries are for a device that answers (a lost frame costs it no reading); one that failed
        # its last poll, or is offline, is asked once per poll. A retry waits its turn among the
        # failing devices' transactions: the answering devices' polls due meanwhile go first.
        retries = 0 if health.online is False or health.consecutive_failures else self.bus.retries
        retry = error is not None and _retried(error) and not isinstance(error, ChannelError)
        if retry and entry.attempt < retries:
            now = asyncio.get_running_loop().time()
            self._push(now, device.id, entry.index, entry.request, entry.attempt + 1)
            return
        ts = self.clock.wall()
        if isinstance(error, DeviceFaultError):
            self._fault(device, error.reason, asyncio.get_running_loop().time())
            return
        if error is None:
            self._success(device, ts)
            self._answered(device, entry.index)
        elif isinstance(error, DeviceExceptionError):
            # The device answered: it is alive, but these points are unusable. (A gateway's word
            # that the device behind it is silent is a DeviceUnreachableError: a failure below.)
            self._success(device, ts)
            self._note_error(device, entry.index, error, ts)
            bad = tuple(Sample(p, None, Quality.BAD) for p in entry.request.points)
            self.sink.submit(SampleBatch(device.id, ts, bad))
        else:
            self._failure(device, entry.index, str(error), ts, probe=entry.index == 0)
            if health.online:  # these points are unknown now (once offline, mark_offline's STALE)
                bad = tuple(Sample(p, None, Quality.BAD) for p in entry.request.points)
                self.sink.submit(SampleBatch(device.id, ts, bad))
        self._reschedule(entry, asyncio.get_running_loop().time())

    async def _transact(self, device: DeviceConfig, request: PollRequest) -> GatewayError | None:
        assert isinstance(self.driver, PollDriver)
        health = self.health[device.id]
        started = self.clock.monotonic()
        self.counters.transactions += 1
        health.transactions += 1
        # The driver enforces its timeout (the bus's, or a device's own where the protocol has one);
        # this guard only catches a driver that hangs anyway.
        timeout_s = getattr(device, "timeout_s", None) or self.bus.timeout_s
        guard = max(timeout_s, self.bus.timeout_s) * 2 + 1.0
        try:
            async with self._guard.after(guard):
                samples = await self.driver.read(device, request)
        except TimeoutError:
            err: GatewayError = DeviceTimeoutError(device.id, request.points, self.bus.timeout_s)
            self.counters.timeouts += 1
            self.counters.count_error("timeout")
            return err
        except DeviceTimeoutError as err:
            self.counters.timeouts += 1
            self.counters.count_error("timeout")
            if isinstance(err, DeviceUnreachableError):  # a gateway answered for the device
                self._channel_answers(device.id)
            return err
        except FrameError as err:
            self.counters.frame_errors += 1
            self.counters.count_error("frame")
            self._channel_answers(device.id)
            return err
        except DeviceExceptionError as err:
            self.counters.exceptions += 1
            self.counters.count_error("exception")
            self._channel_answers(device.id)
            return err
        except ChannelError as err:
            self.counters.count_error("channel")
            self._channel_broken(err, device.id)
            return err
        except GatewayError as err:
            self.counters.count_error(type(err).__name__)
            return err
        except Exception as err:  # a driver bug (decode...) faults this device only
            self.counters.count_error("driver_bug")
            if health.faulted is None:
                log.exception("bus %s: driver failed reading %s", self.bus.id, device.id)
            return DeviceFaultError(device.id, f"driver raised {err!r}")
        finally:
            self.counters.latency_sum_s += self.clock.monotonic() - started
            self.counters.latency_count += 1
        self._channel_answers(device.id)
        samples = self._plausible(device, samples)
        try:
            self.sink.submit(SampleBatch(device.id, self.clock.wall(), samples))
        except Exception as err:
            log.exception("bus %s: pipeline failed on a batch from %s", self.bus.id, device.id)
            return DeviceFaultError(device.id, f"pipeline raised {err!r}")
        return None

    def _plausible(self, device: DeviceConfig, samples: tuple[Sample, ...]) -> tuple[Sample, ...]:
        """Readings outside their physical bounds become SUSPECT and count for the verdict."""
        samples, suspect, skew = self._screening.screen(device.id, device.points, samples)
        for point in suspect:
            self.quality.implausible(device.id, point)
        if skew is not None:
            self.quality.meter_skew[device.id] = skew
        return samples
