"""Local actions: on an event, write a point through the bus owner, behind interlocks.

Actions need only the bus, so they work with the uplink down. Every attempt (done, failed, refused
by an interlock) is logged and becomes an Event of kind "action" that goes upstream with the rest.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from gateway.api import Event, EventState, GatewayError, Severity, Value, utc_now
from gateway.rules.config import ActionConfig

log = logging.getLogger("gateway.rules.actions")

ACTION_KIND = "action"
"""Event kind of every action report."""


@runtime_checkable
class ActionTarget(Protocol):
    """Writes a point of a device through the bus owner that owns its channel (the runtime's job)."""

    async def write_point(self, device_id: str, point: str, value: Value) -> None:
        """Write `value` to `point`. Raises a GatewayError (WriteRejectedError, DeviceTimeoutError...)."""
        ...


class ActionOutcome(enum.StrEnum):
    DONE = "done"
    FAILED = "failed"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"  # interlock: too soon after the last write, or too many today
    OVERRIDDEN = "overridden"  # interlock: manual override set for this device and action
    NO_TARGET = "no_target"  # the runtime gave the engine no way to write


class ActionRunner:
    """Runs configured actions as tasks (never blocking evaluation) and reports each as an Event.

    Interlock refusals are returned by `trigger` at once; write outcomes go to `events` when given
    (the runtime's outbox callback), otherwise they wait for `drain` (the engine's next tick).
    """

    def __init__(
        self,
        actions: Sequence[ActionConfig],
        target: ActionTarget | None,
        device_attrs: Mapping[str, dict[str, Any]],
        clock: Callable[[], float] = utc_now,
        events: Callable[[Event], None] | None = None,
    ) -> None:
        self.target = target
        self.events = events
        self.clock = clock
        self._attrs = device_attrs
        self._by_rule: dict[tuple[str, EventState], list[ActionConfig]] = {}
        for a in actions:
            if a.enabled:
                for rule in a.on:
                    self._by_rule.setdefault((rule, EventState(a.when)), []).append(a)
        self.overrides: set[tuple[str, str]] = set()
        self._history: dict[tuple[str, str], deque[float]] = {}
        self._pending: list[Event] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def wants(self, rule: str) -> bool:
        return (rule, EventState.RAISED) in self._by_rule or (rule, EventState.CLEARED) in self._by_rule

    def set_override(self, device_id: str, action_id: str, on: bool) -> None:
        """Manual override: while set, the action never writes to this device."""
        if on:
            self.overrides.add((device_id, action_id))
        else:
            self.overrides.discard((device_id, action_id))

    def trigger(self, event: Event) -> list[Event]:
        """Start the actions of `event`'s rule. Returns interlock refusals now; writes report later."""
        now_events: list[Event] = []
        for a in self._by_rule.get((event.rule, event.state), ()):
            device = a.device or event.device_id
            key = (device, a.id)
            if key in self.overrides:
                now_events.append(self._report(a, device, event, ActionOutcome.OVERRIDDEN, event.ts))
                continue
            hist = self._history.setdefault(key, deque(maxlen=a.max_per_day))
            while hist and event.ts - hist[0] >= 86400:
                hist.popleft()
            if (hist and event.ts - hist[-1] < a.min_interval_s) or len(hist) >= a.max_per_day:
                now_events.append(self._report(a, device, event, ActionOutcome.RATE_LIMITED, event.ts))
                continue
            hist.append(event.ts)
            if self.target is None:
                now_events.append(self._report(a, device, event, ActionOutcome.NO_TARGET, event.ts))
                continue
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # evaluated outside the event loop (a replay): cannot write
                now_events.append(
                    self._report(a, device, event, ActionOutcome.FAILED, event.ts, "no running event loop")
                )
                continue
            task = loop.create_task(self._write(a, device, event), name=f"rules.action[{a.id}:{device}]")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return now_events

    async def _write(self, a: ActionConfig, device: str, trigger: Event) -> None:
        assert self.target is not None
        error = ""
        try:
            await asyncio.wait_for(self.target.write_point(device, a.point, a.value), a.timeout_s)
            outcome = ActionOutcome.DONE
        except TimeoutError:
            outcome, error = ActionOutcome.TIMEOUT, f"no answer within {a.timeout_s:g} s"
        except GatewayError as err:
            outcome, error = ActionOutcome.FAILED, f"{type(err).__name__}: {err}"
        except Exception as err:  # a bug in the target must not kill the engine; report it upstream
            log.exception("action %s on %s: unexpected error", a.id, device)
            outcome, error = ActionOutcome.FAILED, f"{type(err).__name__}: {err}"
        report = self._report(a, device, trigger, outcome, self.clock(), error)
        if self.events is None:
            self._pending.append(report)
            return
        try:
            self.events(report)
        except Exception:  # the outbox callback failing must not lose the report: keep it for tick
            log.exception("action report callback failed")
            self._pending.append(report)

    def _report(
        self, a: ActionConfig, device: str, trigger: Event, outcome: ActionOutcome, ts: float, error: str = ""
    ) -> Event:
        log.info("action %s on %s.%s = %r: %s %s", a.id, device, a.point, a.value, outcome.value, error)
        attrs = dict(self._attrs.get(device, {}))
        attrs.update(
            action=a.id,
            outcome=outcome.value,
            point=a.point,
            trigger_rule=trigger.rule,
            trigger_event=trigger.id,
            trigger_device=trigger.device_id,
        )
        if error:
            attrs["error"] = error
        severity = Severity.WARNING if outcome is ActionOutcome.DONE else Severity.MINOR
        msg = f"{a.id}: write {a.point}={a.value!r} on {device}: {outcome.value}" + (
            f" ({error})" if error else ""
        )
        return Event(device, ACTION_KIND, EventState.RAISED, severity, ts, a.id, a.value, msg, attrs)

    def drain(self) -> list[Event]:
        """Reports of writes that finished since the last call."""
        out, self._pending = self._pending, []
        return out

    async def wait_idle(self) -> None:
        """Wait for running writes (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def shift(self, delta: float) -> None:
        """The wall clock stepped by `delta` s: rate-limit history moves with it (limits stay exact)."""
        for key, times in self._history.items():
            self._history[key] = deque((t + delta for t in times), maxlen=times.maxlen)

    def snapshot(self) -> dict[str, Any]:
        return {
            "overrides": sorted([list(k) for k in self.overrides]),
            "history": [[k[0], k[1], list(v)] for k, v in self._history.items() if v],
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        self.overrides = {(str(d), str(a)) for d, a in data.get("overrides", [])}
        limits = {a.id: a.max_per_day for acts in self._by_rule.values() for a in acts}
        for dev, act, times in data.get("history", []):
            if act in limits:
                self._history[(dev, act)] = deque((float(t) for t in times), maxlen=limits[act])
