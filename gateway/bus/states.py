"""How a bus owner moves its devices between online, offline and faulted, and what it tells the
pipeline when it does (events, offline marks). Split from owner.py; `BusOwner` inherits it."""

from __future__ import annotations

import heapq
import logging
import random
from collections.abc import Sequence

from citynerve.gateway.api import BusConfig, Clock, DeviceConfig, EventState, GatewayError, PollRequest
from citynerve.gateway.bus.events import FAULT, OFFLINE, device_event
from citynerve.gateway.bus.health import DeviceHealth
from citynerve.gateway.bus.jobs import BusSink, _Entry

log = logging.getLogger("citynerve.bus")

_REPLAN = -1  # heap entry index: plan the device again (after a fault)


class DeviceStates:
    """The device state transitions of a bus owner (online, offline, faulted)."""

    bus: BusConfig
    clock: Clock
    sink: BusSink
    health: dict[str, DeviceHealth]
    _rng: random.Random
    _heap: list[_Entry]
    _plans: dict[str, Sequence[PollRequest]]

    def _push(self, due: float, device_id: str, index: int, request: PollRequest) -> None:
        raise NotImplementedError

    def _success(self, device: DeviceConfig, ts: float) -> None:
        health = self.health[device.id]
        was = health.online
        health.online = True
        health.consecutive_failures = 0
        health.probe_failed = False
        health.last_success = ts
        health.last_seen = ts
        health.backoff_s = 0.0
        if health.faulted is not None:
            log.warning("device %s on bus %s recovered from its fault", device.id, self.bus.id)
            health.faulted = None
            health.fault_backoff_s = 0.0
            self.sink.event(device_event(device, FAULT, EventState.CLEARED, ts, "device works again"))
        if was is False:
            log.warning("device %s on bus %s is back online", device.id, self.bus.id)
            self.sink.event(device_event(device, OFFLINE, EventState.CLEARED, ts, "device answers again"))

    def _answered(self, device: DeviceConfig, index: int) -> None:
        """Request `index` of the device's plan answered: its next error is news again."""
        self.health[device.id].logged_errors.pop(index, None)

    @staticmethod
    def _news(health: DeviceHealth, index: int, text: str) -> bool:
        """Whether `text` is not what request `index` last logged since it last answered (and
        remember it as logged). Per request: a device's requests refused with texts naming their
        points alternated in one `last_error` and each logged at every poll, for ever."""
        if health.logged_errors.get(index) == text:
            return False
        health.logged_errors[index] = text
        return True

    def _note_error(self, device: DeviceConfig, index: int, err: GatewayError, ts: float) -> None:
        """Request `index` answered with an error (an exception reply): counted and shown every
        time (errors, last_error), logged when it is news for that request."""
        health = self.health[device.id]
        health.errors += 1
        text = str(err)
        if self._news(health, index, text):
            log.warning("bus %s: %s", self.bus.id, text)
        health.last_error = text
        health.last_error_ts = ts

    def _failure(self, device: DeviceConfig, index: int, reason: str, ts: float, *, probe: bool) -> None:
        """A failed transaction of request `index` (`probe`: the device's first request, the one an
        offline device is probed with). The device goes offline after `offline_after` failures in a
        row with the probe among them: a device that answers its probe would come back at once (it
        flapped offline and online every backoff while it dropped only its other requests); those
        failures count in its errors and their points go BAD (`_poll`).

        "Not answering" is logged when the device goes from answering to not (its previous
        transaction answered) with a reason that is news for this request: a request that fails
        alike at every poll while the device answers its others logs once, not at every poll."""
        health = self.health[device.id]
        health.errors += 1
        health.consecutive_failures += 1
        health.probe_failed = health.probe_failed or probe
        was_answering = health.consecutive_failures == 1 and health.online is not False
        if was_answering and self._news(health, index, reason):
            log.warning("device %s on bus %s not answering: %s", device.id, self.bus.id, reason)
        health.last_error = reason
        health.last_error_ts = ts
        if health.online is False:
            health.backoff_s = self._jittered(min(self.bus.backoff_max_s, health.backoff_s * 2))
        elif health.consecutive_failures >= self.bus.offline_after and health.probe_failed:
            health.online = False
            health.backoff_s = self._jittered(self.bus.backoff_initial_s)
            log.error(
                "device %s on bus %s is offline after %d failed polls: %s",
                device.id,
                self.bus.id,
                health.consecutive_failures,
                reason,
            )
            self.sink.mark_offline(device.id, ts)
            self.sink.event(device_event(device, OFFLINE, EventState.RAISED, ts, reason))

    def _fault(self, device: DeviceConfig, reason: str, now: float) -> None:
        """Fault one device: drop its plan and queued polls, raise device_fault once, plan it again
        after a backoff that doubles per fault (bus backoff_initial_s up to backoff_max_s)."""
        health = self.health[device.id]
        health.faults += 1
        health.fault_backoff_s = min(
            self.bus.backoff_max_s, max(self.bus.backoff_initial_s, health.fault_backoff_s * 2)
        )
        if health.faulted is None:
            log.error("device %s on bus %s faulted: %s", device.id, self.bus.id, reason)
            self.sink.event(device_event(device, FAULT, EventState.RAISED, self.clock.wall(), reason))
        health.faulted = reason
        health.last_error = reason
        health.last_error_ts = self.clock.wall()
        health.logged_errors.clear()  # keyed by the plan dropped here
        self._plans.pop(device.id, None)
        self._heap = [e for e in self._heap if e.device_id != device.id]
        heapq.heapify(self._heap)
        self._push(now + self._jittered(health.fault_backoff_s), device.id, _REPLAN, PollRequest((), 0.0))

    def _listen_fault(self, device: DeviceConfig, reason: str) -> None:
        """A listening bus's device whose batch could not be handled: faulted (once) until one is."""
        health = self.health[device.id]
        health.faults += 1
        if health.faulted is None:
            log.exception("device %s on bus %s faulted: %s", device.id, self.bus.id, reason)
            self.sink.event(device_event(device, FAULT, EventState.RAISED, self.clock.wall(), reason))
        health.faulted = reason

    def _jittered(self, seconds: float) -> float:
        return seconds * self._rng.uniform(0.8, 1.2)
