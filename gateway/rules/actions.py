"""Local actions: on an event, write a point through the bus owner, behind interlocks.

Actions need only the bus, so they work with the uplink down. Every attempt (done, failed, refused
by an interlock, not followed by the device, or only logged in dry-run mode) is logged and becomes
an Event of kind "action" that goes upstream with the rest.

Safe to leave unattended: a state interlock (interlocks.py: no valve closes during a fire in the same
building) blocks before any write; every write is read back, with bounded retries, and a device
that did not follow raises a major event; `dry_run` writes nothing and says what it would have done.

Rate limits count what moves the device, per target device and action: a write of the value the
gateway last wrote to that point (the relay already on, the valve already closed) is made again but
not counted, and a write for a raised critical event (a fire: the siren) is never limited. An action
the limits refuse is held and runs at a tick once they let it, if its trigger still stands; when the
trigger changes first (the leak cleared) it is dropped and reported. So a flapping sensor cannot
spend a shared siren's day, and the valve ends as the last alarm state asks.

A point has at most one held write: the value its standing triggers ask for (`Due`). Every trigger
asking for that value stands behind it, and it is dropped only when none stands any more (two leak
probes on one valve: the close waits for both to dry). A write of another value to the point
replaces it (a leak raised after the dry probe's held opening), except a cleared event's write while
an alarm still raised stands behind the held one: that write is dropped (an alarm wins over a clear).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from citynerve.gateway.api import Event, EventState, GatewayError, Quality, Reading, Severity, Value, utc_now
from citynerve.gateway.logs import field
from citynerve.gateway.rules.action_helpers import Due, entries, matches, trigger_entry, wait_s
from citynerve.gateway.rules.config import ActionConfig
from citynerve.gateway.rules.interlocks import WILDCARD, InterlockConfig, Interlocks
from citynerve.gateway.rules.snapdata import number

log = logging.getLogger("citynerve.gateway.rules.actions")

ACTION_KIND = "action"
"""Event kind of every action report."""


@runtime_checkable
class ActionTarget(Protocol):
    """Writes a point of a device through the bus owner that owns its channel (the runtime's job)."""

    async def write_point(self, device_id: str, point: str, value: Value) -> None:
        """Write `value` to `point`. Raises a GatewayError (WriteRejectedError, DeviceTimeoutError...)."""
        ...

    async def read_point(self, device_id: str, point: str) -> Reading:
        """Read `point` now (the read-back after a write). Raises a GatewayError."""
        ...


class ActionOutcome(enum.StrEnum):
    DONE = "done"
    FAILED = "failed"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"  # too soon after the last write, or too many today: held until allowed
    DROPPED = "dropped"  # held by the rate limit, then its trigger changed: not run
    OVERRIDDEN = "overridden"  # interlock: manual override set for this device and action
    NO_TARGET = "no_target"  # the runtime gave the engine no way to write
    INTERLOCKED = "interlocked"  # a state interlock: e.g. a fire alarm raised in the same building
    NOT_FOLLOWED = "not_followed"  # written, but the read-back shows the device did not follow
    UNCONFIRMED = "unconfirmed"  # written, but the point could not be read back
    DRY_RUN = "dry_run"  # dry-run mode: logged what would have been written, wrote nothing


_SEVERITY = {
    ActionOutcome.DONE: Severity.WARNING,
    ActionOutcome.DRY_RUN: Severity.INFO,
    ActionOutcome.DROPPED: Severity.INFO,
    ActionOutcome.INTERLOCKED: Severity.MAJOR,
    ActionOutcome.NOT_FOLLOWED: Severity.MAJOR,
}


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
        interlocks: Sequence[InterlockConfig] = (),
        dry_run: bool = False,
    ) -> None:
        self.target = target
        self.events = events
        self.clock = clock
        self.dry_run = dry_run
        self.interlocks = Interlocks(interlocks, device_attrs)
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
        # writes an interlock holds, by (device, action): run once it lets them, while a trigger
        # behind them stands (a valve's close asked for by two leak probes waits for both to dry)
        self._held: dict[tuple[str, str], Due] = {}
        # writes the rate limit refused, by (device, point): run at a tick once the limit lets them
        # (`run_due`), while a trigger behind them stands
        self._due: dict[tuple[str, str], Due] = {}
        # what the gateway last wrote (or is writing) to a point, by (device, point): the value and
        # the write's number; forgotten when that write did not end done
        self._written: dict[tuple[str, str], tuple[Value, int]] = {}
        self._writes = 0
        # An alarm of these rules still raised on another device (the engine's instances): a shared
        # target's `cleared` action waits for the last of them (`trigger`).
        self.standing: Callable[[Collection[str], str], str | None] | None = None
        # Called when what must survive a power cut changed (an action started: its rate limit;
        # the interlocks' raised events; held actions): the persistent engine saves soon.
        self.changed: Callable[[], None] | None = None

    def wants(self, rule: str) -> bool:
        return (rule, EventState.RAISED) in self._by_rule or (rule, EventState.CLEARED) in self._by_rule

    def set_override(self, device_id: str, action_id: str, on: bool) -> None:
        """Manual override: while set, the action never writes to this device."""
        if on:
            self.overrides.add((device_id, action_id))
        else:
            self.overrides.discard((device_id, action_id))

    def observe(
        self, event: Event, *, by_value: bool = True, damped: bool = False, now: float | None = None
    ) -> None:
        """Follow every raised and cleared event (rules, drivers, bus owners) for the interlocks.

        An action an interlock held back runs once nothing blocks it any more, if its trigger still
        stands (a leak still raised when the fire is cleared closes the valve then); it is dropped
        when its trigger clears first. A one-shot event with subject "*" (a fire panel's reset)
        clears like a CLEARED one (Interlocks.observe). `damped`: a transition the rule's flap
        damper holds back from the platform (flapping.py): only the interlocks follow it, the
        actions its rule triggered stay as the platform sees the alarm. `now`: the engine's time
        (default the event's): a driver stamps its events with the wall clock, which may already
        be past a step the engine has not seen, and a write's time goes into its rate limit."""
        now = event.ts if now is None else now
        if self.interlocks.observe(event, by_value=by_value) and self.changed is not None:
            self.changed()
        clears = event.state is EventState.CLEARED or (event.one_shot and event.subject == WILDCARD)
        if not damped and (not event.one_shot or clears):
            state = EventState.CLEARED if clears else event.state
            self._drop_undone(self._due, event, state, "the rate limit", now)
            self._drop_undone(self._held, event, state, "the interlock", now)
        if clears:
            self.release(now)

    def release(self, now: float) -> None:
        """Run the writes an interlock held that nothing blocks any more (their triggers stand, else
        `observe` dropped them): at a clearing event, and at every tick for entries gone without
        one (the alarm registry cleared them at a start or reload: RuleEngine.forget_cleared)."""
        for key, held in list(self._held.items()):
            a = held.action
            if self.interlocks.blocking(a.id, key[0], a.point, a.value) is not None:
                continue
            del self._held[key]
            if self.changed is not None:  # the snapshot must not keep a held action that is gone
                self.changed()
            log.warning("action %s on %s: interlock %s released", field(a.id), field(key[0]), held.held_by)
            *behind, trigger = held.triggers
            for report in self._start(a, key[0], trigger, now, held.held_by, behind):
                self._deliver(report)

    def trigger(self, event: Event) -> list[Event]:
        """Start the actions of `event`'s rule. Returns interlock refusals now; writes report later."""
        now_events: list[Event] = []
        for a in self._by_rule.get((event.rule, event.state), ()):
            device = a.device or event.device_id
            key = (device, a.id)
            if key in self.overrides:
                now_events.append(self._report(a, device, event, ActionOutcome.OVERRIDDEN, event.ts))
                continue
            refused = self._interlocked(a, device, [event], event.ts)
            if refused is not None:
                now_events.append(refused)
                continue
            self._held.pop(key, None)
            now_events += self._start(a, device, event, event.ts)
        return now_events

    def _other_standing(self, a: ActionConfig, event: Event) -> str | None:
        """For a `cleared` action on a shared target (its own `device`: a valve of several leak
        probes, a siren of several detectors), an alarm of its rules still raised elsewhere: the
        valve must not open, nor the siren stop, while another probe leaks or detector alarms."""
        if event.state is not EventState.CLEARED or not a.device or self.standing is None:
            return None
        return self.standing(a.on, event.device_id)

    def _interlocked(self, a: ActionConfig, device: str, triggers: list[Event], ts: float) -> Event | None:
        """Whether an interlock blocks `a` on `device` now: if so the write is held for `triggers`
        (oldest first; with those of a write the rate limit held for the same value) until it lets
        it, and the refusal is returned."""
        blocked = self.interlocks.blocking(a.id, device, a.point, a.value)
        if blocked is None:
            return None
        lock, why = blocked
        held = self._held.setdefault((device, a.id), Due(a, [], lock.id))
        held.held_by = lock.id
        due = self._due.get((device, a.point))
        if due is not None and matches(due.action.value, a.value):
            del self._due[(device, a.point)]  # the interlock's hold now: it runs once that lets it
            triggers = [*due.triggers, *triggers]
        for t in triggers:
            held.add(t)
        if self.changed is not None:
            self.changed()
        reason = f"interlock {lock.id}: {why}"
        return self._report(a, device, triggers[-1], ActionOutcome.INTERLOCKED, ts, reason)

    def _drop_undone(
        self, holds: dict[tuple[str, str], Due], event: Event, state: EventState, holder: str, now: float
    ) -> None:
        """`event` (its rule and device now in `state`) undoes the triggers of held writes from its
        rule and device (the leak that was to close the valve cleared, or raised again before the
        valve could open): a held write with no trigger left standing is dropped and reported."""
        source = (event.rule, event.device_id)
        for key, held in list(holds.items()):
            last = held.triggers[-1]
            if not held.undo(source, state):
                continue
            if self.changed is not None:
                self.changed()
            if held.triggers:
                continue
            del holds[key]  # its last trigger is the one undone
            why = f"{event.rule} {state.value} on {event.device_id} before {holder} let it run"
            report = self._report(held.action, key[0], last, ActionOutcome.DROPPED, now, why, held.held_by)
            self._deliver(report)

    def run_due(self, now: float) -> None:
        """Run the writes held by the rate limit that it lets run at `now` (the engine's tick), and
        those an interlock no longer holds (`release`). A trigger behind each still stands (else
        `observe` dropped it) and no newer trigger asked for another value (else `_start` replaced
        it); an interlock raised meanwhile holds it as in `trigger`. Reports go where write reports go."""
        self.release(now)
        if not self._due:
            return
        for key, due in list(self._due.items()):
            a, trigger, device = due.action, due.triggers[-1], key[0]
            hist = self._history.get((device, a.id))
            if hist is not None and wait_s(a, hist, now) > 0:
                continue
            del self._due[key]
            if self.changed is not None:
                self.changed()
            refused = self._interlocked(a, device, due.triggers, now)
            if refused is not None:
                self._deliver(refused)
                continue
            for report in self._start(a, device, trigger, now, due.held_by, due.triggers[:-1]):
                self._deliver(report)

    def _start(
        self,
        a: ActionConfig,
        device: str,
        event: Event,
        ts: float,
        held_by: str = "",
        behind: Sequence[Event] = (),
    ) -> list[Event]:
        """Rate limits, dry run, then the write as a task. Returns the reports known at once.
        `behind`: older triggers of a held write released now, which stand behind it too."""
        key = (device, a.id)
        if key in self.overrides:  # also for a held action released later: the operator always wins
            return [self._report(a, device, event, ActionOutcome.OVERRIDDEN, ts, held_by=held_by)]
        other = self._other_standing(a, event)  # also for a write an interlock or the rate limit held
        if other is not None:
            why = f"{other} is still raised: {a.point} of {device} stays as that alarm asks"
            return [self._report(a, device, event, ActionOutcome.DROPPED, ts, why, held_by)]
        point = (device, a.point)
        due = self._due.get(point)
        if due is not None and not matches(due.action.value, a.value):
            alarm = due.stands(EventState.RAISED)
            if event.state is EventState.CLEARED and alarm is not None:  # an alarm wins over a clear
                why = (
                    f"{a.point}={due.action.value!r} held for {alarm.rule} still raised on {alarm.device_id}"
                )
                return [self._report(a, device, event, ActionOutcome.DROPPED, ts, why, held_by)]
            del self._due[point]  # the newer trigger asks for another value: it decides
            why = f"{event.rule} {event.state.value} on {event.device_id} asked for {a.value!r} first"
            self._deliver(
                self._report(
                    due.action, device, due.triggers[-1], ActionOutcome.DROPPED, ts, why, due.held_by
                )
            )
            due = None
        if not self._free(a, device, event):
            hist = self._history.setdefault(key, deque(maxlen=a.max_per_day))
            wait = wait_s(a, hist, ts)
            if wait > 0:
                self._hold(point, a, [*behind, event], held_by, due)
                if self.changed is not None:
                    self.changed()
                why = (
                    f"{'max_per_day' if len(hist) >= a.max_per_day else 'min_interval_s'}: held, runs in "
                    f"{wait:.0f} s if {event.rule} is still {event.state.value} on {event.device_id}"
                )
                return [self._report(a, device, event, ActionOutcome.RATE_LIMITED, ts, why, held_by)]
            hist.append(ts)
        self._due.pop(point, None)  # a held write of this value: this one does it
        if self.changed is not None:
            self.changed()
        if self.dry_run:
            self._wrote(device, a)
            return [
                self._report(a, device, event, ActionOutcome.DRY_RUN, ts, "dry run: nothing written", held_by)
            ]
        if self.target is None:
            return [self._report(a, device, event, ActionOutcome.NO_TARGET, ts, held_by=held_by)]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # evaluated outside the event loop (a replay): cannot write
            return [
                self._report(a, device, event, ActionOutcome.FAILED, ts, "no running event loop", held_by)
            ]
        write = self._wrote(device, a)
        task = loop.create_task(
            self._write(a, device, event, held_by, write), name=f"rules.action[{a.id}:{device}]"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return []

    def _hold(
        self, point: tuple[str, str], a: ActionConfig, triggers: list[Event], held_by: str, due: Due | None
    ) -> None:
        """Hold `a`'s write for `triggers` (the rate limit refused it; the last asked now); `due`:
        the point's held write of the same value, which they now stand behind too (each in place of
        an older trigger of its rule and device)."""
        if due is None:
            due = self._due[point] = Due(a, [], held_by)
        for t in triggers:
            due.add(t)
        due.action, due.held_by = a, held_by or due.held_by

    def _free(self, a: ActionConfig, device: str, event: Event) -> bool:
        """Whether this write is outside the rate limit: it does not move the device (the gateway
        last wrote this value to the point: the relay is already on), or it answers a raised
        critical event (a fire: the siren sounds for every one; a valve's closing that moves it
        follows an opening, and openings stay limited)."""
        if event.state is EventState.RAISED and event.severity is Severity.CRITICAL:
            return True
        last = self._written.get((device, a.point))
        return last is not None and matches(last[0], a.value)

    def _wrote(self, device: str, a: ActionConfig) -> int:
        """Remember `a.value` as what the point is set to; returns the write's number."""
        self._writes += 1
        self._written[(device, a.point)] = (a.value, self._writes)
        return self._writes

    def _deliver(self, report: Event) -> None:
        if self.events is None:
            self._pending.append(report)
            return
        try:
            self.events(report)
        except Exception:  # the outbox callback failing must not lose the report: keep it for tick
            log.exception("action report callback failed")
            self._pending.append(report)

    async def _write(
        self, a: ActionConfig, device: str, trigger: Event, held_by: str = "", write: int = 0
    ) -> None:
        assert self.target is not None
        error = ""
        try:
            await asyncio.wait_for(self.target.write_point(device, a.point, a.value), a.timeout_s)
            outcome = ActionOutcome.DONE
            if a.verify:
                outcome, error = await self._verify(a, device)
        except TimeoutError:
            outcome, error = ActionOutcome.TIMEOUT, f"no answer within {a.timeout_s:g} s"
        except GatewayError as err:
            outcome, error = ActionOutcome.FAILED, f"{type(err).__name__}: {err}"
        except Exception as err:  # a bug in the target must not kill the engine; report it upstream
            log.exception("action %s on %s: unexpected error", a.id, device)
            outcome, error = ActionOutcome.FAILED, f"{type(err).__name__}: {err}"
        written = self._written.get((device, a.point))
        if outcome is not ActionOutcome.DONE and written is not None and written[1] == write:
            del self._written[(device, a.point)]  # what the point is set to is not known any more
        self._deliver(self._report(a, device, trigger, outcome, self.clock(), error, held_by))

    async def _verify(self, a: ActionConfig, device: str) -> tuple[ActionOutcome, str]:
        """Read the point back until it shows the expected value, at most 1 + verify_retries times."""
        assert self.target is not None
        want = a.value if a.expect is None else a.expect
        problem, read_other = "", False
        for _ in range(a.verify_retries + 1):
            await asyncio.sleep(a.verify_after_s)
            try:
                reading = await asyncio.wait_for(self.target.read_point(device, a.point), a.timeout_s)
            except TimeoutError:
                problem = f"read-back: no answer within {a.timeout_s:g} s"
                continue
            except GatewayError as err:
                problem = f"read-back: {type(err).__name__}: {err}"
                continue
            if reading.quality is Quality.GOOD and matches(reading.value, want):
                return ActionOutcome.DONE, ""
            problem, read_other = f"reads {reading.value!r} ({reading.quality}), expected {want!r}", True
        tries = a.verify_retries + 1
        outcome = ActionOutcome.NOT_FOLLOWED if read_other else ActionOutcome.UNCONFIRMED
        return outcome, f"{problem} after {tries} read-back{'s' if tries > 1 else ''}"

    def _report(
        self,
        a: ActionConfig,
        device: str,
        trigger: Event,
        outcome: ActionOutcome,
        ts: float,
        error: str = "",
        held_by: str = "",
    ) -> Event:
        level = logging.INFO if outcome in (ActionOutcome.DONE, ActionOutcome.DRY_RUN) else logging.WARNING
        log.log(
            level,
            "action %s on %s.%s = %s: %s %s",
            field(a.id),
            field(device),
            field(a.point),
            field(a.value),
            outcome.value,
            error,
        )
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
        if held_by:
            attrs["held_by_interlock"] = held_by  # ran late: once this interlock let it
        severity = _SEVERITY.get(outcome, Severity.MINOR)
        msg = f"{a.id}: write {a.point}={a.value!r} on {device}: {outcome.value}" + (
            f" ({error})" if error else ""
        )
        # A report of what was done, never an active alarm (nothing clears it).
        return Event(
            device, ACTION_KIND, EventState.RAISED, severity, ts, a.id, a.value, msg, attrs, one_shot=True
        )

    def drain(self) -> list[Event]:
        """Reports of writes that finished since the last call."""
        out, self._pending = self._pending, []
        return out

    async def wait_idle(self) -> None:
        """Wait for running writes (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def retain_held(self, raised: Collection[tuple[str, str, str]]) -> int:
        """After a restart: drop the triggers of held writes (an interlock's or the rate limit's)
        that changed before the stop: a raised trigger whose alarm (device, kind, rule) is not in
        `raised` (the alarm registry: it cleared), a cleared one whose alarm is (raised again). A
        held write with no trigger left is dropped. Returns how many triggers were dropped."""
        gone = 0
        for holds in (self._held, self._due):
            for key, held in list(holds.items()):
                stands = [
                    t
                    for t in held.triggers
                    if ((t.device_id, t.kind, t.rule) in raised) is (t.state is EventState.RAISED)
                ]
                gone += len(held.triggers) - len(stands)
                held.triggers = stands
                if not stands:
                    log.warning(
                        "action %s on %s: its triggers changed before the stop: dropped",
                        held.action.id,
                        key[0],
                    )
                    del holds[key]
        if gone and self.changed is not None:
            self.changed()
        return gone

    def shift(self, delta: float) -> None:
        """The wall clock stepped by `delta` s: rate-limit history moves with it (limits stay exact)."""
        for key, times in self._history.items():
            self._history[key] = deque((t + delta for t in times), maxlen=times.maxlen)

    def snapshot(self) -> dict[str, Any]:
        return {
            "overrides": sorted([list(k) for k in self.overrides]),
            "history": [[k[0], k[1], list(v)] for k, v in self._history.items() if v],
            "interlock_events": self.interlocks.snapshot(),
            # held actions: a gateway restarted mid-fire still closes the valve once the fire is out
            "held": [
                [dev, act, h.held_by, trigger_entry(t)]
                for (dev, act), h in self._held.items()
                for t in h.triggers
            ],
            # and those the rate limit holds, a row per trigger: a restart does not forget the close
            "due": [
                [dev, d.action.id, d.held_by, trigger_entry(t)]
                for (dev, _), d in self._due.items()
                for t in d.triggers
            ],
        }

    def restore(self, data: Mapping[str, Any], now: float | None = None, shift: float = 0.0) -> None:
        """Take a snapshot's part; a malformed entry is dropped (logged), the rest restored.

        Rate-limit times are moved by `shift` (the engine's clock reads that far behind the
        snapshot's save: RuleEngine.restore). With `now` (the engine's time), a rate-limit time
        still later than it is taken as `now`: the snapshot's times are on the last run's wall
        clock, and a box without an RTC starts with its clock far behind (1970) until NTP steps it.
        Left in the future, such a time would refuse every write until then, and `shift` would
        carry it into the future by the whole step."""
        bad, future = 0, 0
        self.overrides = set()
        for item in entries(data, "overrides"):
            if isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item):
                self.overrides.add((item[0], item[1]))
            else:
                bad += 1
        self.interlocks.restore(entries(data, "interlock_events"))
        configs = {a.id: a for acts in self._by_rule.values() for a in acts}
        for item in entries(data, "history"):
            try:
                dev, act, times = item
                if act in configs:
                    stamps = [number(t) + shift for t in times]
                    if now is not None:
                        future += sum(t > now for t in stamps)
                        stamps = [min(t, now) for t in stamps]
                    self._history[(str(dev), act)] = deque(stamps, maxlen=configs[act].max_per_day)
            except (TypeError, ValueError):
                bad += 1
        if bad:
            log.warning("rules snapshot: %d malformed override or rate-limit entries dropped", bad)
        if future:
            log.warning("rules snapshot: %d action times later than the clock now: taken as now", future)
        for name in ("held", "due"):
            for item in entries(data, name):
                try:
                    dev, act, lock, (t_dev, kind, state, severity, ts, rule, value, ev_id) = item
                    if act not in configs:
                        continue  # the action is no longer configured
                    trigger = Event(
                        str(t_dev), str(kind), EventState(state), Severity(severity), float(ts), str(rule),
                        value, "", {}, str(ev_id),
                    )  # fmt: skip
                except (TypeError, ValueError, OverflowError) as err:
                    log.warning("rules snapshot: a held action cannot be restored (%s): dropped", err)
                    continue
                if name == "held":
                    self._held.setdefault((str(dev), act), Due(configs[act], [], str(lock))).add(trigger)
                    continue
                a, point = configs[act], (str(dev), configs[act].point)
                due = self._due.get(point)
                same = due is not None and matches(due.action.value, a.value)
                self._hold(point, a, [trigger], str(lock), due if same else None)
