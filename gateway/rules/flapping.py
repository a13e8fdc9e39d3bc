"""The flap damper of one rule instance: an input that raises and clears its alarm again and again.

A smoke detector with a loose wire toggles its alarm register at every poll. Hold times damp most
rules, but smoke, fire and boolean rules have none by design (a detector's alarm goes out at once),
so without a bound one such device sends two events a second to the platform, fills the outbox
during an outage (evicting the other devices' records) and puts its backlog in front of another
detector's real alarm.

Every raise and clear of the instance's alarm is counted. More than `flap_limit` of them within
`flap_window_s` (the engine's time: the steady clock in the running gateway) and the instance is
flapping:

- the transition that made it so goes out if it is a raise (a fire is never delayed), and so did
  every transition before it; from then on the platform sees the alarm raised: the clears are held
  back (failing toward alarm is the safe side for a detector) and so are the raises that follow;
- one maintenance event, kind `input_flapping` (rule: the flapping rule, value: the transitions
  counted in the window), says the device's rule flaps: a wire or sensor for a technician;
- the held transitions are logged at most once per `flap_window_s`, with their count;
- once the alarm has stayed idle (the input clear) for `flap_settle_s`, the held alarm clears and so
  does the maintenance event (its value then: the transitions of the whole episode).

The alarm's own state machine and the composites built on it see every transition as before
(unwanted-alarm management still counts the detector's alarms); only the events are held. So do the
state interlocks (interlocks.py): they follow the real input, so a loose wire does not block the
building's leak valves while its alarm is held raised (RuleEngine._emit); the actions of the
flapping rule itself follow its events. Constant memory: the last `flap_limit + 1` transition times.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from citynerve.gateway.api import Event, EventState, Severity
from citynerve.gateway.rules.restored import RestoredTimeError, late, shown
from citynerve.gateway.rules.snapdata import NEVER, latest, number, whole

if TYPE_CHECKING:
    from citynerve.gateway.rules.instance import RuleInstance

log = logging.getLogger("citynerve.gateway.rules")

FLAP_KIND = "input_flapping"
# The defaults of a rule's `flap_limit`, `flap_window_s` and `flap_settle_s` (rules/kinds.py),
# also those of the household rules (rules/household.py).
FLAP_LIMIT = 6
FLAP_WINDOW_S = 60.0
FLAP_SETTLE_S = 300.0


class Verdict(enum.Enum):
    SEND = 0  # the transition's event goes out as usual
    HOLD = 1  # flapping: no event
    START = 2  # it starts flapping: the event goes out if it is a raise, then the maintenance event


class FlapDamper:
    """Counts one rule instance's transitions and says which of their events go out (see the module).

    `limit` 0 turns it off: every transition is sent."""

    __slots__ = (
        "flapping",
        "last",
        "limit",
        "logged",
        "logged_at",
        "settle_s",
        "since",
        "times",
        "total",
        "window_s",
    )

    def __init__(self, limit: int, window_s: float, settle_s: float) -> None:
        self.limit, self.window_s, self.settle_s = limit, window_s, settle_s
        self.times: list[float] = []  # the last transitions' times (at most limit + 1)
        self.flapping = False
        self.since = NEVER  # when the flapping began
        self.last = NEVER  # the last transition
        self.total = 0  # transitions of this flapping, the ones that started it included
        self.logged_at = NEVER  # the last log line of held transitions
        self.logged = 0  # held transitions since that line

    def transition(self, ts: float) -> Verdict:
        """The alarm raised or cleared at `ts`."""
        if not self.limit:
            return Verdict.SEND
        if self.flapping:
            self.last = ts
            self.total += 1
            self.logged += 1
            return Verdict.HOLD
        self.times.append(ts)
        if len(self.times) > self.limit + 1:
            del self.times[0]
        if len(self.times) <= self.limit or ts - self.times[0] > self.window_s:
            return Verdict.SEND
        self.flapping, self.since, self.last, self.total = True, ts, ts, len(self.times)
        self.logged_at, self.logged = ts, 0
        return Verdict.START

    def log_due(self, ts: float) -> int:
        """Held transitions to log now (0: not yet, at most one line per window)."""
        if not self.logged or (self.logged_at != NEVER and ts - self.logged_at < self.window_s):
            return 0
        n, self.logged, self.logged_at = self.logged, 0, ts
        return n

    def settled(self, now: float, idle: bool) -> bool:
        """Flapping, and the alarm `idle` with no transition for `settle_s` by `now`."""
        return self.flapping and idle and now - self.last >= self.settle_s

    def deadline(self) -> float:
        """When the flapping may settle (the alarm idle by then)."""
        return self.last + self.settle_s

    def reset(self) -> None:
        """The flapping ended (or its state is damaged, or the platform was told it ended)."""
        self.times.clear()
        self.flapping, self.since, self.last, self.total = False, NEVER, NEVER, 0
        self.logged_at, self.logged = NEVER, 0

    @property
    def idle(self) -> bool:
        """Nothing to keep: not flapping, no transition counted."""
        return not self.flapping and not self.times

    def snapshot(self) -> list[Any]:
        return [self.flapping, self.since, self.last, self.total, list(self.times)]

    def restore(self, data: Any) -> None:
        flapping, since, last, total, times = data
        if not isinstance(flapping, bool) or not isinstance(times, list):
            raise ValueError(f"not a flap damper's state: {data!r}")
        self.times = [number(t) for t in times][-(self.limit + 1) :]
        self.flapping, self.since, self.last, self.total = flapping, number(since), number(last), whole(total)
        self.logged_at, self.logged = NEVER, 0  # the first held transition after a restart is logged

    def shift(self, delta: float) -> None:
        """Move the stored times by `delta` s (a step of the wall clock, a restore on a clock behind)."""
        self.times = [t + delta for t in self.times]
        if self.flapping:  # its times are set
            self.since += delta
            self.last += delta
            if self.logged_at != NEVER:
                self.logged_at += delta

    def latest_time(self) -> float:
        """The latest stored time (NEVER if none): checked at a restore."""
        return latest(self.since, self.last, *self.times)


def notice(inst: RuleInstance, raised: bool, ts: float) -> Event:
    """The maintenance event of a flapping rule instance: raised when it starts (value: the
    transitions in the window), cleared when it settled (value: the transitions of the episode)."""
    flap, rule = inst.flap, inst.rule
    if raised:
        text = (
            f"rule {rule.id} flapping: {flap.total} raises and clears within {flap.window_s:g} s; "
            f"its alarm is held raised until clear for {flap.settle_s:g} s: check the wiring and the sensor"
        )
    else:
        text = f"rule {rule.id} no longer flapping ({flap.total} raises and clears held back)"
    # A technician's job: the device's location, not the alarm's escalation contacts.
    attrs = {k: v for k, v in inst.attrs.items() if k != "escalation"}
    attrs["alarm_kind"] = inst.kind
    state = EventState.RAISED if raised else EventState.CLEARED
    return Event(inst.device_id, FLAP_KIND, state, Severity.MINOR, ts, rule.id, flap.total, text, attrs)


class Flapping:
    """The engine's rule instances flapping now (their alarms held raised), and their state across
    a restart: the snapshot's `flapping` object (an older snapshot has none: every damper starts
    fresh, and the alarm registry's held alarms then clear at start as no longer active)."""

    def __init__(self) -> None:
        self.held: set[RuleInstance] = set()

    def deadline(self, now: float) -> float:
        """When the next flapping instance may settle (inf if none; now + 60 s for one overdue, its
        alarm not idle): a replay ticks then."""
        due = (i.flap.deadline() for i in self.held)
        return min((d if d > now else now + 60.0 for d in due), default=math.inf)

    @staticmethod
    def snapshot(instances: Mapping[str, RuleInstance]) -> dict[str, list[Any]]:
        return {k: i.flap.snapshot() for k, i in instances.items() if not i.flap.idle}

    def restore(
        self, instances: Mapping[str, RuleInstance], data: object, shift: float, saved_at: float | None = None
    ) -> None:
        """Restore the dampers of a snapshot's `flapping`, their times moved by `shift`; a damaged
        one (a time later than the snapshot's `saved_at`, too: rules/restored.py) starts fresh."""
        if not isinstance(data, Mapping):
            return
        for key, entry in data.items():
            inst = instances.get(key)
            if inst is None:
                continue
            try:
                inst.flap.restore(entry)
                if late(t := inst.flap.latest_time(), saved_at):
                    raise RestoredTimeError(inst.rule.id, inst.device_id, "flapping time", t, saved_at or 0.0)
            except Exception as err:
                log.warning("rules snapshot: cannot restore the flapping of %s (%s): fresh", key, shown(err))
                inst.flap.reset()
                continue
            inst.flap.shift(shift)
            if inst.flap.flapping:
                self.held.add(inst)

    def forget(self, held: set[tuple[str, str, str]]) -> int:
        """After a restart: instances whose held alarm or notice the alarm registry (newer than the
        snapshot) no longer holds settled before the stop: they start fresh. Returns how many."""
        gone = [
            i for i in self.held if not {(i.device_id, k, i.rule.id) for k in (i.kind, FLAP_KIND)} <= held
        ]
        for inst in gone:
            log.warning("rule %s on %s stopped flapping before the stop", inst.rule.id, inst.device_id)
            self.held.discard(inst)
            inst.flap.reset()
        return len(gone)
