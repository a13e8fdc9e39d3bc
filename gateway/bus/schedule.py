"""A bus owner's poll schedule: when each device's requests fall due, how the owner waits for the
next one, and what the schedule does while the channel is down. Split from owner.py; `BusOwner`
inherits it."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from typing import Any

from citynerve.gateway.api import DeviceConfig, Driver, PollDriver, PollRequest
from citynerve.gateway.bus.adapter import ADAPTER_CHECK_S, AdapterWatch
from citynerve.gateway.bus.jobs import Wakeup, _Entry, _Job
from citynerve.gateway.bus.states import _REPLAN, DeviceStates

PROGRESS_SLICE_S = 5.0  # an idle owner still shows progress this often (the service watchdog)
FIRST_POLL_SPREAD_S = 30.0
"""A device's first poll after start, reload or restart comes within min(shortest interval, this):
start times are still spread (devices do not poll in lockstep) but a meter polled every 900 s is
read within half a minute, not up to 15 minutes later (commissioning waits for first readings)."""


class PollSchedule(DeviceStates):
    """The poll schedule of a bus owner (a heap of requests by due time)."""

    devices: dict[str, DeviceConfig]
    driver: Driver[Any, Any]
    adapter: AdapterWatch
    channel_error: str | None
    progress: float
    _order: int
    _jobs: deque[_Job]
    _wakeup: Wakeup
    _restart: bool
    _channel_backoff: float
    _channel_retry_at: float

    def _plan(self, device: DeviceConfig) -> Sequence[PollRequest]:
        if device.id not in self._plans:
            assert isinstance(self.driver, PollDriver)
            self._plans[device.id] = tuple(self.driver.plan(device))  # the same tuple when shared
        return self._plans[device.id]

    def _schedule_all(self, now: float) -> None:
        self._heap.clear()
        for device in self.devices.values():
            self._schedule_device(device, now)

    def _schedule_device(self, device: DeviceConfig, now: float) -> None:
        try:
            plan = self._plan(device)
        except Exception as err:  # one device's plan bug never stops the others
            self._fault(device, f"plan raised {err!r}", now)
            return
        if not plan:
            return
        # Stagger start times so devices do not poll in lockstep, within FIRST_POLL_SPREAD_S.
        jitter = self._rng.uniform(0, min(FIRST_POLL_SPREAD_S, *(r.interval_s for r in plan)))
        for index, request in enumerate(plan):
            self._push(now + jitter, device.id, index, request)

    def _push(self, due: float, device_id: str, index: int, request: PollRequest) -> None:
        self._order += 1
        heapq.heappush(self._heap, _Entry(due, self._order, device_id, index, request))

    async def _wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking early when a job or a restart arrives."""
        if seconds <= 0 or self._jobs or self._restart:
            return
        # In slices, so that an idle owner still shows progress to the service watchdog.
        end = self.clock.monotonic() + seconds
        while (left := end - self.clock.monotonic()) > 0:
            self.progress = self.clock.monotonic()
            if await self._wakeup.sleep(min(left, PROGRESS_SLICE_S)):
                return

    def _polls_owed(self, job: _Job, now: float) -> bool:
        """Whether a poll due before the step `job` was queued is still to run: it goes first. Only
        those: polls falling due meanwhile wait for the step, so a busy bus still ends the scan."""
        if job.polls_before is None or not self._heap:
            return False
        return self._heap[0].due <= min(job.polls_before, now)

    def _channel_down_wait(self, now: float) -> float:
        """Channel down: sleep until the next open attempt or the next poll due, whichever is first.
        Missed polls are counted on their own schedule, not at the open retries (whose backoff grows
        to backoff_max_s): a bus whose adapter was missing at start took minutes of doubling retries
        to reach offline_after and raised no device_offline while a silent meter did."""
        until = self._channel_retry_at
        if self._heap:
            until = min(until, self._heap[0].due)
        if self.adapter.watching:  # look at the port every ADAPTER_CHECK_S
            until = min(until, now + ADAPTER_CHECK_S)
        return max(0.0, until - now)

    def _count_missed_polls(self, now: float) -> None:
        """Channel down: polls that fall due count as failures, so devices go offline normally."""
        while self._heap and self._heap[0].due <= now:
            entry = heapq.heappop(self._heap)
            if entry.index == _REPLAN:
                self._push(now + self._channel_backoff, entry.device_id, _REPLAN, entry.request)
                continue
            device = self.devices[entry.device_id]
            if entry.index == 0:
                self._failure(device, 0, self.channel_error or "channel down", self.clock.wall(), probe=True)
            self._reschedule(entry, now)

    def _reschedule(self, entry: _Entry, now: float) -> None:
        health = self.health[entry.device_id]
        interval = entry.request.interval_s
        if health.online is False and entry.index == 0:
            interval = health.backoff_s
        due = entry.due + interval
        if due <= now:  # fell behind (slow bus or long outage): skip the missed slots, keep cadence
            due = now + interval
        self._push(due, entry.device_id, entry.index, entry.request)
