"""The rule engine: readings and time in, raise-once / clear-once events and local actions out.

The pipeline calls `evaluate` with every normalized batch (synchronously, so it stays O(1) per reading
per rule and does no I/O) and the runtime calls `tick` about once a second for time-driven rules
(missing data, hold times, calendar windows) and `on_event` with the bus owners' device_offline /
device_online events.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from citynerve.gateway.api import (
    DeviceConfig,
    Event,
    EventState,
    Quality,
    Reading,
    RulesFailedError,
    Severity,
    SteadyWall,
    Value,
    utc_now,
)
from citynerve.gateway.rules.actions import ActionRunner, ActionTarget
from citynerve.gateway.rules.alarm import Alarm, AlarmPhase, Transition
from citynerve.gateway.rules.binding import RuleBinding
from citynerve.gateway.rules.coincidence import CoincidenceCondition
from citynerve.gateway.rules.config import RuleConfig, RulesConfig
from citynerve.gateway.rules.flapping import FLAP_KIND, Flapping, Verdict, notice
from citynerve.gateway.rules.household import HouseholdRule
from citynerve.gateway.rules.instance import (
    ActiveAlarm,
    CompositeCondition,
    RuleInstance,
    device_attrs,
    still_raised,
)
from citynerve.gateway.rules.restored import known_away, restore_instance, saved_time, shown
from citynerve.gateway.rules.snapdata import clock_behind
from citynerve.gateway.rules.unwanted import UnwantedCondition

__all__ = ["DEVICE_OFFLINE", "DEVICE_ONLINE", "ActiveAlarm", "RuleEngine", "RuleInstance", "device_attrs"]

log = logging.getLogger("citynerve.gateway.rules")

DEVICE_OFFLINE = "device_offline"
DEVICE_ONLINE = "device_online"
SNAPSHOT_VERSION = 1
_WAITING = (AlarmPhase.PENDING, AlarmPhase.CLEARING)


class RuleEngine:
    """Evaluates the configured rules on every device they select.

    Implements the pipeline's `RulesHook` (`evaluate`, `tick`, `now`) and takes device online/offline
    events through `on_event`. Local actions go to `target` (the runtime's bus-owner writer).

    Time: without `steady` (replays, most tests) the engine's time is the readings' `ts` and the
    `now` given to `tick`. With `steady` (the running gateway) every reading and event is taken at
    `steady`'s time when it arrives, and a step of the wall clock moves every stored time by the step
    (`shift`): hold times, missing-data ages, rate windows and action rate limits are then measured
    on the monotonic clock while quiet hours and day boundaries follow the wall calendar.
    """

    def __init__(
        self,
        config: RulesConfig,
        devices: Iterable[DeviceConfig] | Mapping[str, DeviceConfig],
        *,
        target: ActionTarget | None = None,
        clock: Callable[[], float] = utc_now,
        events: Callable[[Event], None] | None = None,
        steady: SteadyWall | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.steady = steady
        devs = list(devices.values()) if isinstance(devices, Mapping) else list(devices)
        self.devices = {d.id: d for d in devs if d.enabled}
        self._attrs = {d.id: device_attrs(d) for d in self.devices.values()}
        self.actions = ActionRunner(
            config.actions,
            target,
            self._attrs,
            clock,
            events,
            interlocks=config.effective_interlocks(),
            dry_run=config.dry_run_actions,
        )
        self.actions.standing = self._standing  # a shared target's `cleared` action waits for the last
        self.away: set[str] = set(config.away)
        # The rules bound to the devices (binding.py): the instances and the routing tables.
        self._binding = bound = RuleBinding(config, self.devices, self._attrs)
        self.instances: dict[str, RuleInstance] = bound.instances
        self._by_dev = bound.by_dev
        self._any_point = bound.any_point
        self._offline = bound.offline
        self._ticked = bound.ticked
        self._peers = bound.peers
        self._feeds = bound.feeds
        self._waiting: set[RuleInstance] = set()
        self.flapping = Flapping()  # instances whose alarm their flap damper holds raised
        self._broken: set[str] = set()  # instances that raised in `tick` (logged once each)

    def _instance(self, rule: RuleConfig | HouseholdRule, dev: DeviceConfig) -> RuleInstance | None:
        """A fresh instance of a rule on a device (RuleBinding.instance)."""
        return self._binding.instance(rule, dev)

    # -- the RulesHook --------------------------------------------------------------------------

    def evaluate(self, readings: Sequence[Reading]) -> list[Event]:
        """Feed a batch of normalized readings; returns the events it raised or cleared.

        An instance that raises is passed over and the batch goes on; then RulesFailedError names
        the failed instances and carries the other rules' events, for the caller to deliver."""
        out: list[Event] = []
        failed: list[tuple[RuleInstance, Exception]] = []
        by_dev, any_point = self._by_dev, self._any_point
        good, idle, pending, active = Quality.GOOD, AlarmPhase.IDLE, AlarmPhase.PENDING, AlarmPhase.ACTIVE
        last_dev: str | None = None
        points: dict[str, list[RuleInstance]] | None = None
        feeds = self._feeds
        fed: dict[str, list[tuple[RuleInstance, Callable[[Value, float], bool | None]]]] | None = None
        at = None if self.steady is None else self.now()
        for r in readings:
            if r.quality is not good:
                # Unknown: a raised alarm stays as it is (missing-data rules see the silence), but a
                # pending hold is not confirmed by missing data: it restarts at the next good reading.
                if self._waiting and (insts := by_dev.get(r.device_id, {}).get(r.point)):
                    self._unconfirmed(insts)
                continue
            if r.device_id != last_dev:  # a batch is one device: look it up once
                last_dev = r.device_id
                points = by_dev.get(last_dev)
                fed = feeds.get(last_dev) if feeds else None
            if points is not None:
                insts = points.get(r.point)
                if insts is not None:
                    value, ts = r.value, (r.ts if at is None else at)
                    for inst in insts:
                        try:  # free unless it raises (3.11); one instance must not cost the others
                            cond = inst.cond.on_reading(value, ts)
                            if cond is None:
                                continue
                            # Fast paths for the common cases: nothing going on, raised and still
                            # true, or still waiting for the hold time.
                            alarm = inst.alarm
                            phase = alarm.phase
                            if cond:
                                if phase is active or (phase is pending and ts - alarm.since < alarm.hold_s):
                                    alarm.value = inst.cond.value
                                    continue
                            elif phase is idle:
                                continue
                            self._update(inst, cond, ts, out)
                        except Exception as err:
                            failed.append((inst, err))
            if fed is not None and r.point in fed:
                ts = r.ts if at is None else at
                for inst, feed in fed[r.point]:
                    try:
                        self._update(inst, feed(r.value, ts), ts, out)
                    except Exception as err:
                        failed.append((inst, err))
            if any_point:
                ts = r.ts if at is None else at
                for inst in any_point.get(r.device_id, ()):
                    try:
                        cond = inst.cond.on_reading(r.value, ts)
                        if cond or inst.alarm.phase is not idle:
                            self._update(inst, cond, ts, out)
                    except Exception as err:
                        failed.append((inst, err))
        if self.actions._pending:
            out.extend(self.actions.drain())
        if failed:
            raise RulesFailedError([i.key for i, _ in failed], out, failed[0][1]) from failed[0][1]
        return out

    def now(self) -> float:
        """The engine's time: `steady`'s (moving stored times at a step of the wall clock), else the
        clock's. The runtime passes this to `tick`."""
        if self.steady is None:
            return self.clock()
        t, step = self.steady.now()
        if step:
            self.shift(step)
        return t

    def shift(self, delta: float) -> None:
        """The wall clock stepped by `delta` s: move every stored time by it, so that no hold time,
        missing-data age, rate window or action rate limit sees the step as time passing."""
        log.warning(
            "wall clock stepped by %+.1f s: rule timers keep counting real time (monotonic clock)", delta
        )
        for inst in self.instances.values():
            inst.shift(delta)
        for peers in self._peers.values():
            peers.shift(delta)
        self.actions.shift(delta)

    def tick(self, now: float) -> list[Event]:
        """Let time pass: missing data, hold times, suppression ending. Call about once a second."""
        out: list[Event] = []
        for inst in self._ticked:
            try:  # one instance's failure must not stop the others' time (nor lose `out`)
                cond = inst.cond.on_tick(now)
                if cond is not None:
                    self._update(inst, cond, now, out)
            except Exception:
                self._failed(inst)
        for inst in list(self._waiting):
            try:
                tr = inst.alarm.expire(now, self._allowed(inst, now))
                if inst.alarm.phase not in _WAITING:
                    self._waiting.discard(inst)
                if tr is not Transition.NONE:
                    self._emit(inst, tr, now, out)
            except Exception:
                self._failed(inst)
        for inst in list(self.flapping.held):
            if inst.flap.settled(now, inst.alarm.phase is AlarmPhase.IDLE):
                self.flapping.held.discard(inst)
                self._send(inst, False, now, out)  # the clear held back
                out.append(notice(inst, False, now))
                log.info("rule %s on %s: no longer flapping", inst.rule.id, inst.device_id)
                inst.flap.reset()
        self.actions.run_due(now)  # actions the rate limit or an interlock held, once they let them
        out.extend(self.actions.drain())
        return out

    def _standing(self, rules: Collection[str], but: str) -> str | None:
        return still_raised(self.instances.values(), self.flapping.held, rules, but)

    def _failed(self, inst: RuleInstance) -> None:
        """A rule instance raised in `tick`: logged once (it would fail every second), the rest goes on."""
        if inst.key not in self._broken:
            self._broken.add(inst.key)
            log.exception("rule %s on %s failed at a tick (logged once)", inst.rule.id, inst.device_id)

    def on_event(self, event: Event) -> list[Event]:
        """Events from the bus owners and drivers: device online/offline feed offline rules; every
        event is followed by the action interlocks."""
        out: list[Event] = []
        now = None if self.steady is None else self.now()  # first: a clock step shifts stored times
        self.actions.observe(event, now=now)  # a fire from the panel's driver holds back valve actions
        if event.kind in (DEVICE_OFFLINE, DEVICE_ONLINE):
            offline = event.kind == DEVICE_OFFLINE and event.state is EventState.RAISED
            ts = event.ts if now is None else now
            if offline and self._waiting:  # no data confirms a pending hold any more
                points = self._by_dev.get(event.device_id, {})
                self._unconfirmed(i for insts in points.values() for i in insts)
            for inst in self._offline.get(event.device_id, ()):
                inst.cond.value = offline
                self._update(inst, offline, ts, out)
        return out

    # -- state changes ---------------------------------------------------------------------------

    def _allowed(self, inst: RuleInstance, ts: float) -> bool:
        if inst.suppress_away and any(d in self.away for d in inst.away_ids):
            return False
        return not any(q.open_at(ts) for q in inst.quiet)

    def _unconfirmed(self, insts: Iterable[RuleInstance]) -> None:
        """The point reads unknown (not GOOD) or the device went offline: the pending alarms of these
        instances go back to idle, so their hold restarts at the next good reading that meets the
        condition (the hold is not run out on missing data). Conditions judged on the passing of
        time (missing data, routines) are left alone: the silence is what they look at."""
        for inst in insts:
            if inst.alarm.phase is AlarmPhase.PENDING and not inst.cond.time_driven:
                inst.alarm.phase = AlarmPhase.IDLE
                self._waiting.discard(inst)

    def _update(self, inst: RuleInstance, cond: bool | None, ts: float, out: list[Event]) -> None:
        if cond is None:
            return
        allowed = True if not (inst.quiet or inst.suppress_away) else self._allowed(inst, ts)
        tr = inst.alarm.update(cond, ts, inst.cond.value, allowed)  # as _step, inlined: the hot path
        if inst.alarm.phase in _WAITING:
            self._waiting.add(inst)
        if tr is not Transition.NONE:
            self._emit(inst, tr, ts, out)

    def _step(self, inst: RuleInstance, cond: bool, ts: float) -> Transition:
        """The instance's alarm takes its condition (hold times, suppression); its transition."""
        allowed = True if not (inst.quiet or inst.suppress_away) else self._allowed(inst, ts)
        tr = inst.alarm.update(cond, ts, inst.cond.value, allowed)
        if inst.alarm.phase in _WAITING:
            self._waiting.add(inst)
        return tr

    def _emit(self, inst: RuleInstance, tr: Transition, ts: float, out: list[Event]) -> bool:
        """A raise or clear of an instance's alarm, then of every composite it changes, depth first
        in the order they were bound. A worklist, not a recursion: a chain of composites as long as
        a config can hold must not exhaust Python's stack (it did at ~330 levels, and the whole
        batch's events were lost). True if something was raised (an alarm or a flapping notice)."""
        raised = self._transition(inst, tr, ts, out)
        todo = inst.parents[::-1]
        while todo:
            parent = todo.pop()
            pc = parent.cond
            if isinstance(pc, CoincidenceCondition | UnwantedCondition):
                cond = pc.at(ts)
            else:
                assert isinstance(pc, CompositeCondition)
                cond = pc.evaluate()
            ptr = self._step(parent, cond, ts)
            if ptr is not Transition.NONE:
                raised = self._transition(parent, ptr, ts, out) or raised
                todo += parent.parents[::-1]
        return raised

    def _transition(self, inst: RuleInstance, tr: Transition, ts: float, out: list[Event]) -> bool:
        """One instance's raise or clear: its event (unless its flap damper holds it back). True if
        something was raised (the alarm or a flapping notice)."""
        raised = tr is Transition.RAISE
        inst.cond.on_alarm(raised)
        if raised:
            inst.raised_at = ts
        verdict = inst.flap.transition(ts)
        if verdict is Verdict.SEND or (raised and verdict is Verdict.START):
            self._send(inst, raised, ts, out)
        else:  # held back from the platform, but the interlocks follow the input (flapping.py)
            self.actions.observe(inst.event(raised, ts), by_value=False, damped=True)
        if verdict is Verdict.START:
            self.flapping.held.add(inst)
            out.append(notice(inst, True, ts))
            log.warning(
                "rule %s on %s flapping: %d raises and clears within %g s: held raised until clear %g s",
                *(inst.rule.id, inst.device_id, inst.flap.total, inst.flap.window_s, inst.flap.settle_s),
            )
        elif verdict is Verdict.HOLD and (n := inst.flap.log_due(ts)):
            log.info(
                "rule %s on %s flapping: %d more raises and clears held", inst.rule.id, inst.device_id, n
            )
        return verdict is Verdict.START or (raised and verdict is Verdict.SEND)

    def _send(self, inst: RuleInstance, raised: bool, ts: float, out: list[Event]) -> None:
        """The event of a raise or clear, and the local actions it triggers."""
        ev = inst.event(raised, ts)
        out.append(ev)
        self.actions.observe(ev, by_value=False)
        log.info("rule %s on %s: %s value=%r", ev.rule, ev.device_id, ev.state.value, ev.value)
        if self.actions.wants(ev.rule):
            out.extend(self.actions.trigger(ev))

    @property
    def waiting(self) -> int:
        """Alarms waiting on a hold time."""
        return len(self._waiting)

    def next_deadline(self, now: float) -> float:
        """When the next hold time runs out (inf if none): a replay ticks then instead of every second.

        A pending alarm held back by suppression is re-checked a minute later (quiet hours have
        minute resolution; `set_away` takes effect at the next tick).
        """
        best = math.inf
        for inst in self._waiting:
            a = inst.alarm
            due = a.since + (a.hold_s if a.phase is AlarmPhase.PENDING else a.clear_hold_s)
            best = min(best, due if due > now else now + 60.0)
        return min(best, self.flapping.deadline(now))

    # -- operator controls -----------------------------------------------------------------------

    def set_away(self, device_id: str, away: bool) -> None:
        """Mark a household away (its `suppress_when_away` rules do not raise) or back home."""
        if away:
            self.away.add(device_id)
        else:
            self.away.discard(device_id)

    def serviced(self, device_id: str) -> list[str]:
        """The device was serviced (an operator ended its maintenance): conditions that judge it by
        its own history (unwanted-alarm management) start afresh. Returns the rule ids reset."""
        done = []
        for i in self.instances.values():
            if i.device_id == device_id and isinstance(i.cond, UnwantedCondition):
                i.cond.serviced()
                done.append(i.rule.id)
        return done

    def set_override(self, device_id: str, action_id: str, on: bool) -> None:
        """Manual override of a local action on a device (durable through `snapshot`)."""
        self.actions.set_override(device_id, action_id, on)

    def active(self) -> list[ActiveAlarm]:
        """Alarms raised and not cleared: held raised while flapping, with the flapping notice."""
        return [
            ActiveAlarm(i.rule.id, i.device_id, i.kind, i.severity, i.raised_at, i.alarm.raised_value)
            for i in self.instances.values()
            if i.alarm.active or i in self.flapping.held
        ] + [
            ActiveAlarm(i.rule.id, i.device_id, FLAP_KIND, Severity.MINOR, i.flap.since, i.flap.total)
            for i in self.flapping.held
        ]

    # -- persistence -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Detector and alarm state, JSON-serializable, to survive a restart.

        With `steady` (the running gateway) it holds the engine's time of the save (`saved_at`):
        `restore` tells by it a clock that cannot be right yet. Without, the engine's time is the
        readings' and there is no time of the save to give."""
        saved_at = {} if self.steady is None else {"saved_at": self.now()}
        return {
            "version": SNAPSHOT_VERSION,
            **saved_at,
            "instances": {
                k: [i.alarm.snapshot(), i.cond.snapshot(), i.raised_at] for k, i in self.instances.items()
            },
            "flapping": self.flapping.snapshot(self.instances),
            "away": sorted(self.away),
            "actions": self.actions.snapshot(),
        }

    def restore(self, data: Mapping[str, Any]) -> int:
        """Restore a snapshot; instances of rules or devices no longer configured are dropped.

        Returns how many instances were restored. A malformed entry is skipped and logged, so an old
        or damaged snapshot costs learned state, never the gateway.

        No RTC: the clock may start far behind the snapshot's (1970 until NTP, a stale fake-hwclock
        time). With `steady`, an engine time before the snapshot's `saved_at` cannot be right: every
        restored time (holds, raise times, conditions, meters, routines, action limits, flap
        dampers) moves by (now - saved_at), so NTP's step later puts it back on the calendar with
        everything else (the outage counts as no time). Without `saved_at` (older gateways): as is.
        """
        if data.get("version") != SNAPSHOT_VERSION:
            log.warning(
                "rules snapshot version %r not %d: starting fresh", data.get("version"), SNAPSHOT_VERSION
            )
            return 0
        n = 0
        back = clock_behind(data.get("saved_at"), None if self.steady is None else self.now)
        saved = saved_time(data.get("saved_at"))  # no restored time is later (restored.py)
        instances = data.get("instances")
        if not isinstance(instances, Mapping):
            log.warning("rules snapshot: instances are %s, not an object: none restored", type(instances))
            instances = {}
        for key, entry in instances.items():
            inst = self.instances.get(key)
            if inst is None:
                continue
            try:
                restore_instance(inst, entry, saved)
            except Exception as err:  # any damage costs this instance's state, never the start
                log.warning("rules snapshot: cannot restore %s (%s): starting it fresh", key, shown(err))
                self._start_fresh(inst)
                continue
            if back:
                inst.shift(back)
            if inst.alarm.phase in _WAITING:
                self._waiting.add(inst)
            n += 1
        self.flapping.restore(self.instances, data.get("flapping"), back, saved)
        away = data.get("away")
        self.away = set(self.config.away)
        if isinstance(away, list):
            self.away |= known_away(away, {*self.devices, *(h.id for h in self.config.households)})
        actions = data.get("actions")
        if isinstance(actions, Mapping):
            # The running gateway's clock may read far behind the snapshot's (no RTC: 1970 until NTP)
            # and an old snapshot has no saved_at: rate-limit times later than now are taken as now.
            self.actions.restore(actions, now=None if self.steady is None else self.now(), shift=back)
        elif actions is not None:
            log.warning("rules snapshot: actions are %s, not an object: not restored", type(actions))
        return n

    def forget_cleared(self, registry: Iterable[tuple[str, str, str, Value]]) -> int:
        """After a restart or reload: the registry of active alarms (saved within about a second of a
        change, so newer than this snapshot; without the alarms of removed devices) names every
        alarm still raised as (device, kind, rule, value).
        Rule alarms restored active that it does not hold cleared before the stop: they start idle
        (else a new occurrence would raise nothing), and interlock entries it does not hold are
        dropped (else a fire reset before the stop would block valve closes for good), and so are
        held actions whose triggering alarm it does not hold (else a leak that dried before the stop
        would close the valve when the fire clears). Returns how many alarms and entries were dropped."""
        active = list(registry)
        held = {(d, k, r) for d, k, r, _ in active}
        n = 0
        for inst in self.instances.values():
            if inst.alarm.active and (inst.device_id, inst.kind, inst.rule.id) not in held:
                log.warning("rule %s on %s not in the alarm registry: idle", inst.rule.id, inst.device_id)
                inst.alarm.phase = AlarmPhase.IDLE
                inst.cond.on_alarm(False)
                self._waiting.discard(inst)
                n += 1
        n += self.flapping.forget(held)
        n += self.actions.retain_held(held)
        return n + self.actions.interlocks.retain(held, {(d, k, r, repr(v)) for d, k, r, v in active})

    def _start_fresh(self, inst: RuleInstance) -> None:
        """Give an instance a new alarm and condition (its restored state is damaged). The household
        feeds hold the old condition's methods: they are pointed at the new one."""
        old = inst.cond
        fresh = self._instance(inst.rule, self.devices[inst.device_id])
        inst.alarm = fresh.alarm if fresh is not None else Alarm(inst.rule.hold_s, inst.rule.clear_hold_s)
        inst.raised_at = 0.0
        self._waiting.discard(inst)
        if fresh is None:
            return
        inst.cond = fresh.cond
        for points in self._feeds.values():
            for entries in points.values():
                for i, (fed, feed) in enumerate(entries):
                    if getattr(feed, "__self__", None) is old:
                        entries[i] = (fed, getattr(inst.cond, getattr(feed, "__name__", "")))
