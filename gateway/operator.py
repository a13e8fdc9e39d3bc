"""Operator controls: household away/back, device maintenance, alarm acknowledgement, action override.

The same requests come from the platform (signed commands, see citynerve.gateway.uplink.commands) and from the
local CLI (the control socket). Every change is

- durable: kept in the store's key/value state (`STATE_KEY`), written before the answer;
- audited: an `operator` event (one-shot, never an active alarm) goes upstream with who, what, until;
- visible: `snapshot()` is in `citynerve status`, on the status page and in the birth message.

End times. A request carries an end time (`until_ms`, wall clock) or a duration (`for_s`). The wall
end time is stored (it is what the operator meant, and the only reference that survives a reboot),
but while the gateway runs expiry is checked on the monotonic clock: at set time (and at start, from
the stored wall end time) the remaining time becomes a monotonic deadline, never longer than the
table's maximum (MAX_AWAY_S, MAX_MAINTENANCE_S). A wall-clock step (an operator setting the date)
therefore neither ends a maintenance window early nor stretches it.

A box without an RTC restores its flags with a wall clock that may read 1970 (or fake-hwclock's
saved time): the remaining time taken then is wrong, and the cap is the bound until the clock is
synchronised. When the runtime learns that it is (ClockSync), `rearm()` takes the deadlines again
from the stored wall end times (a window whose end passed ends at the next `expire()`); a window set
as a duration on this run keeps its monotonic deadline and gets its wall end corrected instead.

Maintenance. Events of a device in maintenance are not dropped and not held: they go upstream as
usual, with `attrs.maintenance = {"until": ..., "by": ...}`, and the alarm registry marks them
`maintenance`, so the platform can skip dispatch while the record stays complete (a manhole cover
opened by the crew is still logged, and its CLEARED event still closes the alarm).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from citynerve.gateway.alarms import ActiveAlarms
from citynerve.gateway.api import Event, EventState, PermanentError, Severity, StateStore

log = logging.getLogger("citynerve.operator")

STATE_KEY = "operator.state"
OPERATOR_KIND = "operator"
OPERATOR_RULE = "operator"
MAX_AWAY_S = 180 * 86400.0  # a stay in hospital; longer needs a new request
MAX_MAINTENANCE_S = 30 * 86400.0
MAX_WHO = 128
MAX_ENTRIES = 10_000

OPS = ("away", "back", "maintenance", "maintenance_end", "ack", "override")


class OperatorRequestError(PermanentError):
    """An operator request the gateway refuses; `reason` is a command reject reason
    (bad_value, unknown_device, unknown_alarm) so the platform can match on it."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class RulesControl(Protocol):
    """What the rule engine offers operator controls (RuleEngine.set_away / set_override)."""

    def set_away(self, device_id: str, away: bool) -> None: ...

    def set_override(self, device_id: str, action_id: str, on: bool) -> None: ...

    def serviced(self, device_id: str) -> list[str]: ...


@dataclass(slots=True)
class Window:
    """One away or maintenance flag: since (wall), until (wall end, None: open), by whom."""

    target: str
    by: str
    since: float
    until: float | None
    reason: str = ""
    deadline: float = math.inf  # monotonic; inf when open-ended
    for_duration: bool = False  # set on this run with for_s: the deadline is the reference (rearm)

    def to_dict(self, mono_now: float) -> dict[str, Any]:
        d: dict[str, Any] = {"target": self.target, "by": self.by, "since": self.since, "until": self.until}
        if self.reason:
            d["reason"] = self.reason
        if self.until is not None:
            d["remaining_s"] = round(max(0.0, self.deadline - mono_now), 1)
        return d


class OperatorControls:
    """The operator's flags on one gateway. Synchronous apart from the save (`request` is async)."""

    def __init__(
        self,
        *,
        store: StateStore,
        alarms: ActiveAlarms,
        events: Callable[[Event], None],
        devices: Callable[[], Mapping[str, Any]],
        rules: Callable[[], RulesControl | None],
        action_ids: Callable[[], set[str]],
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._alarms = alarms
        self._events = events
        self._devices = devices
        self._rules = rules
        self._action_ids = action_ids
        self._wall = wall
        self._mono = mono
        self.away: dict[str, Window] = {}
        self.maintenance: dict[str, Window] = {}
        self.overrides: dict[str, Window] = {}  # "device|action"

    # -- requests --------------------------------------------------------------------------------

    async def request(self, op: str, args: Mapping[str, Any], who: str) -> dict[str, Any]:
        """Carry out one operator request; saved before it returns. Raises OperatorRequestError."""
        who = str(who)[:MAX_WHO]
        now = self._wall()
        result: dict[str, Any]
        if op == "away":
            dev = self._device(args)
            until = self._until(args, MAX_AWAY_S, required=False)
            self.away[dev] = self._window(dev, who, now, until, duration=args.get("for_s") is not None)
            self._apply_away(dev, True)
            result = {"away": dev, "until": until}
        elif op == "back":
            dev = self._device(args)
            self.away.pop(dev, None)
            self._apply_away(dev, False)
            result = {"back": dev}
        elif op == "maintenance":
            dev = self._device(args)
            until = self._until(args, MAX_MAINTENANCE_S, required=True)
            reason = _text(args["reason"], "reason", 200) if args.get("reason") else ""
            duration = args.get("for_s") is not None
            self.maintenance[dev] = self._window(dev, who, now, until, reason, duration=duration)
            result = {"maintenance": dev, "until": until}
        elif op == "maintenance_end":
            dev = self._device(args)
            self.maintenance.pop(dev, None)
            rules = self._rules()
            # Ended by hand: the work is done, so history-based judgements of the device (a
            # detector's unwanted alarms) start afresh. A window that runs out proves nothing.
            reset = rules.serviced(dev) if rules is not None else []
            result = {"maintenance_end": dev, "reset": reset}
        elif op == "ack":
            dev = _text(args.get("device_id"), "device_id", 64)
            kind = _text(args.get("kind"), "kind", 64)
            rule = _opt_text(args.get("rule"), "rule")
            subject = _opt_text(args.get("subject"), "subject")
            done = self._alarms.acknowledge(dev, kind, by=who, ts=now, rule=rule, subject=subject)
            if not done:
                raise OperatorRequestError("unknown_alarm", f"no active {kind} alarm on {dev}")
            result = {"acknowledged": [a.to_dict() for a in done]}
        elif op == "override":
            dev = self._device(args)
            action = _text(args.get("action_id"), "action_id", 64)
            on = args.get("on")
            if not isinstance(on, bool):
                raise OperatorRequestError("bad_value", "on must be true or false")
            if action not in self._action_ids():
                raise OperatorRequestError("bad_value", f"no local action {action!r} in [rules]")
            rules = self._rules()
            if rules is not None:
                rules.set_override(dev, action, on)
            key = f"{dev}|{action}"
            if on:
                self.overrides[key] = self._window(key, who, now, None, duration=False)
            else:
                self.overrides.pop(key, None)
            result = {"override": {"device_id": dev, "action_id": action, "on": on}}
        else:
            raise OperatorRequestError(
                "bad_value", f"unknown operator request {op!r} (one of {', '.join(OPS)})"
            )
        self._audit(op, args, who, now, result)
        await self.save()
        return result

    def _device(self, args: Mapping[str, Any]) -> str:
        dev = _text(args.get("device_id"), "device_id", 64)
        if dev not in self._devices():
            raise OperatorRequestError("unknown_device", f"no device {dev!r}")
        return dev

    def _until(self, args: Mapping[str, Any], max_s: float, *, required: bool) -> float | None:
        now = self._wall()
        until_ms, for_s = args.get("until_ms"), args.get("for_s")
        if until_ms is not None and for_s is not None:
            raise OperatorRequestError("bad_value", "give until_ms or for_s, not both")
        if for_s is not None:
            if isinstance(for_s, bool) or not isinstance(for_s, int | float) or not _finite(for_s):
                raise OperatorRequestError("bad_value", "for_s must be a number of seconds")
            until = now + float(for_s)
        elif until_ms is not None:
            if isinstance(until_ms, bool) or not isinstance(until_ms, int) or abs(until_ms) > 2**62:
                raise OperatorRequestError("bad_value", "until_ms must be an integer (ms since the epoch)")
            until = until_ms / 1000
        elif required:
            raise OperatorRequestError("bad_value", "an end time is required (until_ms or for_s)")
        else:
            return None
        if until <= now:
            raise OperatorRequestError("bad_value", "the end time is in the past")
        if until - now > max_s:
            raise OperatorRequestError("bad_value", f"at most {max_s / 86400:g} days ahead")
        return until

    def _window(
        self, target: str, who: str, now: float, until: float | None, reason: str = "", *, duration: bool
    ) -> Window:
        if len(self.away) + len(self.maintenance) + len(self.overrides) >= MAX_ENTRIES:
            raise OperatorRequestError("bad_value", f"at most {MAX_ENTRIES} operator flags")
        w = Window(target, who, now, until, reason, for_duration=duration)
        self._arm(w, math.inf)  # `_until` checked the maximum
        return w

    def _arm(self, w: Window, max_s: float) -> None:
        """The monotonic deadline from the wall end time, taken now, at most `max_s` ahead (see the
        module docstring: the wall clock may be far behind before it is synchronised)."""
        if w.until is None:
            w.deadline = math.inf
        else:
            w.deadline = self._mono() + min(max_s, max(0.0, w.until - self._wall()))

    def rearm(self) -> bool:
        """The wall clock is synchronised now (the runtime calls this when it learns so): deadlines
        again from the wall end times; a window whose end passed ends at the next `expire()`. A
        window set as a duration keeps its deadline, and its wall end follows. True when a wall end
        changed (the caller saves)."""
        mono, wall, changed = self._mono(), self._wall(), False
        for table, max_s in ((self.away, MAX_AWAY_S), (self.maintenance, MAX_MAINTENANCE_S)):
            for w in table.values():
                if w.until is None:
                    continue
                if w.for_duration:
                    w.until, changed = wall + max(0.0, w.deadline - mono), True
                else:
                    self._arm(w, max_s)
        return changed

    def _apply_away(self, dev: str, away: bool) -> None:
        rules = self._rules()
        if rules is not None:
            rules.set_away(dev, away)

    def _audit(
        self, op: str, args: Mapping[str, Any], who: str, now: float, result: Mapping[str, Any]
    ) -> None:
        target = str(args.get("device_id", "")) or "gateway"
        until = result.get("until")
        attrs: dict[str, Any] = {"who": who, "what": op}
        if until is not None:
            attrs["until"] = until
        for k in ("kind", "rule", "action_id", "on", "reason"):
            if k in args:
                attrs[k] = args[k]
        log.warning("operator %s on %s by %s%s", op, target, who, f" until {until:.0f}" if until else "")
        self._events(
            Event(
                target,
                OPERATOR_KIND,
                EventState.RAISED,
                Severity.INFO,
                now,
                OPERATOR_RULE,
                None,
                f"{op} by {who}",
                attrs,
                one_shot=True,
            )
        )

    # -- time and events ----------------------------------------------------------------------------

    def expire(self) -> list[str]:
        """End the windows whose monotonic deadline passed (the runtime calls this every second).
        Returns what ended; each ending is audited and saved by the caller's `save`."""
        mono, ended = self._mono(), []
        for table, op in ((self.away, "back"), (self.maintenance, "maintenance_end")):
            for target, w in list(table.items()):
                if w.deadline <= mono:
                    del table[target]
                    if op == "back":
                        self._apply_away(target, False)
                    self._audit(op, {"device_id": target}, "expiry", self._wall(), {})
                    ended.append(f"{op} {target}")
        return ended

    def mark(self, event: Event) -> None:
        """Flag an event of a device in maintenance (the pipeline calls this for every event)."""
        w = self.maintenance.get(event.device_id)
        if w is not None and event.kind != OPERATOR_KIND and w.deadline > self._mono():
            event.attrs["maintenance"] = {"until": w.until, "by": w.by}

    def in_maintenance(self, device_id: str) -> bool:
        w = self.maintenance.get(device_id)
        return w is not None and w.deadline > self._mono()

    # -- status and persistence ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        mono = self._mono()
        return {
            "away": [w.to_dict(mono) for w in self.away.values()],
            "maintenance": [w.to_dict(mono) for w in self.maintenance.values()],
            "overrides": [w.to_dict(mono) for w in self.overrides.values()],
        }

    async def save(self) -> None:
        data = {
            name: [[w.target, w.by, w.since, w.until, w.reason] for w in table.values()]
            for name, table in (
                ("away", self.away),
                ("maintenance", self.maintenance),
                ("overrides", self.overrides),
            )
        }
        await self._store.put(STATE_KEY, json.dumps({"version": 1, **data}, separators=(",", ":")))

    async def load(self) -> int:
        """Restore the flags (re-applied to the rules); windows whose wall end passed while the
        gateway was down end now, audited. Returns how many flags are in force."""
        raw = await self._store.get(STATE_KEY)
        if not raw:
            return 0
        try:
            data = json.loads(raw)
            tables = {
                n: [
                    Window(str(t), str(b), float(s), None if u is None else float(u), str(r))
                    for t, b, s, u, r in data.get(n, [])
                ]
                for n in ("away", "maintenance", "overrides")
            }
        except (ValueError, TypeError, AttributeError) as err:
            log.warning("operator state unreadable (%s): starting without operator flags", err)
            return 0
        max_s = {"away": MAX_AWAY_S, "maintenance": MAX_MAINTENANCE_S, "overrides": math.inf}
        for name, windows in tables.items():
            table: dict[str, Window] = getattr(self, name)
            for w in windows:
                self._arm(w, max_s[name])
                table[w.target] = w
        for dev in self.away:
            self._apply_away(dev, True)
        rules = self._rules()
        if rules is not None:
            for key in self.overrides:
                dev, _, action = key.partition("|")
                rules.set_override(dev, action, True)
        if self.expire():
            await self.save()
        return len(self.away) + len(self.maintenance) + len(self.overrides)


def _text(v: object, name: str, max_len: int) -> str:
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise OperatorRequestError("bad_value", f"{name} must be a string of 1..{max_len} characters")
    return v


def _opt_text(v: object, name: str) -> str | None:
    return None if v is None else _text(v, name, 128)


def _finite(x: float) -> bool:
    """A finite number; an int beyond float range (10**400) is not one (math.isfinite would raise)."""
    try:
        return math.isfinite(x)
    except OverflowError:
        return False
