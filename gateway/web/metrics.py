"""Prometheus text exposition (format 0.0.4) built from the gateway's status dict.

The status is the same dict `citynerve status` shows (citynerve.gateway.runtime.Gateway.status()), so metrics
never disagree with the page or the CLI. Counters are the gateway's own (since the process started);
Prometheus's rate() turns them into rates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any, Protocol, runtime_checkable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@runtime_checkable
class StatusRecord(Protocol):
    """A status part that renders itself (UplinkState, OutboxStats, counters...)."""

    def to_dict(self) -> dict[str, Any]: ...


def plain(obj: Any) -> Any:
    """A status part as plain data: records with `to_dict`, dataclasses and dicts alike."""
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if isinstance(obj, StatusRecord):
        return obj.to_dict()
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    return obj


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Exposition:
    """Collects families and renders them: one HELP/TYPE per family, samples after it."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def add(
        self, name: str, kind: str, help_: str, value: float | None, labels: Mapping[str, str] | None = None
    ) -> None:
        """One sample; None values are left out (unknown is not zero)."""
        # Text format 0.0.4: a counter's family is named with its `_total` suffix, like its samples.
        sample_name = name + ("_total" if kind == "counter" else "")
        family = self._families.setdefault(sample_name, (kind, help_, []))
        if value is None:
            return
        label_text = ""
        if labels:
            label_text = "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"
        family[2].append(f"{sample_name}{label_text} {_number(float(value))}")

    def add_summary(
        self, name: str, help_: str, total: float | None, count: float | None, labels: Mapping[str, str]
    ) -> None:
        family = self._families.setdefault(name, ("summary", help_, []))
        if total is None or count is None:
            return
        label_text = "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"
        family[2].append(f"{name}_sum{label_text} {_number(float(total))}")
        family[2].append(f"{name}_count{label_text} {_number(float(count))}")

    def render(self) -> str:
        out: list[str] = []
        for name, (kind, help_, samples) in self._families.items():
            out.append(f"# HELP {name} {help_.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(samples)
        return "\n".join(out) + "\n"


def _num(d: Mapping[str, Any] | None, key: str) -> float | None:
    if not d:
        return None
    v = d.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _bus_metrics(m: Exposition, buses: Iterable[Mapping[str, Any]]) -> None:
    for bus in buses:
        bl = {"bus": str(bus.get("id")), "protocol": str(bus.get("protocol", ""))}
        c = plain(bus.get("counters")) or {}
        m.add(
            "citynerve_bus_channel_up",
            "gauge",
            "1 when the bus channel is open",
            bus.get("channel") == "open",
            bl,
        )
        m.add(
            "citynerve_bus_adapter_missing",
            "gauge",
            "1 while the bus's serial port is missing (USB adapter unplugged): it opens when plugged in",
            bool(bus.get("adapter_missing")),
            bl,
        )
        m.add(
            "citynerve_bus_owner_crashes",
            "counter",
            "times the bus owner task crashed and was started again",
            _num(bus, "crashes"),
            bl,
        )
        m.add(
            "citynerve_bus_transactions",
            "counter",
            "transactions run on the bus",
            _num(c, "transactions"),
            bl,
        )
        for kind, key in (
            ("timeout", "timeouts"),
            ("frame", "frame_errors"),
            ("exception", "exceptions"),
            ("channel", "channel_errors"),
        ):
            m.add(
                "citynerve_bus_errors",
                "counter",
                "failed transactions by kind (timeout, frame, exception, channel)",
                _num(c, key),
                {**bl, "kind": kind},
            )
        m.add_summary(
            "citynerve_bus_latency_seconds",
            "time from request to reply of successful transactions",
            _num(c, "latency_sum_s"),
            _num(c, "latency_count"),
            bl,
        )
        refused = plain(bus.get("input")) or {}
        if refused:  # listening buses: garbage counted, never stored
            m.add(
                "citynerve_bus_garbage_lines",
                "counter",
                "lines a listening bus refused: too long, not text, or unparsed over the rate",
                _num(refused, "garbage_lines"),
                bl,
            )
            m.add(
                "citynerve_bus_garbage_bytes",
                "counter",
                "bytes of the lines a listening bus refused",
                _num(refused, "garbage_bytes"),
                bl,
            )
        for dev in bus.get("devices", []):
            dl = {"bus": bl["bus"], "device": str(dev.get("id"))}
            online = dev.get("online")
            m.add(
                "citynerve_device_online",
                "gauge",
                "1 online, 0 offline (absent until the first verdict)",
                None if online is None else float(bool(online)),
                dl,
            )
            m.add("citynerve_device_errors", "counter", "failed polls of the device", _num(dev, "errors"), dl)
            state = dev.get("state")
            if state is not None:
                for name in ("online", "degraded", "offline", "unknown"):
                    m.add(
                        "citynerve_device_state",
                        "gauge",
                        "1 for the device's current verdict state (online, degraded, offline, unknown)",
                        float(state == name),
                        {**dl, "state": name},
                    )
            window = dev.get("window") or {}
            if window:
                m.add(
                    "citynerve_device_window_attempts",
                    "gauge",
                    "transaction attempts in the verdict's sliding window (the failure rate's denominator)",
                    _num(window, "attempts"),
                    dl,
                )
                for kind, n in sorted((window.get("by_kind") or {}).items()):
                    m.add(
                        "citynerve_device_window_failures",
                        "gauge",
                        "failed attempts in the sliding window by kind (timeout, checksum, framing, ...)",
                        float(n),
                        {**dl, "kind": str(kind)},
                    )
            m.add(
                "citynerve_device_faulted",
                "gauge",
                "1 while the gateway's handling of the device is faulted (plan, decode), restarting",
                float(dev.get("faulted") is not None),
                dl,
            )
            m.add(
                "citynerve_device_last_success_timestamp_seconds",
                "gauge",
                "UTC time of the device's last good poll",
                _num(dev, "last_success"),
                dl,
            )


def _store_metrics(
    m: Exposition, store: Mapping[str, Any] | None, writer: Mapping[str, Any] | None, now: float
) -> None:
    store = plain(store)
    if store:
        for lane in store.get("lanes", []):
            ll = {"lane": str(lane.get("lane"))}
            m.add("citynerve_outbox_rows", "gauge", "rows waiting in the outbox", _num(lane, "rows"), ll)
            oldest = _num(lane, "oldest_ts")
            m.add(
                "citynerve_outbox_oldest_age_seconds",
                "gauge",
                "age of the oldest waiting row (0 when empty)",
                0.0 if oldest is None else max(0.0, now - oldest),
                ll,
            )
            m.add(
                "citynerve_outbox_dropped",
                "counter",
                "rows dropped by the size cap",
                _num(lane, "dropped"),
                ll,
            )
        for reason, n in sorted((store.get("dropped_by") or {}).items()):
            m.add(
                "citynerve_outbox_dropped_by_reason",
                "counter",
                "records dropped unsent (size_cap, damaged, disk_full), each range announced as an event",
                float(n),
                {"reason": str(reason)},
            )
        m.add(
            "citynerve_outbox_disk_full",
            "gauge",
            "1 while outbox commits find the disk full",
            1.0 if store.get("disk_full") else 0.0,
        )
        m.add(
            "citynerve_outbox_degraded",
            "gauge",
            "1 when a corrupt outbox was moved aside at start",
            1.0 if store.get("quarantined") else 0.0,
        )
        m.add("citynerve_outbox_file_bytes", "gauge", "outbox database file size", _num(store, "file_bytes"))
        m.add("citynerve_outbox_wal_bytes", "gauge", "outbox write-ahead log size", _num(store, "wal_bytes"))
    writer = plain(writer)
    if writer:
        m.add("citynerve_outbox_commits", "counter", "outbox commits", _num(writer, "commits"))
        m.add(
            "citynerve_outbox_pending_readings",
            "gauge",
            "readings held for the next commit",
            _num(writer, "pending_readings"),
        )
        m.add(
            "citynerve_outbox_failed_commits",
            "counter",
            "commits that failed",
            _num(writer, "failed_commits"),
        )


def _uplink_metrics(m: Exposition, uplink: Any, rate: float | None) -> None:
    up = plain(uplink)
    m.add("citynerve_uplink_configured", "gauge", "1 when an uplink is configured", up is not None)
    if not up:
        return
    state = up.get("state")
    m.add("citynerve_uplink_connected", "gauge", "1 while connected to a broker", bool(up.get("connected")))
    m.add(
        "citynerve_uplink_published_messages",
        "counter",
        "MQTT messages published",
        _num(up, "published_msgs"),
    )
    for lane, n in (up.get("published_rows") or {}).items():
        m.add(
            "citynerve_uplink_published_rows",
            "counter",
            "outbox rows published",
            float(n),
            {"lane": str(lane)},
        )
    for lane, n in (up.get("acked_rows") or {}).items():
        m.add(
            "citynerve_uplink_acked_rows",
            "counter",
            "outbox rows acknowledged",
            float(n),
            {"lane": str(lane)},
        )
    m.add("citynerve_uplink_reconnects", "counter", "reconnections after a lost link", _num(up, "reconnects"))
    m.add(
        "citynerve_uplink_connect_failures",
        "counter",
        "failed connection attempts",
        _num(up, "connect_failures"),
    )
    m.add(
        "citynerve_uplink_publish_rate",
        "gauge",
        "messages published per second over the last scrape interval",
        rate,
    )
    if state is not None:
        m.add(
            "citynerve_uplink_state",
            "gauge",
            "current link state (1 for the state label)",
            1.0,
            {"state": str(state)},  # a LinkState (StrEnum) or its text: both print the text
        )
    _destination_metrics(m, up.get("destinations"))
    extra = up.get("extra") if isinstance(up.get("extra"), dict) else {}
    for kind, key in (
        ("ack", "acks_refused"),
        ("command_unanswered", "commands_unanswered"),
        ("handler_error", "inbound_refused"),
    ):
        m.add(
            "citynerve_uplink_inbound_refused",
            "counter",
            "inbound messages refused: bad or unsigned e2e acks, junk commands not answered "
            "(rate limit), messages whose handling failed",
            _num(extra, key),
            {"kind": kind},
        )


def _destination_metrics(m: Exposition, destinations: Any) -> None:
    """Per destination ([[upstream]] id): link state, backlog and rows lost before it got them."""
    if not isinstance(destinations, dict):
        return
    for dest, d in destinations.items():
        if not isinstance(d, dict):
            continue
        m.add(
            "citynerve_destination_connected", "gauge", "1 while the destination's broker is connected",
            bool(d.get("connected")), {"destination": str(dest)},
        )  # fmt: skip
        for key, name, kind, help_ in (
            ("backlog", "citynerve_destination_backlog_rows", "gauge", "rows it has still to get"),
            ("dropped", "citynerve_destination_dropped_rows", "counter", "rows dropped before it got them"),
            ("acked", "citynerve_destination_acked_seq", "gauge", "its acknowledged seq"),
        ):  # fmt: skip
            lanes = d.get(key)
            if isinstance(lanes, dict):
                for lane, n in lanes.items():
                    m.add(name, kind, help_, float(n), {"destination": str(dest), "lane": str(lane)})


def _rules_metrics(m: Exposition, pipeline: Any, alarms: Sequence[Mapping[str, Any]] | None) -> None:
    p = plain(pipeline)
    if p:
        m.add(
            "citynerve_rule_evaluations",
            "counter",
            "readings evaluated by the rules (every normalized reading is)",
            _num(p, "readings_in"),
        )
        m.add("citynerve_rule_errors", "counter", "rule evaluations that raised", _num(p, "rule_errors"))
        m.add(
            "citynerve_events",
            "counter",
            "events raised or cleared (rules, devices, actions)",
            _num(p, "events"),
        )
        m.add(
            "citynerve_readings_reported",
            "counter",
            "readings passed on after report by exception",
            _num(p, "reported"),
        )
        m.add(
            "citynerve_readings_suppressed",
            "counter",
            "readings held back by deadband",
            _num(p, "suppressed"),
        )
    if alarms is not None:
        by_sev: dict[str, int] = {}
        for a in alarms:
            sev = str(a.get("severity", "unknown"))
            by_sev[sev] = by_sev.get(sev, 0) + 1
        m.add(
            "citynerve_alarms_active",
            "gauge",
            "alarms raised and not cleared",
            float(len(alarms)),
            {"severity": "all"},
        )
        for a in alarms:
            m.add(
                "citynerve_alarm_active",
                "gauge",
                "one sample per active alarm (rules, drivers, bus owners), labelled by what it is",
                1.0,
                {
                    "device": str(a.get("device_id", "")),
                    "kind": str(a.get("kind", "")),
                    "rule": str(a.get("rule", "")),
                    "subject": str(a.get("subject", "")),
                    "severity": str(a.get("severity", "unknown")),
                },
            )
        for sev, n in sorted(by_sev.items()):
            m.add(
                "citynerve_alarms_active",
                "gauge",
                "alarms raised and not cleared",
                float(n),
                {"severity": sev},
            )


def render_metrics(
    status: Mapping[str, Any],
    *,
    publish_rate: float | None = None,
    now: float | None = None,
    web: Mapping[str, int] | None = None,
) -> str:
    """The Prometheus text for one status snapshot (its `alarms` are the gateway's registry; `web`: the
    page's own limits and refusals)."""
    now = time.time() if now is None else now
    m = Exposition()
    info = {"gateway": str(status.get("gateway_id", "")), "version": str(status.get("version", ""))}
    m.add("citynerve_info", "gauge", "gateway id and version", 1.0, info)
    m.add("citynerve_uptime_seconds", "gauge", "seconds since the gateway started", _num(status, "uptime_s"))
    m.add("citynerve_devices_online", "gauge", "devices online now", _num(status, "devices_online"))
    m.add("citynerve_devices", "gauge", "devices configured on running buses", _num(status, "devices_total"))
    _bus_metrics(m, status.get("buses") or [])
    _store_metrics(m, status.get("store"), status.get("writer"), now)
    _uplink_metrics(m, status.get("uplink"), publish_rate)
    alarms = status.get("alarms")
    _rules_metrics(m, status.get("pipeline"), alarms if isinstance(alarms, list) else None)
    if web is not None:
        _web_metrics(m, web)
    clock = status.get("clock") or {}
    synced = clock.get("synchronized")
    m.add(
        "citynerve_clock_synchronized",
        "gauge",
        "1 when the wall clock is synchronised (NTP), 0 when not; absent when unknown",
        None if synced is None else float(bool(synced)),
    )
    m.add("citynerve_clock_steps", "counter", "steps of the wall clock seen", _num(clock, "wall_steps"))
    _cert_metrics(m, status.get("certificates"))
    return m.render()


def _cert_metrics(m: Exposition, certs: Mapping[str, Any] | None) -> None:
    """Expiry of the uplink's TLS client certificate and CAs (citynerve.gateway.uplink.certexpiry):
    the command destination's, and with a `destination` label each other destination's."""
    found: list[tuple[dict[str, str], Mapping[str, Any]]] = [
        ({}, c) for c in (certs or {}).get("certificates") or []
    ]
    for dest, other in ((certs or {}).get("destinations") or {}).items():
        found += [({"destination": str(dest)}, c) for c in (other or {}).get("certificates") or []]
    for where, c in found:
        labels = {"role": str(c.get("role")), "subject": str(c.get("subject")), **where}
        m.add(
            "citynerve_tls_cert_not_after_seconds",
            "gauge",
            "end of validity of the uplink's TLS client certificate / CA (seconds since the epoch)",
            _num(c, "not_after"),
            labels,
        )
        m.add(
            "citynerve_tls_cert_days_left",
            "gauge",
            "days until the uplink's TLS client certificate / CA expires (negative: expired)",
            _num(c, "days_left"),
            labels,
        )


def _web_metrics(m: Exposition, web: Mapping[str, int]) -> None:
    m.add(
        "citynerve_web_connection_limit",
        "gauge",
        "the status page's connection limit",
        web.get("max_clients"),
    )
    m.add("citynerve_web_connections_open", "gauge", "connections open on the status page", web.get("open"))
    for what, key in (
        ("busy", "refused_busy"),
        ("timeout", "timeouts"),
        ("peer", "refused_peers"),
        ("throttled_login", "throttled_logins"),
    ):
        m.add(
            "citynerve_web_refused",
            "counter",
            "status page connections refused: over a limit, too slow, not the gateway's user, throttled",
            web.get(key),
            {"reason": what},
        )
    m.add(
        "citynerve_web_failed_logins",
        "counter",
        "wrong passwords on the status page",
        web.get("failed_logins"),
    )


class RateMeter:
    """A rate from a monotonically growing counter, between two successive observations."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None
        self.rate: float | None = None

    def observe(self, value: float | None, now: float) -> float | None:
        if value is None:
            return self.rate
        if self._last is not None:
            t0, v0 = self._last
            if now - t0 >= 0.5:
                self.rate = max(0.0, (value - v0) / (now - t0)) if value >= v0 else None
                self._last = (now, value)
        else:
            self._last = (now, value)
        return self.rate
