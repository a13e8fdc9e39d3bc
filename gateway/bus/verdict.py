"""Verdicts that name a cause: per device and per bus, from failures counted by kind (sans-I/O).

The bus owner records every transaction attempt (before retries, so a device that needs two tries
per poll shows a 50 % failure rate, not 0 %) into a `LineQuality`: a sliding window on the monotonic
clock of outcomes by kind per device. `judge_bus` turns the counts of every device of a bus into a
`BusVerdict`: one named pattern for the line and one `DeviceVerdict` per device, with the state
(online / degraded / offline), the cause and a reason a technician can act on, always with the rate
and its denominator ("12 of 40 transactions failed in the last 300 s").

Patterns, in the order they are tried:
- channel down: the port or connection cannot be used;
- all devices silent: the line, its wiring or its settings (the reason shows the settings);
- all devices garbled: line quality (termination, earthing, noise) or wrong parity / baud;
- one device garbled while the others are clean: two devices answer on that address;
- one device silent while others answer: that device's address, power or stub;
- replies from another address: a device configured on the wrong address;
- values outside the profile's physical bounds: register map or word order;
- radio: adverts heard but rejected (key), configured node never heard (range, battery);
- intermittent: some transactions fail (the rate says how many).
"""

from __future__ import annotations

import enum
import time
from array import array
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from citynerve.gateway.api import (
    ChannelError,
    DeviceExceptionError,
    DeviceTimeoutError,
    FrameError,
    FrameFault,
)

WINDOW_S = 300.0
MAX_EVENTS = 512  # per device: bounds memory on a fast bus (the window then covers the last 512)
MIN_KEEP = 30  # attempts kept beyond the window for slowly polled devices ...
MAX_AGE_S = 3600.0  # ... but none older than this
MIN_ATTEMPTS = 3  # below this many attempts in the window no pattern is named
MIN_FOR_RATE = 10  # "intermittent" and "exception replies" need this many: one stray timeout is not a pattern
DEGRADED_RATE = 0.10  # a failure rate at or above this marks an online device degraded
SILENT_RATE = 0.8  # share of timeouts that makes a device "silent"
GARBLED_RATE = 0.2  # share of checksum / framing failures that makes a device "garbled"
CLEAN_RATE = 0.05  # at or below this the other devices count as clean


class FailureKind(enum.StrEnum):
    """Why one transaction attempt failed."""

    TIMEOUT = "timeout"
    CHECKSUM = "checksum"
    FRAMING = "framing"
    EXCEPTION = "exception"
    ADDRESS = "wrong_address"
    DECRYPT = "decrypt"
    CHANNEL = "channel"
    OTHER = "other"


GARBLED_KINDS = (FailureKind.CHECKSUM, FailureKind.FRAMING)

_FAULT_KIND = {
    FrameFault.CHECKSUM: FailureKind.CHECKSUM,
    FrameFault.FRAMING: FailureKind.FRAMING,
    FrameFault.ADDRESS: FailureKind.ADDRESS,
    FrameFault.DECRYPT: FailureKind.DECRYPT,
}


def kind_of(err: BaseException) -> FailureKind:
    """The failure kind of an error a driver raised (typed attributes, never message text)."""
    if isinstance(err, FrameError):
        return _FAULT_KIND.get(err.fault, FailureKind.FRAMING)
    if isinstance(err, DeviceTimeoutError | TimeoutError):
        return FailureKind.TIMEOUT
    if isinstance(err, DeviceExceptionError):
        return FailureKind.EXCEPTION
    if isinstance(err, ChannelError):
        return FailureKind.CHANNEL
    return FailureKind.OTHER


class DeviceState(enum.StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"  # answers, but not reliably or not plausibly: look before it fails
    OFFLINE = "offline"
    UNKNOWN = "unknown"  # no verdict yet (just started)


class Cause(enum.StrEnum):
    """Named patterns. `OK` means nothing to act on."""

    OK = "ok"
    CHANNEL_DOWN = "channel_down"
    LINE_SILENT = "line_silent"
    LINE_GARBLED = "line_garbled"
    DUPLICATE_ADDRESS = "duplicate_address"
    DEVICE_SILENT = "device_silent"
    DEVICE_GARBLED = "device_garbled"
    WRONG_ADDRESS = "wrong_address"
    IMPLAUSIBLE_VALUES = "implausible_values"
    EXCEPTION_REPLIES = "exception_replies"
    WRONG_KEY = "wrong_key"
    DEVICE_FAULT = "device_fault"  # the gateway cannot serve it (a key file it cannot read)
    REJECTED_ADVERTS = "rejected_adverts"
    COUNTER_RESTARTED = "counter_restarted"  # a node's counter far below the last accepted (reflashed?)
    NEVER_HEARD = "never_heard"
    NOT_HEARD = "not_heard"
    INTERMITTENT = "intermittent"


@dataclass(frozen=True, slots=True)
class Counts:
    """Outcomes of one device's attempts in the window: the rate always comes with its denominator."""

    attempts: int = 0
    failures: int = 0
    by_kind: Mapping[str, int] = field(default_factory=dict)
    implausible: int = 0  # readings outside the point's physical bounds
    window_s: float = WINDOW_S
    trailing: Mapping[str, int] = field(default_factory=dict)  # failures since the last success, by kind

    @property
    def rate(self) -> float:
        return self.failures / self.attempts if self.attempts else 0.0

    def share(self, *kinds: FailureKind) -> float:
        if not self.attempts:
            return 0.0
        return sum(self.by_kind.get(k, 0) for k in kinds) / self.attempts

    def describe(self) -> str:
        if not self.attempts:
            return f"no transactions in the last {self.window_s:.0f} s"
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.by_kind.items(), key=lambda kv: -kv[1]))
        return (
            f"{self.failures} of {self.attempts} transactions failed ({self.rate:.0%}) in the last "
            f"{self.window_s:.0f} s" + (f": {kinds}" if kinds else "")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "failures": self.failures,
            "rate": round(self.rate, 4),
            "by_kind": dict(self.by_kind),
            "implausible": self.implausible,
            "window_s": self.window_s,
        }


_KINDS: tuple[FailureKind, ...] = tuple(FailureKind)
_CODE = {k: i + 1 for i, k in enumerate(_KINDS)}  # 0 = success


class _Outcomes:
    """One device's attempts: times and outcome codes in flat arrays (9 bytes an attempt, no
    objects: a thousand devices cost well under a megabyte)."""

    __slots__ = ("codes", "times")

    def __init__(self) -> None:
        self.times = array("d")
        self.codes = bytearray()

    def append(self, t: float, failure: FailureKind | None) -> None:
        self.times.append(t)
        self.codes.append(0 if failure is None else _CODE[failure])
        if len(self.codes) > MAX_EVENTS:
            self.drop(len(self.codes) - MAX_EVENTS)

    def drop(self, n: int) -> None:
        if n > 0:
            del self.times[:n]
            del self.codes[:n]

    def prune(self, now: float, window_s: float, min_keep: int) -> None:
        """Drop attempts older than the window (keeping the last `min_keep`) or than MAX_AGE_S."""
        since, too_old = now - window_s, now - MAX_AGE_S
        n = 0
        size = len(self.codes)
        while n < size and (self.times[n] < too_old or (self.times[n] < since and size - n > min_keep)):
            n += 1
        self.drop(n)


class LineQuality:
    """Sliding-window outcome counters of one bus, per device. Owned by the bus owner task."""

    def __init__(
        self,
        *,
        window_s: float = WINDOW_S,
        min_keep: int = MIN_KEEP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.min_keep = min_keep
        self._clock = clock
        self._attempts: dict[str, _Outcomes] = {}
        self._implausible: dict[str, deque[tuple[float, str]]] = {}
        self.meter_skew: dict[str, float] = {}  # device -> seconds its own clock is ahead of ours

    def record(self, device_id: str, failure: FailureKind | None) -> None:
        """One attempt: `None` for success, else why it failed."""
        outcomes = self._attempts.get(device_id)
        if outcomes is None:
            outcomes = self._attempts[device_id] = _Outcomes()
        now = self._clock()
        outcomes.append(now, failure)
        # prune here too, not only when a status is asked for: memory stays at the window's size
        if outcomes.times[0] < now - self.window_s:
            outcomes.prune(now, self.window_s, self.min_keep)

    def implausible(self, device_id: str, point: str) -> None:
        """One reading outside its physical bounds."""
        events = self._implausible.setdefault(device_id, deque(maxlen=MAX_EVENTS))
        now = self._clock()
        events.append((now, point))
        while events and events[0][0] < now - self.window_s:
            events.popleft()

    def implausible_points(self, device_id: str) -> list[str]:
        since = self._clock() - self.window_s
        return sorted({p for t, p in self._implausible.get(device_id, ()) if t >= since})

    def counts(self, device_id: str) -> Counts:
        now = self._clock()
        outcomes = self._attempts.get(device_id)
        bad = self._implausible.get(device_id, deque())
        while bad and bad[0][0] < now - self.window_s:
            bad.popleft()
        if outcomes is None:
            return Counts(0, 0, {}, len(bad), self.window_s)
        # A slowly polled device (one poll a minute) has few attempts in the window: its last
        # `min_keep` attempts stay, up to MAX_AGE_S old, so a rate always has a denominator.
        outcomes.prune(now, self.window_s, self.min_keep)
        span = max(self.window_s, now - outcomes.times[0]) if outcomes.codes else self.window_s
        by_kind: dict[str, int] = {}
        trailing: dict[str, int] = {}
        failures = 0
        for code in outcomes.codes:
            if code == 0:
                trailing = {}
                continue
            kind = _KINDS[code - 1]
            failures += 1
            by_kind[kind] = by_kind.get(kind, 0) + 1
            trailing[kind] = trailing.get(kind, 0) + 1
        return Counts(len(outcomes.codes), failures, by_kind, len(bad), round(span), trailing)


@dataclass(frozen=True, slots=True)
class RadioFacts:
    """What a listening (radio) bus knows about one node."""

    accepted: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)  # reject reason -> count
    last_seen: float | None = None
    last_rssi: int | None = None
    last_error: str = ""
    counter_restarted: bool = False  # its last replay was far below the last accepted counter


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """Everything the verdict needs to know about one device."""

    device_id: str
    address: str  # as the technician configured it: "unit 3", "000000001234", a MAC
    online: bool | None
    counts: Counts = field(default_factory=Counts)
    implausible_points: tuple[str, ...] = ()
    radio: RadioFacts | None = None
    last_error: str | None = None
    faulted: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceVerdict:
    device_id: str
    state: DeviceState
    cause: Cause
    reason: str  # what to check, in the technician's words, with the rate and its denominator
    counts: Counts
    radio: RadioFacts | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "state": str(self.state),
            "cause": str(self.cause),
            "reason": self.reason,
            "window": self.counts.to_dict(),
        }
        if self.radio is not None:
            out["radio"] = {
                "last_heard": self.radio.last_seen,
                "last_rssi": self.radio.last_rssi,
                "accepted": self.radio.accepted,
                "rejected": dict(self.radio.rejected),
                "last_error": self.radio.last_error,
            }
        return out


@dataclass(frozen=True, slots=True)
class BusVerdict:
    cause: Cause
    reason: str
    devices: Mapping[str, DeviceVerdict]

    @property
    def state(self) -> DeviceState:
        if self.cause is Cause.OK:
            return DeviceState.ONLINE
        if self.cause in (Cause.CHANNEL_DOWN, Cause.LINE_SILENT):
            return DeviceState.OFFLINE
        return DeviceState.DEGRADED

    def to_dict(self) -> dict[str, Any]:
        return {"state": str(self.state), "cause": str(self.cause), "reason": self.reason}


def _enough(f: DeviceFacts) -> bool:
    """Enough attempts for a rate. An offline device is probed once per backoff period only, and
    its offline verdict already took `offline_after` failures: its few attempts are enough."""
    return f.counts.attempts >= MIN_ATTEMPTS or (f.online is False and f.counts.attempts >= 1)


def _trailing_share(f: DeviceFacts, *kinds: FailureKind) -> float:
    """Among the failures since the last success (what made an offline device offline)."""
    run = sum(f.counts.trailing.values())
    return sum(f.counts.trailing.get(k, 0) for k in kinds) / run if run else 0.0


def _silent_f(f: DeviceFacts) -> bool:
    if f.online is False and _trailing_share(f, FailureKind.TIMEOUT) >= SILENT_RATE:
        return True  # it answered before, and has not since
    return _enough(f) and f.counts.share(FailureKind.TIMEOUT) >= SILENT_RATE


def _garbled_f(f: DeviceFacts) -> bool:
    if f.online is False and _trailing_share(f, *GARBLED_KINDS) >= 0.5:
        return True
    return _enough(f) and f.counts.share(*GARBLED_KINDS) >= GARBLED_RATE


def _clean(c: Counts) -> bool:
    return c.attempts >= MIN_ATTEMPTS and c.rate <= CLEAN_RATE


def judge_bus(
    devices: Mapping[str, DeviceFacts],
    *,
    settings: str,
    channel_error: str | None = None,
    serial: bool = True,
    probe: str | None = None,
) -> BusVerdict:
    """Name the line's pattern and each device's cause. `settings` describes the line as configured
    ("/dev/ttyUSB0 9600 8N1", "10.0.0.5:502"), shown when the line is the likely culprit; `probe` is
    the command that tries other settings on this bus ("citynerve diag dlt645 probe --bus meters"),
    where there is one."""
    polled = {d: f for d, f in devices.items() if f.radio is None}
    radio = {d: f for d, f in devices.items() if f.radio is not None}
    verdicts: dict[str, DeviceVerdict] = {}
    bus_cause, bus_reason = Cause.OK, "all devices answer"

    if channel_error is not None:
        bus_cause = Cause.CHANNEL_DOWN
        bus_reason = f"the bus's channel cannot be used ({settings}): {channel_error}"
        for d, f in devices.items():
            verdicts[d] = DeviceVerdict(d, DeviceState.OFFLINE, Cause.CHANNEL_DOWN, bus_reason, f.counts)
        return BusVerdict(bus_cause, bus_reason, verdicts)

    judged = [f for f in polled.values() if _enough(f)]
    if len(judged) >= 1 and len(judged) == len(polled) and all(_silent_f(f) for f in judged):
        total = sum(f.counts.attempts for f in judged)
        bus_cause = Cause.LINE_SILENT
        if serial:
            bus_reason = (
                f"no device on the line answers ({total} requests, all unanswered): check the line's "
                f"settings (configured {settings}: same baud rate, parity and stop bits as the devices?), "
                "A/B polarity, the adapter and the devices' power"
                + (f"; `{probe}` tries other settings" if probe else "")
            )
        else:
            bus_reason = (
                f"no device behind {settings} answers ({total} requests, all unanswered): the endpoint "
                "accepts the connection but nothing replies - check the serial gateway / converter there "
                "(its serial settings and wiring) and the unit ids"
            )
        for f in judged:
            verdicts[f.device_id] = DeviceVerdict(
                f.device_id, DeviceState.OFFLINE, Cause.LINE_SILENT, bus_reason, f.counts
            )
    elif (
        len(judged) >= 2
        and all(_garbled_f(f) or _silent_f(f) for f in judged)
        and any(_garbled_f(f) for f in judged)
    ):
        bus_cause = Cause.LINE_GARBLED
        failed = sum(f.counts.failures for f in judged)
        total = sum(f.counts.attempts for f in judged)
        bus_reason = (
            f"replies from every device arrive garbled ({failed} of {total} transactions failed): "
            f"line quality - check termination (120 ohm at both ends only), earthing and shield, cable "
            f"run near power lines, and that the parity matches the devices (configured {settings}); "
            "`diag line --repeat 100` measures it"
        )
        for f in judged:
            state = DeviceState.OFFLINE if f.online is False else DeviceState.DEGRADED
            verdicts[f.device_id] = DeviceVerdict(
                f.device_id, state, Cause.LINE_GARBLED, bus_reason, f.counts
            )

    clean = {o.device_id for o in judged if _clean(o.counts)}  # once: not per device (100 x 100)
    for d, f in polled.items():
        if d in verdicts:
            continue
        verdicts[d] = _judge_polled(f, settings, len(clean) > (d in clean))  # another device is clean
    for d, f in radio.items():
        verdicts[d] = _judge_radio(f)

    if bus_cause is Cause.OK:
        named = [v for v in verdicts.values() if v.cause is not Cause.OK]
        if named:
            worst = max(named, key=lambda v: (v.state is DeviceState.OFFLINE, v.counts.rate))
            bus_cause = worst.cause
            bus_reason = (
                f"{len(named)} of {len(verdicts)} devices need attention; {worst.device_id}: {worst.reason}"
            )
    return BusVerdict(bus_cause, bus_reason, verdicts)


def _base_state(f: DeviceFacts) -> DeviceState:
    if f.online is None:
        return DeviceState.UNKNOWN
    return DeviceState.ONLINE if f.online else DeviceState.OFFLINE


def _problem_state(f: DeviceFacts) -> DeviceState:
    return DeviceState.OFFLINE if f.online is False else DeviceState.DEGRADED


def _judge_polled(f: DeviceFacts, settings: str, others_clean: bool) -> DeviceVerdict:
    c = f.counts
    d = f.device_id
    if _garbled_f(f) and others_clean:
        reason = (
            f"replies from {f.address} arrive garbled while the other devices on the line are clean "
            f"({c.describe()}): two devices probably answer on {f.address} - give one another address"
        )
        return DeviceVerdict(d, _problem_state(f), Cause.DUPLICATE_ADDRESS, reason, c)
    if _silent_f(f) and others_clean:
        reason = (
            f"{d} does not answer while the other devices on the line do ({c.describe()}): check its "
            f"address (configured {f.address}), its power and its stub wiring (A/B, loose terminal)"
        )
        return DeviceVerdict(d, _problem_state(f), Cause.DEVICE_SILENT, reason, c)
    if c.attempts >= MIN_ATTEMPTS and c.share(FailureKind.ADDRESS) >= GARBLED_RATE:
        reason = (
            f"replies come from another address than the configured {f.address} ({c.describe()}): "
            "the device's address differs from the config, or another device answers late"
        )
        return DeviceVerdict(d, _problem_state(f), Cause.WRONG_ADDRESS, reason, c)
    if _silent_f(f):
        reason = (
            f"{d} does not answer ({c.describe()}): check its address (configured {f.address}), power, "
            f"wiring and the line's settings (configured {settings})"
        )
        return DeviceVerdict(d, _problem_state(f), Cause.DEVICE_SILENT, reason, c)
    if _garbled_f(f):
        reason = (
            f"replies from {f.address} arrive garbled ({c.describe()}): line quality (termination, "
            "earthing, noise), parity, or two devices on one address"
        )
        return DeviceVerdict(d, _problem_state(f), Cause.DEVICE_GARBLED, reason, c)
    if f.implausible_points:
        points = ", ".join(f.implausible_points)
        reason = (
            f"values outside the profile's physical bounds ({c.implausible} readings, points {points}) "
            "are marked suspect: check the profile's register map and word order (`modbus read` "
            "decodes all four orders)"
        )
        state = DeviceState.OFFLINE if f.online is False else DeviceState.DEGRADED
        return DeviceVerdict(d, state, Cause.IMPLAUSIBLE_VALUES, reason, c)
    if c.attempts >= MIN_FOR_RATE and c.share(FailureKind.EXCEPTION) >= DEGRADED_RATE:
        reason = (
            f"the device refuses requests with exception replies ({c.describe()}): the profile asks "
            "for registers or functions this model does not have"
        )
        return DeviceVerdict(d, _problem_state(f), Cause.EXCEPTION_REPLIES, reason, c)
    if c.attempts >= MIN_FOR_RATE and c.rate >= DEGRADED_RATE:
        reason = (
            f"intermittent: {c.describe()}; check the device's power supply, its stub and connector, "
            "and whether its timeout is long enough"
        )
        return DeviceVerdict(d, _problem_state(f), Cause.INTERMITTENT, reason, c)
    state = _base_state(f)
    if state is DeviceState.OFFLINE:
        reason = f"offline: {f.last_error or 'no answer'} ({c.describe()})"
        return DeviceVerdict(d, state, Cause.DEVICE_SILENT, reason, c)
    return DeviceVerdict(d, state, Cause.OK, c.describe(), c)


def _judge_radio(f: DeviceFacts) -> DeviceVerdict:
    r = f.radio or RadioFacts()
    d = f.device_id
    rejected = sum(r.rejected.values())
    c = Counts(r.accepted + rejected, rejected, dict(r.rejected), f.counts.implausible, f.counts.window_s)
    wrong_key = r.rejected.get("wrong_key", 0) + r.rejected.get("no_key", 0)
    last_error = r.last_error.split(" (frame ")[0]  # the bytes are in the log; the words go here
    if f.faulted is not None and f.online is False:  # its key file: not the node's fault
        return DeviceVerdict(d, DeviceState.OFFLINE, Cause.DEVICE_FAULT, f.faulted, c, r)
    if wrong_key and wrong_key * 2 >= r.accepted + rejected:
        reason = (
            f"node {f.address} is heard but its adverts are rejected ({wrong_key} of "
            f"{r.accepted + rejected} failed decryption: {last_error or 'MIC check failed'}): the "
            "configured key does not match the node's - a CityNerve node (device_fw): the key file "
            f"device_fw/tools/provision.py wrote for it (<out>/{d}.key, the key in its config.json); another "
            "sensor: the key from its label or app; then `citynerve config reload`"
        )
        return DeviceVerdict(d, _problem_state(f), Cause.WRONG_KEY, reason, c, r)
    replays = r.rejected.get("replay", 0)
    if r.counter_restarted and replays * 2 >= r.accepted + rejected:
        reason = (
            f"node {f.address} is heard but its adverts are refused as replays ({replays} of "
            f"{r.accepted + rejected}: {last_error}): counter restarted (node reflashed?): provision it "
            f"anew with a new key, or run citynerve diag ble reset-counter {d}"
        )
        return DeviceVerdict(d, _problem_state(f), Cause.COUNTER_RESTARTED, reason, c, r)
    if rejected and rejected * 2 >= r.accepted + rejected:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(r.rejected.items()))
        reason = f"node {f.address} is heard but its adverts are rejected ({kinds}): {last_error}"
        return DeviceVerdict(d, _problem_state(f), Cause.REJECTED_ADVERTS, reason, c, r)
    rssi = f", last RSSI {r.last_rssi} dBm" if r.last_rssi is not None else ""
    if r.last_seen is None and r.accepted == 0 and f.online is False:
        reason = (
            f"node {f.address} was never heard since the gateway started: out of radio range, flat "
            "battery, or a wrong MAC in the config - `ble scan` next to the node lists what is heard"
        )
        return DeviceVerdict(d, DeviceState.OFFLINE, Cause.NEVER_HEARD, reason, c, r)
    if f.online is False:
        reason = (
            f"node {f.address} not heard recently{rssi}: battery, or at the edge of range "
            "(RSSI below -90 dBm is marginal)"
        )
        return DeviceVerdict(d, DeviceState.OFFLINE, Cause.NOT_HEARD, reason, c, r)
    if f.implausible_points:
        points = ", ".join(f.implausible_points)
        reason = f"values outside the physical bounds (points {points}) are marked suspect: check the profile"
        return DeviceVerdict(d, DeviceState.DEGRADED, Cause.IMPLAUSIBLE_VALUES, reason, c, r)
    return DeviceVerdict(d, _base_state(f), Cause.OK, f"{r.accepted} adverts accepted{rssi}", c, r)
