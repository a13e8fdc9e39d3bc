"""A bus owner's poll schedule: when each device's requests fall due, which runs next, how the
owner waits for it, and what the schedule does while the channel is down. Split from owner.py;
`BusOwner` inherits it.

A silent part of a bus (a power cut silencing half its detectors) must not starve the devices that
answer: requests wait in three queues (lanes) by the state of their device, and a transaction of a
failing or offline device (one that may cost a whole timeout) runs only once every poll of an
answering device that was due when the previous such transaction ended has run. An answering
device therefore waits at most one failing transaction besides the other answering devices' polls,
however many are silent; the failing and offline ones share what is left of the line, the failing
first (they are on their way to `device_offline`), the offline ones' probes after them. It was one
queue by due time: every failing device got 1 + retries timeouts at each poll until offline, and
60 silent detectors polled every second held the line ~120 s per round (docs/modbus.md, "A silent
part of a bus")."""

from __future__ import annotations

import heapq
import math
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
    """The poll schedule of a bus owner: three heaps of requests by due time. `_heap`: answering
    devices (and those not asked yet); `_failing`: devices whose last poll failed, and every retry;
    `_offline`: offline devices (probed with their first request on their backoff)."""

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
    _failing: list[_Entry]
    _offline: list[_Entry]
    _owed_before: float
    """Loop time the last transaction of a failing or offline device ended: the answering devices'
    polls due by then run before the next one."""

    def _plan(self, device: DeviceConfig) -> Sequence[PollRequest]:
        if device.id not in self._plans:
            assert isinstance(self.driver, PollDriver)
            self._plans[device.id] = tuple(self.driver.plan(device))  # the same tuple when shared
        return self._plans[device.id]

    def _schedule_all(self, now: float) -> None:
        for queue in self._queues():
            queue.clear()
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

    def _queues(self) -> tuple[list[_Entry], list[_Entry], list[_Entry]]:
        return self._heap, self._failing, self._offline

    def _lane(self, entry: _Entry) -> list[_Entry]:
        """The queue `entry` waits in, by its device's state now (a retry: always failing)."""
        if entry.index == _REPLAN:
            return self._heap
        health = self.health[entry.device_id]
        if health.online is False:
            return self._offline
        if entry.attempt or health.consecutive_failures:
            return self._failing
        return self._heap

    def _push(self, due: float, device_id: str, index: int, request: PollRequest, attempt: int = 0) -> None:
        self._order += 1
        entry = _Entry(due, self._order, device_id, index, request, attempt)
        heapq.heappush(self._lane(entry), entry)

    def _forget_polls(self, device_id: str) -> None:
        for queue in self._queues():
            queue[:] = [e for e in queue if e.device_id != device_id]
            heapq.heapify(queue)

    def _earliest(self) -> list[_Entry] | None:
        """The queue whose first request is due first (None: nothing scheduled)."""
        queues = [q for q in self._queues() if q]
        return min(queues, key=lambda q: q[0].due) if queues else None

    def _due_queue(self, now: float) -> list[_Entry] | None:
        """The queue whose first request runs now, None when nothing is due. An answering device's
        poll due before the last failing or offline transaction ended goes first; then the earlier
        due of an answering poll and a failing (else an offline) device's transaction."""
        answering = self._heap[0].due if self._heap else math.inf
        if answering <= min(now, self._owed_before):
            return self._heap
        other = next((q for q in (self._failing, self._offline) if q and q[0].due <= now), None)
        if other is not None and other[0].due < answering:
            return other
        return self._heap if answering <= now else None

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
        those: polls falling due meanwhile wait for the step, so a busy bus still ends the scan; and
        of the failing and offline devices' at most one per step, as between answering polls."""
        before = job.polls_before
        if before is None:
            return False
        if self._heap and self._heap[0].due <= min(before, now):
            return True
        if self._owed_before >= before:  # a failing transaction ran since the step was queued
            return False
        queue = self._due_queue(now)
        return queue is not None and queue[0].due <= before

    def _channel_down_wait(self, now: float) -> float:
        """Channel down: sleep until the next open attempt or the next poll due, whichever is first.
        Missed polls are counted on their own schedule, not at the open retries (whose backoff grows
        to backoff_max_s): a bus whose adapter was missing at start took minutes of doubling retries
        to reach offline_after and raised no device_offline while a silent meter did."""
        until = self._channel_retry_at
        if (queue := self._earliest()) is not None:
            until = min(until, queue[0].due)
        if self.adapter.watching:  # look at the port every ADAPTER_CHECK_S
            until = min(until, now + ADAPTER_CHECK_S)
        return max(0.0, until - now)

    def _count_missed_polls(self, now: float) -> None:
        """Channel down: polls that fall due count as failures, so devices go offline normally."""
        while (queue := self._earliest()) is not None and queue[0].due <= now:
            entry = heapq.heappop(queue)
            if entry.index == _REPLAN:
                self._push(now + self._channel_backoff, entry.device_id, _REPLAN, entry.request)
                continue
            device = self.devices[entry.device_id]
            if entry.index == 0 and not entry.attempt:  # a retry's poll was counted at its first try
                self._failure(device, 0, self.channel_error or "channel down", self.clock.wall(), probe=True)
            self._reschedule(entry, now)

    def _reschedule(self, entry: _Entry, now: float) -> None:
        """The request's next poll, `interval_s` after this one was due (an offline device's probe:
        its backoff); a retry's was due when it was queued."""
        health = self.health[entry.device_id]
        interval = entry.request.interval_s
        if health.online is False and entry.index == 0:
            interval = health.backoff_s
        due = entry.due + interval
        if due <= now:  # fell behind (slow bus or long outage): skip the missed slots, keep cadence
            due = now + interval
        self._push(due, entry.device_id, entry.index, entry.request)
