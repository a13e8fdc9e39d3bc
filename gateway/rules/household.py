"""The "check on this person" alarm of one household: a bed-foot sensor and the flat's water meter,
judged together (issue 18).

A bed sensor alone cannot tell a resident lying on the floor from one who cannot sleep and sits in
the kitchen; a water meter alone needs 12 h of silence. Together (the reasons, in order):

- `tap running while in bed`: two reads in a row show a tap's flow (`running_m3_h`) while the
  resident has been in bed for `settle_s` - a tap or hose left running (a washing machine's fills
  come and go);
- `out of bed at night, no water use`: the resident left the bed at night (or never went to bed by
  `night_start`) and for `night_out_s` neither came back nor used water (a sleepless resident who
  goes to the kitchen or the bathroom uses water; a fallen one does not);
- `out of bed at night for long`: out of bed since the night for `night_long_s` and no water use
  in the last `night_out_s` (a fall after a flush); after the night's end only while nobody has
  used water since it ended;
- `not up`: at `up_by` in bed (or out for less than `up_s`), not out of it for `up_s` since
  `day_starts`, and less than
  `morning_m3` used since `day_starts` (the morning routine shows on the meter even when an advert
  was lost); with the bed sensor silent, no water use at all this morning;
- `no water use while up`: out of bed and no water use for `quiet_s` (12 h, the published
  Changning / Longgang no-use window, field-protocols.md section 9; shorter windows raise on every
  day out: the door contact below tells an outing from a fall).

With the third signal, the flat's door contact and a PIR (`door`, `motion`;
gateway/rules/household_presence.py), while both nodes are fresh:

- `not home by HH:MM`: the resident went out (door closed, then nothing showed anyone home for
  `motion_quiet_s`) and is still out at `home_by` or later in the night (only if `home_by` is set);
  otherwise nothing is raised while the resident is out (an unannounced outing or visit is no fall);
- `out of bed at night, no movement`: out of bed at night, and no motion and no water use for
  `night_out_s` since the resident left the bed or last moved (a sleepless resident in the living
  room moves; one on the floor does not) - it replaces the two night reasons above;
- `no movement at home`: at home and out of bed, no motion and no water use for `still_s` - it
  replaces the 12 h water window (an outing is told apart by the door).

With only the PIR fresh, motion counts as activity in the night reason; the rest is judged as without
it. A silent door or PIR node raises a maintenance event of its own (not this alarm).

Unknown is not "fine" and not "alarm": with the meter silent the night reasons judge from the bed
alone (as the elderly-bed pack does); with the bed silent only the morning reason judges, from
water. What came before the first reading never raises. Constant memory per household.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from citynerve.gateway.api import Value
from citynerve.gateway.rules.conditions import Condition, as_bool, as_float
from citynerve.gateway.rules.flapping import FLAP_LIMIT, FLAP_SETTLE_S, FLAP_WINDOW_S
from citynerve.gateway.rules.household_config import HouseholdConfig, minutes
from citynerve.gateway.rules.household_presence import NODE_EVENT_KIND, NodeSilentCondition, Presence
from citynerve.gateway.rules.meter import LocalDays, MeterTrack, Step, spread
from citynerve.gateway.rules.snapdata import NEVER, latest, number, whole

DAY = 86400.0
EVENT_KIND = "check_on_person"
RUNNING_READS = 2  # a tap runs on; a washing machine's fills during a nap come and go


@dataclass(frozen=True, slots=True)
class HouseholdRule:
    """What the engine's rule instances read of a rule, for one household's alarm (no hold time of
    its own: each reason already waits its time)."""

    cfg: HouseholdConfig
    id: str = ""
    severity: str = "critical"
    message: str = ""
    escalate: tuple[str, ...] = ()
    suppress_when_away: bool = True
    hold_s: float = 0.0
    clear_hold_s: float = 0.0
    suppress_during: tuple[str, ...] = field(default=())
    event_kind: str = EVENT_KIND
    flap_limit: int = FLAP_LIMIT
    flap_window_s: float = FLAP_WINDOW_S
    flap_settle_s: float = FLAP_SETTLE_S

    @classmethod
    def of(cls, cfg: HouseholdConfig) -> HouseholdRule:
        return cls(
            cfg,
            cfg.rule_id,
            cfg.severity,
            f"check on this person (household {cfg.id}): {{value}}",
            cfg.escalate,
            cfg.suppress_when_away,
        )

    @classmethod
    def node(cls, cfg: HouseholdConfig) -> HouseholdRule:
        """The maintenance rule of the household's door and PIR nodes (raised on the silent node)."""
        return cls(
            cfg,
            f"{cfg.rule_id}.node",
            "minor",
            f"household {cfg.id}: node silent for {{value}} s, door / motion signal unknown",
            suppress_when_away=False,
            event_kind=NODE_EVENT_KIND,
        )

    def condition(self) -> Condition:
        """A fresh condition for this rule."""
        if self.event_kind == NODE_EVENT_KIND:
            return NodeSilentCondition(self.cfg.node_stale_s)
        return HouseholdCondition(self.cfg)


class HouseholdCondition(Condition):
    """See the module. `on_bed` / `on_water` take the two devices' readings; time drives the rest."""

    __slots__ = (
        "cfg",
        "changed",
        "changed_night",
        "cur",
        "days",
        "last_bed",
        "last_long_out",
        "last_use",
        "last_water",
        "meter",
        "morning_ref",
        "morning_use",
        "presence",
        "running",
        "use_from",
    )
    time_driven = True

    def __init__(self, cfg: HouseholdConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.days = LocalDays(cfg.tz)
        self.meter = MeterTrack(cfg.rollover_m3, cfg.max_step_m3)
        self.cur: bool | None = None  # in bed
        self.changed = 0.0  # when `cur` began
        self.changed_night = False  # `cur` began at night
        self.last_bed = 0.0
        self.last_long_out = NEVER  # end of the last absence of at least up_s
        self.last_water = 0.0  # last good meter read
        self.last_use = 0.0  # last read that showed someone using water
        self.morning_ref = 0.0  # the day start the morning use belongs to
        self.morning_use = 0.0
        self.running = 0  # reads in a row that showed a tap's flow while in bed
        self.use_from = NEVER  # the previous read of the last read that showed use (use came after)
        self.presence = Presence(cfg.motion_quiet_s, cfg.node_stale_s)

    # -- local time -------------------------------------------------------------------------------

    # The resident's times are read off the local clock; on a day the clock changes (DST) a time it
    # skips is the first instant after the gap and a repeated one its first pass (LocalDays).

    def _at(self, ts: float, hhmm: str) -> float:
        """When the local clock reaches hhmm on ts's local day."""
        return self.days.at(ts, minutes(hhmm))

    def _last(self, ts: float, hhmm: str) -> float:
        """When the local clock last reached hhmm at or before ts (today, else yesterday)."""
        return self.days.last(ts, minutes(hhmm))

    def _at_night(self, ts: float) -> bool:
        cfg = self.cfg
        s, e = self._at(ts, cfg.night_start), self._at(ts, cfg.night_end)
        if minutes(cfg.night_start) > minutes(cfg.night_end):
            return ts >= s or ts < e
        return s <= ts < e

    def _day_start(self, ts: float) -> float:
        """The resident's day (from `day_starts`) containing ts."""
        return self._last(ts, self.cfg.day_starts)

    # -- readings ---------------------------------------------------------------------------------

    def on_bed(self, value: Value, ts: float) -> bool | None:
        b = as_bool(value)
        if b is None:
            return None
        if self.cur is None:
            self.last_long_out = ts  # what came before the first reading is unknown
        if b != self.cur:
            # An absence is as long as readings showed it (a lost "back" advert is not getting up).
            if self.cur is False and self.last_bed - self.changed >= self.cfg.up_s:
                self.last_long_out = ts
            self.cur, self.changed = b, ts
            self.changed_night = self._at_night(ts)
            self.running = 0
        self.last_bed = max(self.last_bed, ts)
        return self._judge(ts)

    def on_water(self, value: Value, ts: float) -> bool | None:
        x = as_float(value)
        if x is None:
            return None
        meter = self.meter
        first = meter.last_total is None
        step = meter.feed(x, ts)
        if step is None:
            return None
        self.last_water = ts
        if first:
            self.last_use = ts  # what came before the first read is unknown
        if step is Step.REBASE:
            return self._judge(ts)
        use, t0 = meter.use, meter.t0
        if use >= self.cfg.activity_m3:
            self.last_use, self.use_from = ts, t0
        day = self._day_start(ts)
        if day != self.morning_ref:
            self.morning_ref, self.morning_use = day, 0.0
        self.morning_use += use if t0 >= day else spread(use, t0, ts, day, ts)
        in_bed_from = self.changed + self.cfg.settle_s
        flowing = (
            self.cur and t0 >= in_bed_from and ts > t0 and use * 3600.0 / (ts - t0) >= self.cfg.running_m3_h
        )
        self.running = self.running + 1 if flowing else 0
        return self._judge(ts)

    def on_door(self, value: Value, ts: float) -> bool | None:
        return self._judge(ts) if self.presence.on_door(value, ts, self._home_since(ts)) else None

    def on_motion(self, value: Value, ts: float) -> bool | None:
        return self._judge(ts) if self.presence.on_motion(value, ts) else None

    def on_tick(self, now: float) -> bool | None:
        return self._judge(now)

    # -- the judgement ------------------------------------------------------------------------------

    def _judge(self, now: float) -> bool | None:
        cfg = self.cfg
        bed = self.cur is not None and now - self.last_bed <= cfg.bed_stale_s
        water = self.meter.last_total is not None and now - self.last_water <= cfg.water_stale_s
        if not (bed or water):
            return None
        reason = self._reason(now, bed, water)
        self.value = reason
        return bool(reason)

    def _reason(self, now: float, bed: bool, water: bool) -> str:
        cfg = self.cfg
        if bed and self.cur and self.running >= RUNNING_READS and water:
            return "tap running while in bed"
        p = self.presence
        moving = bool(cfg.motion) and p.motion_fresh(now)
        home_known = moving and bool(cfg.door) and p.door_fresh(now)
        if home_known and not (bed and self.cur) and p.out(now, self._home_since(now)):
            if cfg.home_by and (now >= self._at(now, cfg.home_by) or now < self._at(now, cfg.day_starts)):
                return f"not home by {cfg.home_by}"
            return ""  # out: nothing else to judge
        if bed and self.cur is False and moving:
            last = latest(self.changed, p.last_sign(now), self.last_use if water else NEVER)
            # The absence began at night; after the night's end only while nothing moved since.
            at_night = self._at_night(now) or last < self._last(now, cfg.night_end)
            if at_night and self._night_ref(now) is not None and now - last >= cfg.night_out_s:
                return "out of bed at night, no movement"
            if home_known and now - last >= cfg.still_s:
                return "no movement at home"
        if bed and self.cur is False and not moving:
            night = self._at_night(now)
            # The absence began at night, or it spans the last night's start (never went to bed).
            start = self._last(now, cfg.night_start)
            ref = None
            if self.changed_night and now - self.changed < DAY:
                ref = self.changed
            elif self.changed < start:
                ref = start
            if ref is not None:
                out = now - ref
                if out >= cfg.night_out_s and not (water and self.last_use >= ref):
                    return "out of bed at night, no water use"
                # Long: no water in the last night_out_s either (a fall after the flush); after the
                # night's end only while nobody has used water since it ended.
                ended = self._last(now, cfg.night_end)
                if (
                    out >= cfg.night_long_s
                    and not (water and now - self.last_use < cfg.night_out_s)
                    and (night or not (water and self.last_use >= ended))
                ):
                    return "out of bed at night for long"
        if (
            bed
            and self.cur is False
            and not home_known
            and water
            and now - max(self.last_use, self.changed) >= cfg.quiet_s
        ):
            return "no water use while up"
        if now >= self._at(now, cfg.up_by):
            day = self._day_start(now)
            morning = self.morning_use if self.morning_ref == day else 0.0
            # Not up: still in bed, or out for less than up_s (to the toilet and back is not up).
            if bed and self.last_long_out < day and (self.cur or now - self.changed < cfg.up_s):
                if not water or morning < cfg.morning_m3:
                    return "not up"
            elif not bed and water and morning < cfg.activity_m3 and self.last_water - day > 0:
                return "not up (bed sensor silent, no water use)"
        return ""

    def _home_since(self, now: float) -> float:
        """The last sign of someone at home the bed and the meter gave: water drawn (from the read
        before the one that showed it), getting into or out of bed; NEVER if none."""
        bed = self.cur is not None and now - self.last_bed <= self.cfg.bed_stale_s
        return latest(self.use_from, self.changed if bed else NEVER)

    def _night_ref(self, now: float) -> float | None:
        """When the night's absence began (left the bed at night, or the night began with the
        resident out of bed), or None."""
        start = self._last(now, self.cfg.night_start)
        if self.changed_night and now - self.changed < DAY:
            return self.changed
        if self.changed < start:
            return start
        return None

    # -- persistence --------------------------------------------------------------------------------

    def snapshot(self) -> list[Any]:
        return [
            self.cur,
            self.changed,
            self.changed_night,
            self.last_bed,
            self.last_long_out,
            self.meter.snapshot(),
            self.last_water,
            self.last_use,
            self.morning_ref,
            self.morning_use,
            self.running,
            self.use_from,
            self.presence.snapshot(),
        ]

    def restore(self, data: list[Any]) -> None:
        self.cur = None if data[0] is None else bool(data[0])
        self.changed, self.changed_night = number(data[1]), bool(data[2])
        self.last_bed, self.last_long_out = number(data[3]), number(data[4])
        self.meter.restore(data[5])
        self.last_water, self.last_use = number(data[6]), number(data[7])
        self.morning_ref, self.morning_use, self.running = number(data[8]), number(data[9]), whole(data[10])
        if len(data) > 11:  # snapshots from before the third signal have none
            self.use_from = number(data[11])
            self.presence.restore(data[12])

    def shift(self, delta: float) -> None:
        # The morning's use belongs to the day of the read that counted it: it moves with that read.
        same_day = self.meter.last_total is not None and self.morning_ref == self._day_start(self.last_water)
        self.meter.shift(delta)
        self.changed += delta
        self.last_bed += delta
        if self.last_long_out != NEVER:
            self.last_long_out += delta
        self.last_water += delta
        if same_day:
            self.morning_ref = self._day_start(self.last_water)
        self.last_use += delta
        if self.use_from != NEVER:
            self.use_from += delta
        self.presence.shift(delta)

    def latest_time(self) -> float:
        times = (self.changed, self.last_bed, self.last_long_out, self.last_water, self.last_use)
        return latest(self.meter.latest_time(), self.presence.latest_time(), *times, self.use_from)
