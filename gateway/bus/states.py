"""How a bus owner moves its devices between online, offline and faulted, and what it tells the
pipeline when it does (events, offline marks). Split from owner.py; `BusOwner` inherits it."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from citynerve.gateway.api import BusConfig, Clock, DeviceConfig, EventState, GatewayError, PollRequest
from citynerve.gateway.bus.events import FAULT, OFFLINE, device_event
from citynerve.gateway.bus.health import DeviceHealth
from citynerve.gateway.bus.jobs import BusSink, _Entry

log = logging.getLogger("citynerve.bus")

_REPLAN = -1  # heap entry index: plan the device again (after a fault)

FLAP_WINDOW_S = 600.0  # a device's offlines are counted over this span (monotonic)
FLAP_COUNT = 3  # this many offlines within the window: the device flaps
FLAP_HOLD_S = 60.0  # a flapping device's device_offline clears after this long answering,
FLAP_HOLD_MAX_S = 600.0  # doubled with each further offline within the window, up to this


def flap_hold_s(offlines: int) -> float:
    """How long a device that went offline `offlines` times within FLAP_WINDOW_S must answer before
    its device_offline clears: 0 (its first answer clears it) until it flaps."""
    if offlines < FLAP_COUNT:
        return 0.0
    return min(FLAP_HOLD_MAX_S, FLAP_HOLD_S * 2.0 ** min(offlines - FLAP_COUNT, 16))


class DeviceStates:
    """The device state transitions of a bus owner (online, offline, faulted)."""

    bus: BusConfig
    clock: Clock
    sink: BusSink
    health: dict[str, DeviceHealth]
    _rng: random.Random
    _heap: list[_Entry]
    _plans: dict[str, Sequence[PollRequest]]

    def _push(self, due: float, device_id: str, index: int, request: PollRequest, attempt: int = 0) -> None:
        raise NotImplementedError

    def _forget_polls(self, device_id: str) -> None:
        """Drop every queued poll of the device."""
        raise NotImplementedError

    def _success(self, device: DeviceConfig, ts: float) -> None:
        """The device answered: online, its fault cleared, and its device_offline cleared once it has
        answered for its hold (`_gone_offline`; none unless it flaps: its first answer clears it)."""
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
        if not health.offline_alarm:
            return
        now = self.clock.monotonic()
        if was is False or health.answering_since is None:
            health.answering_since = now
        if now - health.answering_since >= health.offline_hold_s:
            health.offline_alarm = False
            health.answering_since = None
            log.warning("device %s on bus %s is back online", device.id, self.bus.id)
            self.sink.event(device_event(device, OFFLINE, EventState.CLEARED, ts, "device answers again"))
        elif was is False:
            log.debug("device %s on bus %s answers again (alarm held)", device.id, self.bus.id)

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
        if was_answering and not health.offline_alarm and self._news(health, index, reason):
            log.warning("device %s on bus %s not answering: %s", device.id, self.bus.id, reason)
        health.last_error = reason
        health.last_error_ts = ts
        if health.online is False:
            health.backoff_s = self._backoff(health.backoff_s * 2)
        elif health.consecutive_failures >= self.bus.offline_after and health.probe_failed:
            health.backoff_s = self._backoff(self.bus.backoff_initial_s)
            self._gone_offline(device, reason, ts, f" after {health.consecutive_failures} failed polls")

    def _gone_offline(self, device: DeviceConfig, reason: str, ts: float, how: str = "") -> None:
        """The device stopped answering: offline at once, its points STALE, and device_offline raised
        unless the gateway still holds it (`how`: the log's words after "offline").

        Hysteresis: a device that went offline FLAP_COUNT times within FLAP_WINDOW_S flaps (a meter
        on the edge of its line). Its alarm then clears only after it has answered FLAP_HOLD_S
        without going offline, doubled with each further offline in the window up to
        FLAP_HOLD_MAX_S; its readings flow meanwhile. Going offline again while the alarm is held
        raises nothing and logs at debug: it raised and cleared device_offline (and the offline
        rules that follow it) every few seconds for ever, 40 events and 50 log lines a minute."""
        health = self.health[device.id]
        health.online = False
        now = self.clock.monotonic()
        health.offlines.append(now)
        while health.offlines[0] < now - FLAP_WINDOW_S:
            health.offlines.popleft()
        health.offline_hold_s = flap_hold_s(len(health.offlines))
        health.answering_since = None
        self.sink.mark_offline(device.id, ts)
        if health.offline_alarm:
            log.debug("device %s on bus %s is offline again (alarm held): %s", device.id, self.bus.id, reason)
            return
        health.offline_alarm = True
        held = ""
        if health.offline_hold_s:
            held = (
                f" (offline {len(health.offlines)} times in {FLAP_WINDOW_S:.0f} s: the alarm clears"
                f" once it has answered for {health.offline_hold_s:.0f} s)"
            )
        log.error("device %s on bus %s is offline%s: %s%s", device.id, self.bus.id, how, reason, held)
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
        self._forget_polls(device.id)
        self._push(now + self._backoff(health.fault_backoff_s), device.id, _REPLAN, PollRequest((), 0.0))

    def _unusable(self, device: DeviceConfig, reason: str) -> None:
        """A listening bus's device its driver cannot serve (its key file cannot be read): faulted
        and offline at once, with why; the other devices listen on. Cleared once it is heard."""
        health = self.health[device.id]
        wall = self.clock.wall()
        if health.faulted is None:
            health.faults += 1
            log.error("device %s on bus %s faulted: %s", device.id, self.bus.id, reason)
            self.sink.event(device_event(device, FAULT, EventState.RAISED, wall, reason))
        health.faulted = health.last_error = reason
        health.last_error_ts = wall
        if health.online is not False:
            self._gone_offline(device, reason, wall)

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

    def _backoff(self, seconds: float) -> float:
        """`seconds` +-20 % at random (devices do not retry in step), then capped at backoff_max_s:
        jitter after the cap made a 300 s maximum up to 360 s."""
        return min(self.bus.backoff_max_s, self._jittered(min(self.bus.backoff_max_s, seconds)))
