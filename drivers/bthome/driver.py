"""The BTHome ListenDriver: BLE adverts of configured nodes -> SampleBatches and alarm events.

One driver per BLE adapter (bus protocol "bthome"). Every advert of a configured node is decoded,
decrypted with the node's key, checked against replay (the counter must increase; the last one
survives gateway restarts through `self.state`) and duplicates, then delivered as one SampleBatch.
Rejected adverts are counted per node and reason; nothing in an advert can stop the scanner, and a
fault of the driver on one advert is counted (`advert_faults`) and does not stop the listener.
Offline detection is the bus owner's: it reads `last_seen()` against each node's heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from citynerve.drivers.ble import Advertisement, BleBusConfig, Scanner
from citynerve.drivers.bthome import codec
from citynerve.drivers.bthome.config import BTHomeDevice, BTHomePoint
from citynerve.drivers.bthome.errors import (
    BTHomeFrameError,
    RejectReason,
    ReplayError,
    UnencryptedAdvertError,
)
from citynerve.drivers.bthome.link import ADVERTS_BURST as ADVERTS_BURST  # moved; read by tests
from citynerve.drivers.bthome.link import ADVERTS_PER_S, DeviceLinkStats, NearbyNode
from citynerve.drivers.bthome.replay import CounterGuard, key_fingerprint
from citynerve.gateway.api import (
    ChannelError,
    ConfigError,
    ConfigIssue,
    DiagParamError,
    Event,
    EventState,
    GatewayError,
    ListenDriver,
    PermanentError,
    Sample,
    SampleBatch,
    SampleSink,
    StateStore,
)

log = logging.getLogger(__name__)

DEDUPE_WINDOW_S = 4.0
"""Plaintext adverts with the same packet id and bytes within this window are one reading repeated
(a node repeats each advert several times so that one gets through); later ones are new heartbeats."""

QUEUE_SIZE = 2048
NEARBY_MAX = 512  # BTHome advertisers remembered for `diag scan`; the longest unheard are dropped
ALARM_KEY = "bthome.alarm.{device}.{point}"
"""State key of an event point's last state ("1"/"0"), so an alarm raised before a gateway restart
is not raised again after it (events are raised once and cleared once)."""
STATE_FLUSH_S = 1.0


@dataclass(slots=True)
class _DeviceRuntime:
    config: BTHomeDevice
    cipher: AESCCM | None
    points: tuple[tuple[str, BTHomePoint], ...]
    stats: DeviceLinkStats
    last_payload: bytes = b""
    last_ts: float = 0.0
    last_mono: float = -1e18  # monotonic time of `last_payload` (the duplicate window)
    heard: tuple[bytes, float, int | None] | None = None  # the last advert heard, even refused
    alarms: dict[str, bool] = field(default_factory=dict)
    alarms_loaded: bool = False
    key_error: ConfigError | None = None  # its key file cannot be read: its adverts are refused
    fingerprint: str = ""  # of its key (key_fingerprint): names its replay counter


class BTHomeDriver(ListenDriver[BleBusConfig, BTHomeDevice]):
    """Listens on one BLE adapter for the BTHome nodes configured on it."""

    def __init__(
        self,
        bus: BleBusConfig,
        devices: Sequence[BTHomeDevice],
        state: StateStore | None = None,
        *,
        link: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(bus, devices, state)
        self._link = link  # an in-process bumble LocalLink (tests, simulators); else bus.transport
        self._clock = clock  # monotonic: the advert rate (tests step it)
        self._guard = CounterGuard(state)
        self._runtime: dict[str, _DeviceRuntime] = {}
        self._by_mac: dict[str, _DeviceRuntime] = {}
        self._queue: asyncio.Queue[Advertisement] = asyncio.Queue(QUEUE_SIZE)
        self._alarms_dirty: set[tuple[str, str]] = set()
        self._scanner: Scanner | None = None
        self._listening = False
        self.nearby: dict[str, NearbyNode] = {}
        self.unknown_adverts = 0  # BTHome adverts from MACs that are not configured
        self.dropped_adverts = 0  # queue overflow: the consumer fell behind
        self.advert_faults: dict[str, int] = {}  # adverts the driver failed on, by exception type
        for dev in devices:
            if (other := self._by_mac.get(dev.address)) is not None:
                # One MAC, two devices: the adverts would go to one of them and the other be "offline".
                msg = f"address {dev.address} is already used on bus {bus.id!r} by device {other.config.id!r}"
                raise ConfigError([ConfigIssue("", f"devices[{dev.id}].address", msg, subject=dev.id)])
            points = tuple((name, p) for name, p in dev.points.items() if p.enabled)
            rt = _DeviceRuntime(dev, None, points, DeviceLinkStats())
            self._runtime[dev.id] = rt
            self._by_mac[dev.address] = rt

    # -- channel ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Read keys, open the adapter and start scanning. Raises ChannelError. A node whose key
        cannot be read is faulted on its own (`device_faults`): one bad key file must not keep the
        adapter, and every other node on it, down."""
        for rt in self._runtime.values():
            try:
                key = rt.config.resolve_key()
            except ConfigError as err:
                if rt.key_error is None or str(rt.key_error) != str(err):
                    log.error("bus %s: device %s: adverts refused: %s", self.bus.id, rt.config.id, err)
                rt.cipher, rt.key_error = None, err
                continue
            rt.cipher = AESCCM(key, tag_length=4) if key is not None else None
            rt.fingerprint = key_fingerprint(key) if key is not None else ""
            rt.key_error = None
        if self._scanner is None:
            self._scanner = Scanner(self.bus, self._on_advertisement, link=self._link)
        if not self._scanner.scanning:
            await self._scanner.start()

    async def close(self) -> None:
        if self._scanner is not None:
            await self._scanner.close()
            self._scanner = None
        with contextlib.suppress(Exception):
            await self._flush()

    @property
    def scanner(self) -> Scanner:
        if self._scanner is None:
            raise ChannelError(self.bus.id, "BLE adapter is not open")
        return self._scanner

    def _on_advertisement(self, adv: Advertisement) -> None:
        payload = adv.service_data_16(codec.UUID16)
        if payload is None:
            return
        rt = self._by_mac.get(adv.address)
        node = self.nearby.get(adv.address)
        if node is None:
            if len(self.nearby) >= NEARBY_MAX:
                del self.nearby[min(self.nearby, key=lambda a: self.nearby[a].mono)]
            self.nearby[adv.address] = NearbyNode(
                adv.address, adv.rssi, payload, adv.ts, adv.mono, rt.config.id if rt else None
            )
        else:
            node.rssi, node.payload, node.ts, node.mono = adv.rssi, payload, adv.ts, adv.mono
            node.count += 1
        if rt is None:
            self.unknown_adverts += 1
            return
        try:
            self._queue.put_nowait(adv)
        except asyncio.QueueFull:
            self.dropped_adverts += 1

    # -- listening ----------------------------------------------------------------------------

    async def listen(self, sink: SampleSink) -> None:
        """Deliver every fresh advert of a configured node to `sink` until cancelled."""
        scanner = self.scanner
        self._listening = True
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(scanner.watch(), name=f"bus[{self.bus.id}].ble.watchdog")
                tg.create_task(self._flush_state(), name=f"bus[{self.bus.id}].bthome.state")
                while True:
                    adv = await self._queue.get()
                    await self.handle(adv, sink)
        finally:
            self._listening = False
            with contextlib.suppress(Exception):
                await self._flush()

    async def _flush_state(self) -> None:
        while True:
            await asyncio.sleep(STATE_FLUSH_S)
            try:
                await self._flush()
            except Exception as err:  # the store may be busy; state stays cached and dirty
                log.warning("bus %s: could not save replay counters: %s", self.bus.id, err)

    async def _flush(self) -> None:
        await self._guard.flush()
        while self._alarms_dirty and self.state is not None:
            dev_id, point = self._alarms_dirty.pop()
            on = self._runtime[dev_id].alarms.get(point, False)
            try:
                await self.state.put(ALARM_KEY.format(device=dev_id, point=point), "1" if on else "0")
            except Exception:
                self._alarms_dirty.add((dev_id, point))
                raise

    async def _load_alarms(self, rt: _DeviceRuntime) -> None:
        rt.alarms_loaded = True
        if self.state is None:
            return
        for name, point in rt.points:
            if point.event_kind and name not in rt.alarms:
                try:
                    stored = await self.state.get(ALARM_KEY.format(device=rt.config.id, point=name))
                except Exception as err:  # store down: an alarm may be raised twice, never lost
                    log.warning("device %s: cannot read alarm state (%s)", rt.config.id, err)
                    return
                if stored in ("0", "1"):
                    rt.alarms[name] = stored == "1"

    async def handle(self, adv: Advertisement, sink: SampleSink) -> None:
        """Decode, check and deliver one advertisement. Bad adverts are counted, never raised; so is
        a fault of the driver itself on one advert (`advert_faults`), so that one advert can never
        stop the listener. What `sink` raises is the caller's (the bus owner restarts `listen`)."""
        rt = self._by_mac.get(adv.address)
        payload = adv.service_data_16(codec.UUID16)
        if rt is None or payload is None:
            return
        try:
            readings = await self._readings(rt, adv, payload)
        except Exception as err:  # a driver bug on one advert: counted and logged, the others go on
            self._advert_fault(rt, err)
            return
        if readings is None:
            return
        batch, events = readings
        if batch is not None:
            sink.submit(batch)
        for event in events:
            sink.event(event)

    async def _readings(
        self, rt: _DeviceRuntime, adv: Advertisement, payload: bytes
    ) -> tuple[SampleBatch | None, list[Event]] | None:
        """What one advert of a configured node delivers, or None (a duplicate, refused, over rate)."""
        stats = rt.stats
        rt.heard = (payload, adv.ts, adv.rssi)
        if rt.key_error is not None:  # its key file, refused at open: logged there, not per advert
            stats.fail(RejectReason.NO_KEY, str(rt.key_error), self._clock())
            return None
        if payload and payload == rt.last_payload and payload[0] & codec.FLAG_ENCRYPTED:
            # The node repeating its last advert, already authenticated: skip the decryption.
            stats.duplicates += 1
            return None
        try:
            advert = codec.parse(payload, mac=adv.address, cipher=rt.cipher)
            if rt.config.encrypted and not advert.encrypted:
                raise UnencryptedAdvertError(adv.address, payload)
            if self._is_duplicate(rt, advert, payload, adv.mono):
                stats.duplicates += 1
                return None
            if advert.counter is not None:
                last = await self._guard.last(adv.address, rt.fingerprint)
                if last is not None and advert.counter <= last:
                    raise ReplayError(adv.address, advert.counter, last, payload)
        except BTHomeFrameError as err:
            if isinstance(err, ReplayError):
                stats.counter_restarted = err.restarted
            if changes := stats.fail(err.reason_code, str(err), self._clock()):
                more = f" ({changes} times since the last such line, logged once a minute at most)"
                log.warning(
                    "device %s: advert rejected (%s): %s%s",
                    rt.config.id,
                    err.reason_code,
                    err,
                    more if changes > 1 else "",
                )
            return None
        if not stats.admit(self._clock()):
            if stats.rate_limited == 1 or stats.rate_limited % 10_000 == 0:
                log.warning(
                    "device %s: more than %g adverts/s; %d counted, not stored",
                    rt.config.id,
                    ADVERTS_PER_S,
                    stats.rate_limited,
                )
            return None
        if advert.counter is not None:
            # Only now, after the rate: a refused advert that had used up its counter made the node's
            # own repeat of it, once the rate allowed, a "replay" (and its reading was never delivered).
            self._guard.accept(adv.address, rt.fingerprint, advert.counter)
        if stats.recover():  # only an admitted advert: one over the rate is not accepted
            log.info("device %s: adverts accepted again", rt.config.id)
        stats.accepted += 1
        stats.last_seen = adv.ts
        stats.last_rssi = adv.rssi
        stats.last_counter = advert.counter
        stats.last_packet_id = advert.packet_id
        rt.last_payload, rt.last_ts, rt.last_mono = payload, adv.ts, adv.mono
        if not rt.alarms_loaded:
            await self._load_alarms(rt)
        return self._batch(rt, advert, adv.ts)

    def _advert_fault(self, rt: _DeviceRuntime, err: Exception) -> None:
        kind = type(err).__name__
        n = self.advert_faults[kind] = self.advert_faults.get(kind, 0) + 1
        rt.stats.last_error = f"driver fault ({kind}): {err}"
        if n == 1 or n % 10_000 == 0:  # once per kind, then rarely: a flood must not flood the log
            log.error(
                "bus %s: device %s: advert dropped, the driver failed on it (%s, %d so far)",
                self.bus.id,
                rt.config.id,
                kind,
                n,
                exc_info=err,
            )

    def _is_duplicate(self, rt: _DeviceRuntime, advert: codec.Advert, payload: bytes, mono: float) -> bool:
        if payload != rt.last_payload:
            return False
        if advert.counter is not None:
            # Same bytes = same counter: the node repeating itself, not a replay of an older advert.
            return True
        pid = advert.packet_id
        return pid is not None and mono - rt.last_mono < DEDUPE_WINDOW_S

    def _batch(
        self, rt: _DeviceRuntime, advert: codec.Advert, ts: float
    ) -> tuple[SampleBatch | None, list[Event]]:
        samples: list[Sample] = []
        events: list[Event] = []
        for name, point in rt.points:
            value = point.value_in(advert)
            if value is None:  # nodes may send a subset of objects per advert (e.g. alarm-only)
                continue
            samples.append(Sample(name, value))
            if point.event_kind:
                on = bool(value)
                was = rt.alarms.get(name)
                rt.alarms[name] = on
                if on != was:
                    self._alarms_dirty.add((rt.config.id, name))
                if on != bool(was) and (was is not None or on):
                    events.append(self._event(rt.config, name, point, on, value, ts))
        return (SampleBatch(rt.config.id, ts, tuple(samples)) if samples else None), events

    @staticmethod
    def _event(dev: BTHomeDevice, name: str, point: BTHomePoint, on: bool, value: Any, ts: float) -> Event:
        attrs: dict[str, Any] = {"address_code": dev.location.address_code, "mac": dev.address}
        if dev.component_code:
            attrs["component_code"] = dev.component_code
        return Event(
            device_id=dev.id,
            kind=point.event_kind,
            state=EventState.RAISED if on else EventState.CLEARED,
            severity=point.severity,
            ts=ts,
            rule=f"bthome.{name}",
            value=value,
            message=f"{dev.name or dev.id}: {point.event_kind} {'raised' if on else 'cleared'} by the node",
            attrs=attrs,
        )

    # -- what others read ---------------------------------------------------------------------

    def last_seen(self, device_id: str) -> float | None:
        """UTC time of the device's last fresh advert (duplicates and rejects do not count)."""
        rt = self._runtime.get(device_id)
        return rt.stats.last_seen if rt else None

    def device_faults(self) -> dict[str, GatewayError]:
        """Nodes whose key file could not be read at the last open, by device id."""
        return {dev_id: rt.key_error for dev_id, rt in self._runtime.items() if rt.key_error is not None}

    def stats(self) -> Mapping[str, DeviceLinkStats]:
        """Per-device link statistics, by device id."""
        return {dev_id: rt.stats for dev_id, rt in self._runtime.items()}

    def input_stats(self) -> dict[str, int]:
        """Adverts refused on this radio: unknown nodes, queue overflow, over-rate, rejected, and
        those the driver failed on (`advert_faults`: a bug, logged with its traceback)."""
        return {
            "unknown_adverts": self.unknown_adverts,
            "dropped_adverts": self.dropped_adverts,
            "rate_limited": sum(rt.stats.rate_limited for rt in self._runtime.values()),
            "rejected_adverts": sum(rt.stats.rejected_total for rt in self._runtime.values()),
            "advert_faults": sum(self.advert_faults.values()),
        }

    async def diag(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Actions: `scan` {duration}, `stats`, `reset-counter` {device}."""
        if action == "scan":
            return await self._diag_scan(_scan_duration(params.get("duration", 5.0)))
        if action == "stats":
            sc = self._scanner.stats if self._scanner else None
            return {
                "devices": {dev_id: s.as_dict() for dev_id, s in self.stats().items()},
                "unknown_adverts": self.unknown_adverts,
                "dropped_adverts": self.dropped_adverts,
                "advert_faults": dict(self.advert_faults),
                "scanner": None
                if sc is None
                else {
                    "adverts": sc.adverts,
                    "restarts": sc.restarts,
                    "resets": sc.resets,
                    "last_heard": sc.last_heard,
                },
            }
        if action == "last-advert":
            return self._last_advert(str(params.get("device", "")))
        if action == "reset-counter":
            rt = self._runtime.get(str(params.get("device", "")))
            if rt is None:
                raise PermanentError(f"bus {self.bus.id}: no device {params.get('device')!r}")
            return await self._reset_counter(rt)
        return await super().diag(action, params)

    async def _reset_counter(self, rt: _DeviceRuntime) -> dict[str, Any]:
        """Forget the node's replay counter under its current key (a node whose flash was erased and
        that kept its key): its next advert is accepted whatever its counter. Refused for a node
        whose key cannot be read (there is no counter to reset)."""
        if rt.key_error is not None:
            raise PermanentError(f"bus {self.bus.id}: device {rt.config.id}: {rt.key_error}")
        was = self._guard.cached(rt.config.address, rt.fingerprint)
        self._guard.reset(rt.config.address, rt.fingerprint)
        await self._guard.flush()
        rt.stats.forgive_replays()
        log.warning(
            "bus %s: device %s: replay counter reset (was %s): its next advert is accepted",
            self.bus.id,
            rt.config.id,
            "unknown" if was is None else was,
        )
        return {"device": rt.config.id, "counter": None, "was": was}

    def _last_advert(self, device_id: str) -> dict[str, Any]:
        """What a BLE node "answers" a remote device_read with: a node is never asked, it
        advertises; so its last accepted advert (BTHome service data, hex, as received: encrypted
        nodes' stays encrypted), the last one heard even if refused, and its link statistics."""
        rt = self._runtime.get(device_id)
        if rt is None:
            raise PermanentError(f"bus {self.bus.id}: no device {device_id!r}")
        accepted = None
        if rt.last_payload:
            accepted = {
                "service_data": rt.last_payload.hex(" "),
                "ts": rt.last_ts,
                "age_s": round(max(0.0, time.monotonic() - rt.last_mono), 3),
                "rssi": rt.stats.last_rssi,
                "counter": rt.stats.last_counter,
                "packet_id": rt.stats.last_packet_id,
            }
        heard = None
        if rt.heard is not None:
            payload, ts, rssi = rt.heard
            heard = {"service_data": payload.hex(" "), "ts": ts, "rssi": rssi}
        return {
            "mac": rt.config.address,
            "uuid16": f"{codec.UUID16:04x}",
            "encrypted": rt.config.encrypted,
            "last_advert": accepted,
            "last_heard": heard,
            "link": rt.stats.as_dict(),
        }

    async def _diag_scan(self, duration: float) -> dict[str, Any]:
        since = time.monotonic()  # not the wall clock: a step during the scan would hide every node
        scanner = self.scanner
        started = not scanner.scanning
        if started:
            await scanner.start()
        try:
            # The callback keeps `nearby` current whether or not `listen` runs; when it does not,
            # adverts of configured nodes are left in the queue for it, undelivered and unaccepted.
            await asyncio.sleep(duration)
        finally:
            if started:
                await scanner.stop()
        return {
            "duration_s": duration,
            "devices": [self._describe_nearby(n) for n in self._seen_since(since)],
        }

    def _seen_since(self, since: float) -> list[NearbyNode]:
        return sorted((n for n in self.nearby.values() if n.mono >= since), key=lambda n: -(n.rssi or -999))

    def _describe_nearby(self, node: NearbyNode) -> dict[str, Any]:
        rt = self._by_mac.get(node.address)
        encrypted = bool(node.payload) and bool(node.payload[0] & codec.FLAG_ENCRYPTED)
        out: dict[str, Any] = {
            "address": node.address,
            "rssi": node.rssi,
            "encrypted": encrypted,
            "configured": rt is not None,
            "device_id": rt.config.id if rt else None,
            "adverts": node.count,
            "payload": node.payload.hex(),
            "values": None,
            "error": None,
        }
        try:
            advert = codec.parse(node.payload, mac=node.address, cipher=rt.cipher if rt else None)
            out["values"] = {
                f"{m.name}{'' if m.index == 0 else f'_{m.index + 1}'}": m.value
                for m in advert.measurements
                if m.object_id != 0x00
            }
            out["counter"] = advert.counter
        except BTHomeFrameError as err:
            out["error"] = f"{err.reason_code}: {err.reason}"
        return out


def _scan_duration(raw: Any) -> float:
    """The `duration` of diag `scan` (seconds, 0 < d <= 300). Raises DiagParamError."""
    try:
        duration = float(raw)
    except (TypeError, ValueError) as err:
        raise DiagParamError("scan", "duration", f"expected seconds, got {raw!r}") from err
    if isinstance(raw, bool) or not 0 < duration <= 300:  # NaN fails the comparison too
        raise DiagParamError("scan", "duration", f"expected 0 < seconds <= 300, got {raw!r}")
    return duration
