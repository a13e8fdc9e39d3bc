"""The conditions of consumption rules on a cumulative meter: use in a sliding window, per local
calendar day, and in every slot for a run of slots (a leak or a tap left open)."""

from __future__ import annotations

import math
from typing import Any

from citynerve.gateway.api import Value
from citynerve.gateway.rules.conditions import Condition, as_float
from citynerve.gateway.rules.config import ConsumptionRule
from citynerve.gateway.rules.meter import LocalDays, MeterTrack, Step, spread
from citynerve.gateway.rules.snapdata import NEVER, NO_SLOT, latest, number, opt_number, whole


def _fed(meter: MeterTrack, value: Value, ts: float) -> Step | None:
    """The meter's step for a reading; None when the value is not a number or adds nothing."""
    x = as_float(value)
    return None if x is None else meter.feed(x, ts)


class SlidingUse(Condition):
    """Use in a sliding window, in bins of `bin_s`: a ring of bins and a running sum."""

    __slots__ = ("above", "below", "bin_s", "bins", "head", "meter", "since", "stale_s", "total", "window_s")

    def __init__(self, rule: ConsumptionRule) -> None:
        super().__init__()
        self.meter = MeterTrack(rule.rollover_at, rule.max_step)
        self.bin_s, self.window_s = rule.bin_s, rule.window_s
        # One bin more than the window: the newest bin is partly elapsed, and "no use in 12 h" must
        # cover at least 12 h (never raise early); the window is window_s .. window_s + bin_s.
        self.bins = [0.0] * (max(1, math.ceil(rule.window_s / rule.bin_s)) + 1)
        self.head = NO_SLOT  # absolute index of the newest bin
        self.total = 0.0
        self.since: float | None = None  # start of continuous observation
        self.below, self.above, self.stale_s = rule.below, rule.above, rule.stale_s

    def _advance(self, idx: int) -> None:
        n = len(self.bins)
        if self.head == NO_SLOT or idx - self.head >= n:
            self.bins = [0.0] * n
            self.total = 0.0
        else:
            for i in range(self.head + 1, idx + 1):
                self.total -= self.bins[i % n]
                self.bins[i % n] = 0.0
        self.head = idx

    def on_reading(self, value: Value, ts: float) -> bool | None:
        meter = self.meter
        step = _fed(meter, value, ts)
        if step is None:
            return None
        if step is Step.REBASE:
            self._advance(int(ts // self.bin_s))
            if self.since is None:
                self.since = ts
            return self._cond(ts)
        b, use, t0 = self.bin_s, meter.use, meter.t0
        first, last = int(t0 // b), int(ts // b)
        if last > self.head:
            self._advance(last)
        n = len(self.bins)
        if first == last:
            self.bins[last % n] += use
            self.total += use
        else:
            for i in range(max(first, last - n + 1), last + 1):
                part = spread(use, t0, ts, i * b, (i + 1) * b)
                self.bins[i % n] += part
                self.total += part
        return self._cond(ts)

    def _cond(self, ts: float) -> bool | None:
        self.value = max(self.total, 0.0)
        if self.above is not None:
            return self.total > self.above
        assert self.below is not None
        if self.total >= self.below:
            return False
        # "No use for 12 h" needs 12 h of observation, not a freshly started gateway.
        if self.since is None or ts - self.since < self.window_s:
            return None
        return True

    def snapshot(self) -> list[Any]:
        return [self.meter.snapshot(), self.bins, self.head, self.total, self.since]

    def restore(self, data: list[Any]) -> None:
        self.meter.restore(data[0])
        if len(data[1]) == len(self.bins):
            self.bins, self.head, self.total = [number(v) for v in data[1]], whole(data[2]), number(data[3])
        self.since = opt_number(data[4])

    def shift(self, delta: float) -> None:
        self.meter.shift(delta)  # the next reading's use spans the real interval, not the step
        if self.since is not None:
            self.since += delta  # observed as long as before: "no use for 12 h" stays 12 h of real time
        k = round(delta / self.bin_s)
        if self.head != NO_SLOT and k:
            # The window moves with the clock by whole bins, its contents kept: a forward step does not
            # empty it (a false "no use") nor a backward one freeze it (a false "above").
            n = len(self.bins)
            r = k % n
            self.bins = self.bins[n - r :] + self.bins[: n - r]
            self.head += k

    def latest_time(self) -> float:
        head = NEVER if self.head == NO_SLOT else self.head * self.bin_s
        return latest(self.meter.latest_time(), NEVER if self.since is None else self.since, head)


class DayUse(Condition):
    """Use per local calendar day: `above` while the day runs, `below` when a complete day closes."""

    __slots__ = ("above", "below", "closed", "days", "end", "meter", "since", "stale_s", "start", "today")

    def __init__(self, rule: ConsumptionRule) -> None:
        super().__init__()
        self.meter = MeterTrack(rule.rollover_at, rule.max_step)
        self.days = LocalDays(rule.tz)
        self.below, self.above, self.stale_s = rule.below, rule.above, rule.stale_s
        self.start = self.end = 0.0
        self.today = 0.0
        self.since: float | None = None
        self.closed: float | None = None  # total of the last complete day

    def on_reading(self, value: Value, ts: float) -> bool | None:
        meter = self.meter
        step = _fed(meter, value, ts)
        if step is None:
            return None
        if self.since is None:
            self.since = ts
            self.start, self.end = self.days.locate(ts)
        result: bool | None = None
        use, t0 = meter.use, meter.t0
        if step is Step.REBASE:
            use, t0 = 0.0, ts
        while ts >= self.end:  # close every day the step crosses
            self.today += spread(use, t0, ts, self.start, self.end)
            # A day counts if it was watched from its start, the last read was not a long gap, and it
            # is a whole day long (not the rest of one after a clock step moved the day: `shift`).
            complete = self.since <= self.start and ts - t0 <= self.stale_s
            if complete:
                start, end = self.days.locate(self.start)
                complete = self.end - self.start >= end - start
            self.closed = self.today if complete else None
            if self.below is not None and self.closed is not None:
                result = self.closed < self.below
            # The next day runs to the calendar's next midnight (after a moved day: the rest of it).
            self.start, self.end = self.end, self.days.locate(self.end)[1]
            self.today = 0.0
        self.today += use if t0 >= self.start else spread(use, t0, ts, self.start, self.end)
        if self.above is not None:
            self.value = self.today
            return self.today > self.above
        assert self.below is not None
        if self.today >= self.below:
            self.value = self.today
            return False  # use resumed today
        if result is not None:
            self.value = self.closed or 0.0
        return result

    def snapshot(self) -> list[Any]:
        return [self.meter.snapshot(), self.start, self.end, self.today, self.since, self.closed]

    def restore(self, data: list[Any]) -> None:
        self.meter.restore(data[0])
        self.start, self.end, self.today = number(data[1]), number(data[2]), number(data[3])
        self.since, self.closed = opt_number(data[4]), opt_number(data[5])

    def shift(self, delta: float) -> None:
        self.meter.shift(delta)  # the next reading's use spans the real interval, not the step
        if self.since is not None:
            # The day moves with its readings: a restore on a 1970 clock adds the next reads' use to
            # it (not to a day they are not in), and NTP's step moves it back to its calendar day.
            # Moved by the outage then, it closes that much late; the next day ends at midnight
            # again (shorter: `below` does not judge it).
            self.since += delta
            self.start += delta
            self.end += delta

    def latest_time(self) -> float:
        if self.since is None:
            return self.meter.latest_time()
        return latest(self.meter.latest_time(), self.since, self.start)  # `end`: the coming midnight


class SlotUse(Condition):
    """Use in every slot for `slots` slots in a row (a leak or a tap left open): a run counter."""

    __slots__ = ("cur", "cur_use", "gap_s", "meter", "min_use", "run", "slot_s", "slots")

    def __init__(self, rule: ConsumptionRule) -> None:
        super().__init__()
        self.meter = MeterTrack(rule.rollover_at, rule.max_step)
        self.slot_s, self.slots, self.min_use, self.gap_s = (
            rule.slot_s,
            rule.slots,
            rule.min_per_slot,
            rule.gap_s,
        )
        self.cur = NO_SLOT  # absolute index of the open slot
        self.cur_use = 0.0
        self.run = 0  # completed slots in a row with use

    def on_reading(self, value: Value, ts: float) -> bool | None:
        meter = self.meter
        step = _fed(meter, value, ts)
        if step is None:
            return None
        s = self.slot_s
        idx = int(ts // s)
        use, t0 = meter.use, meter.t0
        if step is Step.REBASE or self.cur == NO_SLOT or ts - t0 > self.gap_s:
            # Unknown how use was spread (first reading, new meter, long gap): the run starts again.
            if idx != self.cur:
                self.run = 0
                self.cur, self.cur_use = idx, 0.0
            return self._cond()
        changed = False
        while self.cur < idx:
            self.cur_use += spread(use, t0, ts, self.cur * s, (self.cur + 1) * s)
            self.run = self.run + 1 if self.cur_use > self.min_use else 0
            self.cur += 1
            self.cur_use = 0.0
            changed = True
        self.cur_use += use if t0 >= idx * s else spread(use, t0, ts, idx * s, (idx + 1) * s)
        return self._cond() if changed else None

    def _cond(self) -> bool:
        self.value = self.run
        return self.run >= self.slots

    def snapshot(self) -> list[Any]:
        return [self.meter.snapshot(), self.cur, self.cur_use, self.run]

    def restore(self, data: list[Any]) -> None:
        self.meter.restore(data[0])
        self.cur, self.cur_use, self.run = whole(data[1]), number(data[2]), whole(data[3])

    def shift(self, delta: float) -> None:
        self.meter.shift(delta)  # the next reading's use spans the real interval, not the step
        if self.cur != NO_SLOT:
            self.cur += round(delta / self.slot_s)  # the slots a step spans are not closed as no use

    def latest_time(self) -> float:
        return latest(self.meter.latest_time(), NEVER if self.cur == NO_SLOT else self.cur * self.slot_s)
