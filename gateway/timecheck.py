"""Time and trust on screen: the gateway's clock, its NTP state, and skew against meters' own clocks.

A Raspberry Pi has no RTC: after a boot without network its clock can be days off, and every
reading is stamped wrong while everything looks green. Meters keep their own clocks (CJ/T 188
reports one in every read; a DL/T 645 profile can read its date and time), so when several meters
agree with each other and not with the gateway, the gateway is the one to fix.

Whether the wall clock is synchronised comes from `citynerve.gateway.timesync` (the configured source: the
kernel's NTP state, timesyncd, a flag file), passed in by the caller.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping
from typing import Any

from citynerve.gateway.api import Sample

METER_CLOCK_POINTS = ("meter_time", "meter_clock", "clock")
SKEW_WARN_S = 300.0  # beyond five minutes the stamps of readings and events are misleading


def meter_clock_skew(samples: Iterable[Sample], now: float | None = None) -> float | None:
    """Seconds the meter's clock is ahead of the gateway's (meters keep local time), or None."""
    for s in samples:
        if s.point in METER_CLOCK_POINTS and isinstance(s.value, str):
            try:
                meter = dt.datetime.fromisoformat(s.value)
            except ValueError:
                return None
            # a meter keeps wall-clock local time: read it in the gateway's time zone
            meter_epoch = time.mktime(meter.timetuple()) if meter.tzinfo is None else meter.timestamp()
            return round(meter_epoch - (time.time() if now is None else now), 1)
    return None


DLT645_DATE_POINT = "meter_date"  # DI 04000101, YYMMDDWW
DLT645_TIME_POINT = "meter_clock_hms"  # DI 04000102, hhmmss


class MeterClocks:
    """Meter clock skew per device. DL/T 645 meters give date and time in two DIs (two transactions):
    the last date seen is kept and joined with the next time (a read across midnight is off by a
    day once, and right at the next poll)."""

    def __init__(self) -> None:
        self._dates: dict[str, str] = {}

    def observe(self, device_id: str, samples: Iterable[Sample], now: float | None = None) -> float | None:
        samples = list(samples)
        skew = meter_clock_skew(samples, now)
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
                    return meter_clock_skew([Sample("meter_time", iso)], now)
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
