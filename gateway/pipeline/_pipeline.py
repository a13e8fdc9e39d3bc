"""The reading pipeline: driver samples -> normalize -> rules -> report by exception -> outbox writer."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from citynerve.gateway.alarms import ActiveAlarms
from citynerve.gateway.api import (
    DeviceConfig,
    Event,
    EventState,
    PointConfig,
    Quality,
    Reading,
    RulesFailedError,
    Sample,
    SampleBatch,
    Severity,
    Value,
)
from citynerve.gateway.pipeline.derived import MAX_INT, AnyDerivation, derivations, derive, derived_points

log = logging.getLogger(__name__)

_GOOD, _BAD, _STALE = Quality.GOOD, Quality.BAD, Quality.STALE
_NONE_TYPE = type(None)

RULE_FAULT_KIND = "device_fault"
RULE_FAULT_RULE = "pipeline.rules"


class RulesHook(Protocol):
    """What the rules engine offers the pipeline."""

    def evaluate(self, readings: Sequence[Reading]) -> Sequence[Event]:
        """See every normalized reading (reported or not); return the events they cause. A rule that
        raises: RulesFailedError, with the events of the others."""
        ...

    def tick(self, now: float) -> Sequence[Event]:
        """Time passed (missing-data and hold-time rules); return the events that causes."""
        ...


class NoRules:
    """The rules hook when no rules are configured: no events."""

    def evaluate(self, readings: Sequence[Reading]) -> Sequence[Event]:
        return ()

    def tick(self, now: float) -> Sequence[Event]:
        return ()


_NO_RULES = NoRules()


class ReadingSink(Protocol):
    """Where the pipeline delivers what must be stored (OutboxWriter is one)."""

    def put_readings(self, readings: Sequence[Reading]) -> None: ...

    def put_event(self, event: Event) -> None: ...


@dataclass(frozen=True, slots=True)
class PipelineCounters:
    readings_in: int  # samples received for known points
    reported: int  # readings passed to the sink
    suppressed: int  # readings held back by report by exception
    unknown_points: int  # samples for points not in the device's config (or disabled), dropped
    unknown_devices: int  # batches from devices the pipeline does not know, dropped
    bad_values: int  # samples whose value was unusable (NaN, infinity, odd type): stored as BAD
    rule_errors: int  # exceptions raised by the rules hook (logged, never raised to the bus)
    events: int  # events passed to the sink

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Norm:
    """How to normalize one point and when to report it: shared by every device whose point has the
    same settings (the devices of one profile), so 1,000 meters hold one per profile point."""

    __slots__ = ("deadband", "identity", "max_interval", "name", "offset", "scale", "unit")

    def __init__(self, name: str, cfg: PointConfig) -> None:
        self.name = name
        self.scale = cfg.scale
        self.offset = cfg.offset
        # Keep ints as ints (counters, status words) when no scaling is configured.
        self.identity = cfg.scale == 1.0 and cfg.offset == 0.0
        self.unit = cfg.unit
        self.deadband = cfg.deadband
        self.max_interval = cfg.max_interval_s


def _norm_key(name: str, cfg: PointConfig) -> tuple[object, ...]:
    return (name, cfg.scale, cfg.offset, cfg.unit, cfg.deadband, cfg.max_interval_s)


def _norm_key_of(norm: _Norm) -> tuple[object, ...]:
    return (norm.name, norm.scale, norm.offset, norm.unit, norm.deadband, norm.max_interval)


# A device's point state is one flat list, _W slots per point in the order of its `_Norm`s (the hot
# path): the last normalized value (for status), its time (None: never read) and quality; the last
# reported value, when it was reported (None: report the next one) and its quality; whether STALE
# was sent. 13,000 points do not each hold an object (104 -> 56 bytes a point), nor a `Reading`:
# `latest` builds one when a status page asks.
_V, _TS, _Q, _LV, _LTS, _LQ, _STALE_SENT = range(7)
_W = 7
_FRESH: tuple[Any, ...] = (None, None, _GOOD, None, None, _GOOD, False)

# Per device: point name -> position and the norms in that order (both shared by the devices of
# one profile), and the device's own flat slots. A device not read yet holds its table's fresh
# slots, one tuple shared by the devices of the profile: its own list is made by its first batch,
# so 1,000 meters do not each hold 736 bytes of None before the first poll round (the gateway's
# peak RSS is the inventory publish at the first connect, before most devices are read).
_State = tuple[dict[str, int], tuple[_Norm, ...], list[Any] | tuple[Any, ...]]
_Table = tuple[dict[str, int], tuple[_Norm, ...], tuple[Any, ...]]


class Pipeline:
    """Turns driver batches into stored readings. Synchronous and fast: the bus owners call it.

    For each sample of a known point: normalize (value * scale + offset for numbers; bool and
    str untouched; None, NaN, infinities and ints of 2**64 or more (`MAX_INT`) become value None
    with quality BAD; unit from the point config), give every normalized reading to the rules,
    then report by exception: a reading goes to the sink when it is the point's first, its quality
    changed, a number moved more than the deadband (deadband 0: any change), any other value
    changed, `max_interval_s` passed since the last report, or the clock went backwards. Nothing
    here raises to the caller.
    """

    def __init__(
        self,
        devices: Mapping[str, DeviceConfig],
        sink: ReadingSink,
        rules: RulesHook = _NO_RULES,
        *,
        alarms: ActiveAlarms | None = None,
    ) -> None:
        self.sink = sink
        self.rules = rules
        self.alarms = alarms if alarms is not None else ActiveAlarms()
        # Devices whose last batch made the rules raise (restored: cleared by their next batch).
        self._rule_faulted: dict[str, str] = dict.fromkeys(
            self.alarms.devices_with(RULE_FAULT_KIND, RULE_FAULT_RULE), "rules raised before the last restart"
        )
        self._norms: dict[tuple[object, ...], _Norm] = {}
        self._tables: dict[tuple[int, ...], _Table] = {}
        self._points: dict[str, _State] = {
            dev_id: self._device_points(dev, None) for dev_id, dev in devices.items()
        }
        # Points derived from a reading and an installation figure (derived.py): few devices have one.
        self._derived: dict[str, tuple[AnyDerivation, ...]] = {
            dev_id: table for dev_id, dev in devices.items() if (table := derivations(dev))
        }
        # Per device, the last samples a derivation reads from another batch (a lamp's relay).
        self._derived_seen: dict[str, dict[str, Sample]] = {}
        self.readings_in = 0
        self.reported = 0
        self.suppressed = 0
        self.unknown_points = 0
        self.unknown_devices = 0
        self.bad_values = 0
        self.rule_errors = 0
        self.events = 0
        # set by the runtime (citynerve.gateway.operator)
        self.mark_event: Callable[[Event], None] | None = None

    def update_devices(self, devices: Mapping[str, DeviceConfig]) -> None:
        """Take a reloaded device list: points whose config is unchanged keep their report-by-exception
        state and last reading; new points start fresh; removed devices and points are forgotten."""
        old = self._points
        self._norms = {}
        self._tables = {}
        self._derived = {dev_id: tab for dev_id, dev in devices.items() if (tab := derivations(dev))}
        self._derived_seen = {k: v for k, v in self._derived_seen.items() if k in self._derived}
        self._points = {dev_id: self._device_points(dev, old.get(dev_id)) for dev_id, dev in devices.items()}

    def _device_points(self, dev: DeviceConfig, kept: _State | None) -> _State:
        """A device's point state; points in `kept` whose settings are unchanged keep theirs."""
        norms: list[_Norm] = []
        slots: list[Any] = []
        for name, cfg in _with_derived(dev).items():
            if not cfg.enabled:
                continue
            key = _norm_key(name, cfg)
            norm = self._norms.get(key)
            if norm is None:
                norm = self._norms[key] = _Norm(name, cfg)
            j = None if kept is None else kept[0].get(name)
            if kept is not None and j is not None and _norm_key_of(kept[1][j]) == key:
                slots.extend(kept[2][j * _W : (j + 1) * _W])
            else:
                slots.extend(_FRESH)
            norms.append(norm)
        table = self._tables.get(tuple(map(id, norms)))
        if table is None:
            index = {n.name: i for i, n in enumerate(norms)}
            table = self._tables[tuple(map(id, norms))] = (index, tuple(norms), _FRESH * len(norms))
        if kept is None or type(kept[2]) is tuple:
            return table  # not read yet: the shared fresh slots (submit makes the device's list)
        return table[0], table[1], slots

    def submit(self, batch: SampleBatch) -> None:
        """Normalize, evaluate rules, report by exception, hand to the sink."""
        state = self._points.get(batch.device_id)
        if state is None:
            self.unknown_devices += 1
            return
        index, norms, slots = state
        if isinstance(slots, tuple):  # the device's first batch: its own slots from the shared fresh ones
            slots = list(slots)
            self._points[batch.device_id] = (index, norms, slots)
        if self._derived and (derived := self._derived.get(batch.device_id)) is not None:
            batch = derive(batch, derived, self._derived_seen.setdefault(batch.device_id, {}))
        device_id = batch.device_id
        ts = batch.ts
        normalized: list[Reading] = []
        reported: list[Reading] = []
        unknown = 0
        for sample in batch.samples:
            i = index.get(sample.point)
            if i is None:
                unknown += 1
                continue
            norm = norms[i]
            at = i * 7  # _W, and the slots' offsets below as literals: no global lookups here
            v = sample.value
            q = sample.quality
            t = type(v)
            if t is float or t is int:
                if t is int and not -MAX_INT < v < MAX_INT:  # type: ignore[operator]
                    v = None  # beyond 64 bits: no register holds it (nor can the outbox write it)
                elif not norm.identity:
                    v = v * norm.scale + norm.offset  # type: ignore[operator]
                if v is None or ((t is float or not norm.identity) and not -math.inf < v < math.inf):  # type: ignore[operator]
                    v = None  # NaN, infinity, beyond 64 bits: unusable
                    t = _NONE_TYPE
                    q = _BAD
                    self.bad_values += 1
            elif v is None:
                q = _BAD
            elif t is not bool and t is not str:
                v, q = self._odd_value(v, norm)
                t = type(v)
            reading = Reading(device_id, norm.name, v, norm.unit, ts, q)
            slots[at] = v
            slots[at + 1] = ts  # _TS
            slots[at + 2] = q  # _Q
            normalized.append(reading)
            # Report by exception.
            last_ts = slots[at + 4]  # _LTS
            if (
                last_ts is not None
                and q is slots[at + 5]  # _LQ
                and ts >= last_ts
                and ts - last_ts < norm.max_interval
            ):
                lv = slots[at + 3]  # _LV
                lt = type(lv)
                if (t is float or t is int) and (lt is float or lt is int):
                    if not abs(v - lv) > norm.deadband:  # type: ignore[operator]
                        continue
                elif lt is type(v) and lv == v:
                    continue
            slots[at + 3] = v  # _LV
            slots[at + 4] = ts  # _LTS
            slots[at + 5] = q  # _LQ
            slots[at + 6] = False  # _STALE_SENT
            reported.append(reading)
        n = len(normalized)
        self.readings_in += n
        self.unknown_points += unknown
        if not n:
            return
        self.reported += len(reported)
        self.suppressed += n - len(reported)
        try:
            events = self.rules.evaluate(normalized)
        except Exception as err:
            self.rule_errors += 1
            # The other rules' events of the batch still go out (a smoke alarm beside a bad rule).
            events = err.events if isinstance(err, RulesFailedError) else ()
            if device_id not in self._rule_faulted:
                # The device is faulted (an event, in status) until its next batch evaluates.
                log.exception("rules failed on a batch from %s", device_id)
                reason = f"rules raised {err!r}"
                self._rule_faulted[device_id] = reason
                self.event(self._rule_fault(device_id, EventState.RAISED, ts, reason))
        else:
            if device_id in self._rule_faulted:
                del self._rule_faulted[device_id]
                log.warning("rules evaluate %s again", device_id)
                self.event(self._rule_fault(device_id, EventState.CLEARED, ts, "rules evaluate again"))
        for event in events:
            self.event(event)
        if reported:
            self.sink.put_readings(reported)

    def _odd_value(self, v: object, pt: _Norm) -> tuple[Value, Quality]:
        # Drivers should give bool/int/float/str/None; anything else (Decimal, numpy...) is
        # converted when it is a plain number, else stored as None with quality BAD.
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int subclass beyond floats
            f = math.nan
        if not pt.identity:
            f = f * pt.scale + pt.offset
        if math.isfinite(f):  # after scaling: Decimal("1e308") x 10 is an infinity
            return f, _GOOD
        self.bad_values += 1
        log.debug("point %s: unusable value %r", pt.name, v)
        return None, _BAD

    def event(self, event: Event) -> None:
        """Every event (buses, drivers, rules, actions, supervisors) passes here: it updates the
        registry of active alarms, then goes to the sink."""
        self.events += 1
        if self.mark_event is not None:
            self.mark_event(event)  # operator flags (a device in maintenance) before anyone sees it
        self.alarms.apply(event)
        self.sink.put_event(event)

    @staticmethod
    def _rule_fault(device_id: str, state: EventState, ts: float, reason: str) -> Event:
        return Event(
            device_id,
            RULE_FAULT_KIND,
            state,
            Severity.MAJOR,
            ts,
            RULE_FAULT_RULE,
            None,
            reason,
        )

    def tick(self, now: float) -> None:
        """Let time-based rules run (the runtime calls this about once a second)."""
        try:
            events = self.rules.tick(now)
        except Exception:
            self.rule_errors += 1
            log.exception("rules tick failed")
            return
        for event in events:
            self.event(event)

    def mark_offline(self, device_id: str, ts: float) -> None:
        """The device stopped answering: report each point's last value once with quality STALE, so
        the platform shows it unavailable rather than frozen, and reset report by exception so the
        first good reading after recovery is always reported. Points never read are skipped. What
        derived points remember from other batches (a lamp's relay) is forgotten."""
        state = self._points.get(device_id)
        if state is None:
            self.unknown_devices += 1
            return
        self._derived_seen.pop(device_id, None)  # a relay read before the outage is no state now
        stale: list[Reading] = []
        _, norms, slots = state
        if isinstance(slots, tuple):
            return  # never read: nothing to mark
        for i, norm in enumerate(norms):
            at = i * _W
            if slots[at + _TS] is None or slots[at + _STALE_SENT]:
                continue
            reading = Reading(device_id, norm.name, slots[at], norm.unit, ts, _STALE)
            slots[at + _TS] = ts
            slots[at + _Q] = _STALE
            slots[at + _STALE_SENT] = True
            slots[at + _LTS] = None
            stale.append(reading)
        if stale:
            self.reported += len(stale)
            self.sink.put_readings(stale)

    def rule_fault(self, device_id: str) -> str | None:
        """Why the rules raised on the device's last batch (None: they evaluate it)."""
        return self._rule_faulted.get(device_id)

    def latest(self, device_id: str) -> dict[str, Reading]:
        """The last normalized reading per point (STALE ones while offline), for status pages."""
        state = self._points.get(device_id)
        if state is None:
            return {}
        _, norms, slots = state
        return {
            norm.name: Reading(device_id, norm.name, slots[at], norm.unit, slots[at + _TS], slots[at + _Q])
            for i, norm in enumerate(norms)
            if slots[(at := i * _W) + _TS] is not None
        }

    def counters(self) -> PipelineCounters:
        return PipelineCounters(
            readings_in=self.readings_in,
            reported=self.reported,
            suppressed=self.suppressed,
            unknown_points=self.unknown_points,
            unknown_devices=self.unknown_devices,
            bad_values=self.bad_values,
            rule_errors=self.rule_errors,
            events=self.events,
        )


def _with_derived(dev: DeviceConfig) -> dict[str, PointConfig]:
    """The device's points and the points the gateway derives for it (derived.py)."""
    extra = derived_points(dev)
    return {**dev.points, **{k: v for k, v in extra.items() if k not in dev.points}} if extra else dev.points
