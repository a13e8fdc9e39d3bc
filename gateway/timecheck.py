"""Time and trust on screen: the gateway's clock, its NTP state, and skew against meters' own clocks.

A Raspberry Pi has no RTC: after a boot without network its clock can be days off, and every
reading is stamped wrong while everything looks green. Meters keep their own clocks (CJ/T 188
reports one in every read; a DL/T 645 profile can read its date and time), so when several meters
agree with each other and not with the gateway, the gateway is the one to fix.

Whether the wall clock is synchronised comes from `citynerve.gateway.timesync` (the configured source: the
kernel's NTP state, timesyncd, a flag file), passed in by the caller.

Meters keep the site's wall-clock time with no UTC offset: it is read in the site's zone (`[gateway]
tz`), never the process's (an image left at UTC would put every right meter 8 h ahead in Beijing).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from citynerve.gateway.api import Sample

SITE_TZ = "Asia/Shanghai"  # `[gateway] tz` when the config does not say
SITE_ZONE = ZoneInfo(SITE_TZ)
METER_CLOCK_POINTS = ("meter_time", "meter_clock", "clock")
SKEW_WARN_S = 300.0  # beyond five minutes the stamps of readings and events are misleading


def meter_clock_skew(
    samples: Iterable[Sample], now: float | None = None, tz: dt.tzinfo = SITE_ZONE
) -> float | None:
    """Seconds the meter's clock is ahead of the gateway's, or None. A time without an offset is the
    site's wall-clock time, in `tz`."""
    for s in samples:
        if s.point in METER_CLOCK_POINTS and isinstance(s.value, str):
            try:
                meter = dt.datetime.fromisoformat(s.value)
            except ValueError:
                return None
            now = time.time() if now is None else now
            return round(_epoch(meter, tz, now) - now, 1)
    return None


def _epoch(meter: dt.datetime, tz: dt.tzinfo, now: float) -> float:
    if meter.tzinfo is not None:
        return meter.timestamp()
    # The hour a DST change repeats reads two ways (and one it skips has no right way): take the
    # reading nearer the gateway's clock, so a right meter is not an hour off once a year.
    first, second = (meter.replace(tzinfo=tz, fold=fold).timestamp() for fold in (0, 1))
    return first if abs(first - now) <= abs(second - now) else second


DLT645_DATE_POINT = "meter_date"  # DI 04000101, YYMMDDWW
DLT645_TIME_POINT = "meter_clock_hms"  # DI 04000102, hhmmss


class MeterClocks:
    """Meter clock skew per device. DL/T 645 meters give date and time in two DIs (two transactions):
    the last date seen is kept and joined with the next time (a read across midnight is off by a
    day once, and right at the next poll). `tz`: the site's zone, which the meters' clocks keep."""

    def __init__(self, tz: dt.tzinfo = SITE_ZONE) -> None:
        self.tz = tz
        self._dates: dict[str, str] = {}

    def observe(self, device_id: str, samples: Iterable[Sample], now: float | None = None) -> float | None:
        samples = list(samples)
        skew = meter_clock_skew(samples, now, self.tz)
        if skew is not None:
            return skew
        for s in samples:
            if s.point == DLT645_DATE_POINT and isinstance(s.value, str):
                self._dates[device_id] = s.value
        date = self._dates.get(device_id)
        for s in samples:
            if s.point == DLT645_TIME_POINT and isinstance(s.value, str) and date:
                iso = _dlt645_iso(date, s.value)
                if iso is not None:
                    return meter_clock_skew([Sample("meter_time", iso)], now, self.tz)
        return None


def _dlt645_iso(date: str, hms: str) -> str | None:
    """ "26120405" (YYMMDDWW) and "161530" (hhmmss) -> "2026-12-04T16:15:30"."""
    if len(date) < 6 or len(hms) != 6 or not (date[:6] + hms).isdigit():
        return None
    return f"20{date[0:2]}-{date[2:4]}-{date[4:6]}T{hms[0:2]}:{hms[2:4]}:{hms[4:6]}"


def time_status(
    skews: Mapping[str, float],
    *,
    synchronized: bool | None,
    max_error_s: float | None = None,
    platform_skew_s: float | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The `time` section of `status`: gateway UTC time, NTP state (`synchronized`, from
    `citynerve.gateway.timesync`), skew against meters, a verdict."""
    now = time.time() if now is None else now
    out: dict[str, Any] = {
        "gateway_utc": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="seconds"),
        "ntp_synchronized": synchronized,
        "ntp_max_error_s": max_error_s,
        "meters": dict(sorted(skews.items())),
        "median_meter_skew_s": _median(list(skews.values())),
        # the platform's clock minus ours, from its last signed end-to-end ack (plus transit time)
        "platform_skew_s": platform_skew_s,
        "verdict": "ok",
        "reason": "",
    }
    median = out["median_meter_skew_s"]
    if median is not None and abs(median) > SKEW_WARN_S and len(skews) >= 2:
        ahead = "behind" if median > 0 else "ahead of"
        out["verdict"] = "clock_wrong"
        out["reason"] = (
            f"the gateway clock is {_span(abs(median))} {ahead} {len(skews)} meters that agree with each "
            "other: readings are stamped wrong; check NTP (network, `timedatectl`)"
            + ("" if synchronized else " - the clock is not synchronised (no NTP)")
        )
    elif platform_skew_s is not None and abs(platform_skew_s) > SKEW_WARN_S:
        ahead = "behind" if platform_skew_s > 0 else "ahead of"
        out["verdict"] = "clock_wrong"
        out["reason"] = (
            f"the gateway clock is {_span(abs(platform_skew_s))} {ahead} the platform's (from its signed "
            "acks): readings are stamped wrong; check NTP (network, `timedatectl`)"
        )
    elif synchronized is False:
        out["verdict"] = "not_synchronized"
        out["reason"] = "the clock is not synchronised (no NTP): readings may be stamped wrong"
    return out


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return round(s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2, 1)


def _span(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"
