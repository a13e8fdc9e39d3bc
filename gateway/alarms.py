"""The one registry of active alarms: what every view (status page, `citynerve status`, /metrics, the
platform's retained status) reads.

Every event, whoever raised it (rules, drivers such as the fire panel and BTHome, bus owners'
offline and fault detection, the bus supervisor), passes through the pipeline's `event`, which
applies it here: a RAISED event makes its alarm active until the CLEARED event with the same name
(device_id, kind, rule, subject), see `citynerve.gateway.api.Event`. One-shot reports are never active.

The active set survives a restart: it is kept in the store, one row per alarm (the kept set
`KEPT`), saved within about a second of a change and at stop, and restored before the buses start;
a save writes the rows of the alarms changed since the last and deletes those cleared (the whole set
as one value was megabytes a second in a fault storm). Restored alarms are marked `restored` until
their source says something about them again.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from citynerve.gateway.api import Event, EventState, KeptStore, Severity, Value

log = logging.getLogger("citynerve.alarms")

KEPT = "alarms"  # kept set: one row per active alarm, keyed by its name as a JSON array
STATE_KEY = "alarms.active"  # state: the whole set in one value, before KEPT held it
SNAPSHOT_VERSION = 1
MAX_ACTIVE = 10_000  # a bound on what a flood of distinct alarms can hold in memory
MAX_STATUS_ALARMS = 50  # the retained status message lists at most this many (the count is exact)
WILDCARD = "*"

AlarmKey = tuple[str, str, str, str]  # device_id, kind, rule, subject


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    """A raised alarm not yet cleared."""

    device_id: str
    kind: str
    rule: str
    subject: str
    severity: Severity
    raised_at: float  # wall clock of the RAISED event (a record stamp, not a duration)
    value: Value
    message: str
    event_id: str
    restored: bool = False  # restored at start from the last run's state
    maintenance: bool = False  # raised while its device was in maintenance mode (citynerve.gateway.operator)
    acked_by: str | None = None  # acknowledged (silenced) by an operator: still listed until cleared
    acked_at: float | None = None  # wall clock of the acknowledgement (a record stamp)
    by_rules: bool = False  # raised by the rule engine: cleared once its rule is no longer configured

    @property
    def key(self) -> AlarmKey:
        return (self.device_id, self.kind, self.rule, self.subject)

    def to_dict(self) -> dict[str, Any]:
        """What the views show (status, page, the platform's retained status)."""
        d = asdict(self)
        d["severity"] = self.severity.name.lower()
        del d["by_rules"]  # the registry's own bookkeeping: saved, not shown
        return d

    def cleared(self, message: str, ts: float) -> Event:
        """The CLEARED event that ends this alarm (when its source can no longer say so itself)."""
        return Event(
            self.device_id,
            self.kind,
            EventState.CLEARED,
            self.severity,
            ts,
            self.rule,
            self.value,
            message,
            subject=self.subject,
        )


def alarm_key(event: Event) -> AlarmKey:
    return (event.device_id, event.kind, event.rule, event.subject)


class ActiveAlarms:
    """Raised and not cleared, by alarm name. Synchronous and cheap: the pipeline calls `apply`."""

    def __init__(self, *, max_active: int = MAX_ACTIVE) -> None:
        self._active: dict[AlarmKey, ActiveAlarm] = {}
        self._max = max_active
        self._changed: set[AlarmKey] = set()  # names whose rows the next save writes or deletes
        self._forget: set[str] = set()  # rows naming no alarm (damaged, or older than the value)
        self._value_left = False  # the single value of a version before the rows: the next save deletes it
        self.dropped = 0  # raises refused because the registry was full
        self.unreadable = False  # the last run's snapshot could not be read (it knows nothing)
        self._rules: frozenset[str] = frozenset()  # the rule engine's rule ids (`reconcile`)

    def __len__(self) -> int:
        return len(self._active)

    @property
    def dirty(self) -> bool:
        """Changed since the last save."""
        return bool(self._changed or self._forget or self._value_left)

    def apply(self, event: Event) -> bool:
        """Take one event; returns True when the active set changed."""
        if event.one_shot:
            if event.subject == WILDCARD:
                return self._clear_where(lambda k: k[0] == event.device_id and k[2] == event.rule)
            return False
        key = alarm_key(event)
        if event.state is EventState.CLEARED:
            if event.subject == WILDCARD:
                return self._clear_where(lambda k: k[:3] == key[:3])
            if self._active.pop(key, None) is None:
                return False
            self._changed.add(key)
            return True
        if key not in self._active and len(self._active) >= self._max:
            self.dropped += 1
            if self.dropped == 1:
                log.error(
                    "alarm registry full (%d): %s on %s not listed", self._max, event.kind, event.device_id
                )
            return False
        was = self._active.get(key)
        self._active[key] = ActiveAlarm(
            event.device_id,
            event.kind,
            event.rule,
            event.subject,
            event.severity,
            event.ts,
            event.value,
            event.message,
            event.id,
            maintenance=bool(event.attrs.get("maintenance")),
            # raised again while still active: an acknowledgement holds until the alarm clears
            acked_by=was.acked_by if was is not None else None,
            acked_at=was.acked_at if was is not None else None,
            by_rules=event.rule in self._rules,
        )
        self._changed.add(key)
        return True

    def acknowledge(
        self,
        device_id: str,
        kind: str,
        *,
        by: str,
        ts: float,
        rule: str | None = None,
        subject: str | None = None,
    ) -> list[ActiveAlarm]:
        """Mark the active alarms of `device_id` and `kind` (and `rule`, `subject` when given)
        acknowledged by `by`: they stay listed, marked, until their CLEARED event. Returns them."""
        done = []
        for k, a in list(self._active.items()):
            if k[0] != device_id or k[1] != kind:
                continue
            if (rule is not None and k[2] != rule) or (subject is not None and k[3] != subject):
                continue
            self._active[k] = replace(a, acked_by=by, acked_at=ts)
            self._changed.add(k)
            done.append(self._active[k])
        return done

    def _clear_where(self, match: Any) -> bool:
        gone = [k for k in self._active if match(k)]
        for k in gone:
            del self._active[k]
        self._changed.update(gone)
        return bool(gone)

    def active(self) -> list[ActiveAlarm]:
        """Most severe first, then newest first."""
        return sorted(self._active.values(), key=lambda a: (-int(a.severity), -a.raised_at))

    def devices_with(self, kind: str, rule: str | None = None) -> set[str]:
        """Devices with an active alarm of `kind` (and `rule`): after a restart, the sources of
        device_offline and device_fault start those devices in that state, so they clear it."""
        return {k[0] for k in self._active if k[1] == kind and (rule is None or k[2] == rule)}

    def counts(self) -> dict[str, int]:
        """Active alarms by severity name (every severity, zeros included)."""
        out = {s.name.lower(): 0 for s in Severity}
        for a in self._active.values():
            out[a.severity.name.lower()] += 1
        return out

    def to_status(self, limit: int | None = None) -> list[dict[str, Any]]:
        alarms = self.active()
        return [a.to_dict() for a in (alarms if limit is None else alarms[:limit])]

    def reconcile(
        self, rules: Collection[str], still_active: Iterable[tuple[str, str, str]]
    ) -> list[ActiveAlarm]:
        """After a restart or reload, `rules` being the rule engine's rule ids: drop restored alarms
        of those rules that the engine does not hold active (its own snapshot, older by up to its
        interval, is the truth for its rules), and alarms the engine raised under a rule it no
        longer has (removed or renamed in the config: nothing would ever clear them, nor their
        interlock entries). Returns them, so the caller tells the platform they are cleared.

        Whether the engine raised an alarm is recorded when it is raised, by its rule id (a
        driver's or bus owner's alarm names its own source, e.g. `panel:gst`, `bus.offline`);
        an alarm saved before that was recorded counts as the engine's if its rule is one now."""
        self._rules = frozenset(rules)
        keep = set(still_active)
        gone = [
            a
            for k, a in self._active.items()
            if (a.restored and k[2] in rules and (a.device_id, a.kind, a.rule) not in keep)
            or (a.by_rules and k[2] not in rules)
        ]
        self._clear_where(lambda k: any(k == a.key for a in gone))
        for k, a in self._active.items():
            if not a.by_rules and k[2] in rules:
                self._active[k] = replace(a, by_rules=True)
                self._changed.add(k)
        return gone

    def forget_devices(self, keep: Collection[str]) -> list[ActiveAlarm]:
        """Drop the alarms of devices (and buses) not in `keep` (removed from the config); returns
        them, so the caller tells the platform they are cleared."""
        gone = [a for a in self._active.values() if a.device_id not in keep]
        for a in gone:
            del self._active[a.key]
        self._changed.update(a.key for a in gone)
        return gone

    # -- persistence -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {"version": SNAPSHOT_VERSION, "active": [a.to_dict() for a in self._active.values()]}

    def restore(self, data: Any) -> int:
        """Take a snapshot; malformed entries are skipped (logged once). Returns how many were taken."""
        if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
            log.warning("alarm registry snapshot unreadable: starting empty")
            self.unreadable = True
            return 0
        n = 0
        bad = 0
        for item in data.get("active") or []:
            try:
                alarm = ActiveAlarm(
                    device_id=str(item["device_id"]),
                    kind=str(item["kind"]),
                    rule=str(item["rule"]),
                    subject=str(item["subject"]),
                    severity=Severity[str(item["severity"]).upper()],
                    raised_at=float(item["raised_at"]),
                    value=item.get("value") if not isinstance(item.get("value"), list | dict) else None,
                    message=str(item.get("message", "")),
                    event_id=str(item.get("event_id", "")),
                    restored=True,
                    maintenance=bool(item.get("maintenance", False)),
                    acked_by=str(item["acked_by"]) if item.get("acked_by") is not None else None,
                    acked_at=float(item["acked_at"]) if item.get("acked_at") is not None else None,
                    by_rules=bool(item.get("by_rules", False)),
                )
            except (KeyError, TypeError, ValueError):
                bad += 1
                continue
            if not math.isfinite(alarm.raised_at) or len(self._active) >= self._max:
                bad += 1
                continue
            self._active[alarm.key] = alarm
            n += 1
        if bad:
            log.warning("alarm registry snapshot: %d malformed entries skipped", bad)
        return n

    async def load(self, store: KeptStore) -> int:
        """Take the last run's alarms from their rows, or from the one value a version before the
        rows saved (newer than any rows beside it: an update's rollback left those). Nothing is
        written here: the first save moves the value into rows and deletes damaged rows (a stop
        before it finds them as they were)."""
        rows = await store.kept(KEPT)
        raw = await store.get(STATE_KEY)
        if raw is not None:
            self._value_left = True
            n = self._restore_value(raw)
        else:
            n = self.restore({"version": SNAPSHOT_VERSION, "active": [_loads(v) for v in rows.values()]})
        self._forget = set(rows) - {_row_key(k) for k in self._active}
        self._changed = {k for k in self._active if raw is not None or _row_key(k) not in rows}
        if n:
            log.warning("%d alarms still active from the last run", n)
        return n

    def _restore_value(self, raw: str) -> int:
        if not raw:
            return 0
        try:
            data = json.loads(raw)
        except ValueError:
            log.warning("alarm registry snapshot is not JSON: starting empty")
            self.unreadable = True
            return 0
        return self.restore(data)

    async def save(self, store: KeptStore) -> None:
        """Write the rows of the alarms changed since the last save and delete those cleared, in one
        commit (a failure leaves them for the next try)."""
        if not self.dirty:
            return
        changed, forget, value_left = self._changed, self._forget, self._value_left
        self._changed, self._forget = set(), set()
        put = {_row_key(k): _dumps(a) for k in changed if (a := self._active.get(k)) is not None}
        gone = forget | {_row_key(k) for k in changed if k not in self._active}
        try:
            await store.keep(KEPT, put, gone, state={STATE_KEY: None} if value_left else None)
        except Exception:
            self._changed |= changed
            self._forget |= forget
            raise
        if value_left:
            self._value_left = False


def _row_key(key: AlarmKey) -> str:
    return json.dumps(list(key), separators=(",", ":"))


def _dumps(alarm: ActiveAlarm) -> str:
    return json.dumps(alarm.to_dict() | {"by_rules": alarm.by_rules}, default=str, separators=(",", ":"))


def _loads(row: str) -> Any:
    """A row's alarm as `restore` takes it (a damaged row: None, skipped there)."""
    try:
        return json.loads(row)
    except ValueError:
        return None
