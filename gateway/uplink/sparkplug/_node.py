"""The Sparkplug B edge node: the gateway as a Sparkplug edge node, its devices as Sparkplug devices.

Pure and sans-I/O: it turns stored records, device online/offline and node commands into MQTT
messages (topic, payload bytes, qos, retain) and keeps what a Sparkplug session needs (bdSeq, seq,
aliases, the last value of every metric for births). The async part is `_session.SparkplugSession`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from citynerve.gateway.api import Event, EventState, Quality, Reading, Value
from citynerve.gateway.uplink.sparkplug._inputs import (
    REBIRTH_METRIC,
    HostState,
    NodeCommand,
    parse_node_command,
    parse_state,
)
from citynerve.gateway.uplink.sparkplug._messages import (
    Chain,
    Entry,
    SessionStateError,
    SparkplugMessage,
    SparkplugNameError,
    StoredRecord,
    Verb,
    add_data_metrics,
    birth_metric,
    check_name,
    ms,
)
from citynerve.gateway.uplink.sparkplug._metrics import (
    DataType,
    DeviceSpec,
    MetricState,
    datatype_of_value,
    metric_value,
)
from citynerve.gateway.uplink.sparkplug._proto import Payload
from citynerve.gateway.uplink.sparkplug._sizes import (
    DATA_BYTES,
    subject_message,
    value_bytes,
)
from citynerve.gateway.uplink.sparkplug._skips import SkipLog

__all__ = [
    "Chain",
    "EdgeNode",
    "SessionStateError",
    "SparkplugMessage",
    "SparkplugNameError",
    "StoredRecord",
    "Verb",
    "ms",
]

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
BD_SEQ_METRIC = "bdSeq"
OFFLINE_KIND = "device_offline"  # the bus owner's event for a device that stopped answering
ALARM_FIELDS: tuple[tuple[str, DataType], ...] = (
    ("Active", DataType.BOOLEAN),
    ("Severity", DataType.INT32),
    ("Rule", DataType.STRING),
    ("Message", DataType.STRING),
    ("EventId", DataType.STRING),
)
MAX_NAME = 200  # a metric name built from a kind or subject is cut to this many characters


class _Device:
    __slots__ = ("alarm_kinds", "device_id", "held", "metrics", "offline_alarm", "online", "undeclared")

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.metrics: dict[str, MetricState] = {}
        self.online = True  # born on the host (a DBIRTH and no DDEATH since)
        self.offline_alarm = False  # the gateway holds its device_offline alarm active
        self.alarm_kinds: set[str] = set()
        # Per kind, the raised alarms its own folder `Alarms/<kind>` carries: the subject-less one
        # ("") and the subjects that had no room for a folder of their own. Active while any is.
        self.held: dict[str, set[str]] = {}
        self.undeclared = False  # metrics added or retyped since its last birth: a birth is due


class EdgeNode:
    """A Sparkplug B 3.0 edge node (`group_id`/`edge_node_id`) with `devices`; those in `offline`
    (their device_offline alarm active, restored after a restart) start dead: left out of the
    births until the clear of that alarm (data of theirs meanwhile: DBIRTH, data, DDEATH).

    Life of a session: `start_session()` gives the NDEATH to set as the MQTT will and uses up the
    bdSeq (persist `next_bd_seq` before connecting); once the primary host is online, `birth()`
    gives NBIRTH and a DBIRTH per live device; then `encode(records)`, `device_online/offline`,
    `command(...)` give what to publish. Every message after NBIRTH takes the next seq (0-255).
    """

    def __init__(
        self,
        *,
        group_id: str,
        edge_node_id: str,
        devices: Iterable[DeviceSpec] = (),
        offline: Iterable[str] = (),
        node_alarm_kinds: Iterable[str] = (),
        bd_seq: int = 0,
        data_qos: int = 1,
        max_metrics_per_message: int = 500,
        max_devices: int = 10_000,
        max_metrics_per_device: int = 2_000,
    ) -> None:
        self.group_id = check_name("group_id", group_id)
        self.edge_node_id = check_name("edge_node_id", edge_node_id)
        self.next_bd_seq = bd_seq % 256
        self.bd_seq: int | None = None  # the current session's
        self.data_qos = data_qos
        self.max_metrics_per_message = max(1, max_metrics_per_message)
        self.max_devices = max_devices
        self.max_metrics_per_device = max_metrics_per_device
        self._skips = SkipLog()  # records that could not be sent (limits)
        self._stale_skipped = 0  # stale readings of a dead device (its DDEATH told the host)
        self._next_alias = 0
        self._node = _Device(edge_node_id)
        self._rebirth = self._declare(self._node, REBIRTH_METRIC, DataType.BOOLEAN)
        self._rebirth.value = False
        for kind in node_alarm_kinds:
            self._declare_alarm(self._node, kind)
        self._devices: dict[str, _Device] = {}
        offline = set(offline)
        for spec in devices:
            dev = self._devices[check_name("device id", spec.device_id)] = _Device(spec.device_id)
            dev.offline_alarm = spec.device_id in offline
            dev.online = not dev.offline_alarm
            for point in spec.points:
                self._declare(dev, point.name, point.datatype, point.unit)
            for kind in (*spec.alarm_kinds, OFFLINE_KIND):  # every device can go offline
                if kind not in dev.alarm_kinds:
                    self._declare_alarm(dev, kind)
        self._seq = 0
        self._born = False
        # (epoch, seq): the outbox rows from this seq on were committed after this session's
        # first birth; the rows before it are historical (whatever the wall clock said).
        self._live_from: tuple[str, int] | None = None
        self._behind: set[_Device] = set()  # historical data changed their values since their birth
        self._chain_epoch = ""
        self._chain = {"event": 0, "telemetry": 0}  # the last seq sent per lane: the next prev_seq

    # --- topics -------------------------------------------------------------------------------

    def topic(self, verb: Verb, device_id: str | None = None) -> str:
        base = f"{NAMESPACE}/{self.group_id}/{verb.value}/{self.edge_node_id}"
        return base if device_id is None else f"{base}/{device_id}"

    @property
    def command_topic(self) -> str:
        return self.topic(Verb.NCMD)

    @staticmethod
    def state_topic(host_id: str) -> str:
        return f"{NAMESPACE}/STATE/{check_name('primary host id', host_id)}"

    @property
    def skipped(self) -> int:
        """Records that could not be sent: readings and events of a device past `max_devices` (or
        whose id cannot be a topic level), readings of a new point past `max_metrics_per_device`
        (each cause logged once), and stale readings of a dead device (its DDEATH said so)."""
        return self._skips.count + self._stale_skipped

    @property
    def born(self) -> bool:
        return self._born

    def device_ids(self) -> list[str]:
        return list(self._devices)

    def is_online(self, device_id: str) -> bool:
        dev = self._devices.get(device_id)
        return dev is not None and dev.online

    # --- session ------------------------------------------------------------------------------

    def start_session(self) -> SparkplugMessage:
        """A new MQTT session: its bdSeq, and the NDEATH to register as the will."""
        self.bd_seq = self.next_bd_seq
        self.next_bd_seq = (self.bd_seq + 1) % 256
        self._born = False
        self._live_from = None
        return self.death()

    def historical(self, stored: StoredRecord) -> bool:
        """Replayed from the backlog, or queued in the outbox before this session's first birth
        (its row's seq below `live_from`): historical data. Decided by the outbox's order, never
        by comparing wall times: a clock stepped back would make live alarms historical."""
        if stored.replayed:
            return True
        mark = self._live_from
        return mark is not None and stored.epoch == mark[0] and stored.seq < mark[1]

    @property
    def chain(self) -> Chain:
        """The last seq sent per lane (the next records' `prev_seq`)."""
        return Chain(self._chain_epoch, self._chain["event"], self._chain["telemetry"])

    def restore_chain(self, chain: Chain) -> None:
        """Go on from `chain` (what the host was sent up to the last acknowledged batch): a new
        session sends again what the last one did not get acknowledged, with the same links."""
        self._chain_epoch = chain.epoch
        self._chain = {"event": chain.event, "telemetry": chain.telemetry}

    def death(self) -> SparkplugMessage:
        """The NDEATH of the current session (the will, or published before a clean disconnect)."""
        if self.bd_seq is None:
            raise SessionStateError("no session: call start_session() first")
        payload = Payload()
        payload.metrics.add(name=BD_SEQ_METRIC, datatype=DataType.UINT64, long_value=self.bd_seq)
        self._born = False
        return SparkplugMessage(self.topic(Verb.NDEATH), payload.SerializeToString(), 1, False, Verb.NDEATH)

    def birth(self, now_ms: int, *, live_from: tuple[str, int] | None = None) -> list[SparkplugMessage]:
        """NBIRTH (seq 0, bdSeq of the session) and a DBIRTH per live device: on connect once the
        primary host is online, and again on a rebirth command. Births carry the present value of
        every metric (the newest record's, sent as historical or not). `live_from`, given at the
        session's first birth: the outbox's (epoch, next seq) then; rows before it are historical."""
        if self.bd_seq is None:
            raise SessionStateError("no session: call start_session() first")
        if self._live_from is None:
            self._live_from = live_from
        self._behind.clear()  # every live device is born with its present values
        payload = Payload(timestamp=now_ms, seq=0)
        payload.metrics.add(
            name=BD_SEQ_METRIC, datatype=DataType.UINT64, long_value=self.bd_seq, timestamp=now_ms
        )
        for m in self._node.metrics.values():
            birth_metric(payload, m, now_ms)
        self._seq = 0
        self._born = True
        self._node.undeclared = False
        out = [
            SparkplugMessage(
                self.topic(Verb.NBIRTH),
                payload.SerializeToString(),
                self.data_qos,
                False,
                Verb.NBIRTH,
                None,
                0,
            )
        ]
        out += [self._device_birth(dev, now_ms) for dev in self._devices.values() if dev.online]
        return out

    def present(self, now_ms: int) -> list[SparkplugMessage]:
        """Births that make the present values current on the host, once historical data changed
        them (a host keeps a historical value out of a tag's current value): a DBIRTH per live
        device concerned, a full rebirth when node metrics are. Call it once the backlog is out."""
        if not self._born or not self._behind:
            return []
        if self._node in self._behind:
            return self.birth(now_ms)
        behind, self._behind = self._behind, set()
        return [self._device_birth(dev, now_ms) for dev in behind if dev.online]

    def device_online(self, device_id: str, now_ms: int) -> list[SparkplugMessage]:
        """DBIRTH when `device_id` comes back (or is new); nothing when it is already born."""
        self._require_born()
        dev = self._device(device_id)
        if dev is None or dev.online:
            return []
        dev.online = True
        return [self._device_birth(dev, now_ms)]

    def device_offline(self, device_id: str, now_ms: int) -> list[SparkplugMessage]:
        """DDEATH when `device_id` stops answering; nothing when it is unknown or already dead."""
        self._require_born()
        dev = self._devices.get(device_id)
        if dev is None or not dev.online:
            return []
        dev.online = False
        payload = Payload(timestamp=now_ms, seq=self._next_seq())
        return [
            SparkplugMessage(
                self.topic(Verb.DDEATH, device_id),
                payload.SerializeToString(),
                self.data_qos,
                False,
                Verb.DDEATH,
                device_id,
                payload.seq,
            )
        ]

    def host_state(self, topic: str, host_id: str, payload: bytes) -> HostState:
        """The primary host's STATE (SparkplugInputError when malformed)."""
        return parse_state(topic, host_id, payload)

    def asks_rebirth(self, topic: str, payload: bytes) -> bool:
        """Whether an NCMD asks for a rebirth (`Node Control/Rebirth` = true). SparkplugInputError
        when the message is malformed or too big."""
        cmd = parse_node_command(topic, self.command_topic, payload, self._rebirth.alias)
        return cmd is NodeCommand.REBIRTH

    def command(self, topic: str, payload: bytes, now_ms: int) -> list[SparkplugMessage]:
        """What an NCMD asks: a full rebirth for `Node Control/Rebirth` = true, else nothing.
        SparkplugInputError when the message is malformed or too big."""
        if self.asks_rebirth(topic, payload) and self._born:
            return self.birth(now_ms)
        return []

    # --- data ---------------------------------------------------------------------------------

    def encode(
        self, records: Iterable[StoredRecord], now_ms: int, *, max_bytes: int | None = None
    ) -> list[SparkplugMessage]:
        """NDATA/DDATA for `records` in their order (one message per run of one device's records,
        at most `max_metrics_per_message` metrics and, when given, `max_bytes` by `value_bytes`'
        bound; a record goes whole into one message), with the births and deaths they imply: a
        DBIRTH before data of a device not born or of a metric not declared, a DDEATH after a
        device_offline alarm, a full rebirth for an alarm kind the NBIRTH did not declare. A
        device whose device_offline alarm is active, born again by its records (older data from
        a backlog or after a restart), dies again (DDEATH) after them; a `state_only` record
        gives the DDEATH or DBIRTH alone."""
        self._require_born()
        out: list[SparkplugMessage] = []
        group: _Device | None = None
        metrics: list[Entry] = []

        size = DATA_BYTES  # the bound of the message being built (counted only with max_bytes)

        def flush() -> None:
            nonlocal metrics, size
            if group is not None and metrics:
                out.append(self._data_message(group, metrics, now_ms))
            metrics, size = [], DATA_BYTES

        def settle(dev: _Device | None) -> None:
            """After a device's run: still offline in the gateway, so dead on the host again."""
            if dev is not None and dev is not self._node and dev.online and dev.offline_alarm:
                out.extend(self.device_offline(dev.device_id, now_ms))

        # First every metric the records need is declared (or retyped), so that a device with
        # several new points is born once per batch, not once per point.
        prepared: list[tuple[StoredRecord, _Device, list[tuple[MetricState, Value]]]] = []
        for stored in records:
            rec = stored.record
            if stored.state_only:
                known = self._devices.get(rec.device_id)
                if known is None or not isinstance(rec, Event) or rec.kind != OFFLINE_KIND:
                    continue  # not an outbox row: nothing is lost
                prepared.append((stored, known, []))
                continue
            dev = self._target(rec.device_id)
            if dev is None:
                bad = not rec.device_id or any(c in rec.device_id for c in "/+#")
                why = "not a topic level" if bad else f"past {self.max_devices} devices"
                self._skips.skip(rec.device_id, why)
                continue
            if isinstance(rec, Event):
                prepared.append((stored, dev, self._event_metrics(dev, rec)))
                continue
            wanted = self._reading_metrics(dev, rec)
            if wanted is None:
                limit = self.max_metrics_per_device
                why = f"a new point past {limit} metrics" if rec.point else "no point name"
                self._skips.skip(rec.device_id, why)
                continue
            prepared.append((stored, dev, wanted))

        for stored, dev, wanted in prepared:
            rec = stored.record
            if stored.state_only and isinstance(rec, Event):
                flush()
                dev.offline_alarm = rec.state is EventState.RAISED
                if dev.offline_alarm:
                    out += self.device_offline(dev.device_id, now_ms)
                else:
                    out += self.device_online(dev.device_id, now_ms)
                continue
            historical = self.historical(stored)
            node_level = dev is self._node
            offline_event = isinstance(rec, Event) and rec.kind == OFFLINE_KIND and not node_level
            needs_birth = dev.undeclared or (not node_level and not dev.online)
            stale = isinstance(rec, Reading) and rec.quality is Quality.STALE
            if not node_level and not dev.online and stale:
                self._stale_skipped += 1  # the DDEATH already told the host every metric is stale
                continue
            cost = 0 if max_bytes is None else sum(value_bytes(value) for _, value in wanted)
            if (
                needs_birth
                or group is not dev
                or len(metrics) + len(wanted) > self.max_metrics_per_message
                or (max_bytes is not None and size + cost > max_bytes)
            ):
                flush()
                if group is not dev:
                    settle(group)
                group = dev
            size += cost
            if needs_birth:
                if node_level:
                    out += self.birth(now_ms)
                elif dev.online:
                    out.append(self._device_birth(dev, now_ms))
                else:
                    out += self.device_online(dev.device_id, now_ms)
            if stored.epoch != self._chain_epoch:  # a new store epoch: its chain starts at 0
                self._chain_epoch, self._chain = stored.epoch, {"event": 0, "telemetry": 0}
            lane = "event" if isinstance(rec, Event) else "telemetry"
            prev_seq, self._chain[lane] = self._chain[lane], stored.seq
            for m, value in wanted:
                # The newest record's value (by outbox seq, not by wall time), sent as historical
                # or not, is the present one: what births carry.
                if stored.seq >= m.seq or stored.epoch != m.epoch:
                    if historical and m.value != value:
                        self._behind.add(dev)  # the host keeps it out of the tag's current value
                    m.value, m.ts_ms, m.epoch, m.seq = value, ms(rec.ts), stored.epoch, stored.seq
                metrics.append((m, value, stored, historical, prev_seq))
            if offline_event and isinstance(rec, Event) and not rec.one_shot:
                flush()
                dev.offline_alarm = rec.state is EventState.RAISED
                if dev.offline_alarm:
                    out += self.device_offline(dev.device_id, now_ms)
        flush()
        settle(group)
        return out

    # --- internals ----------------------------------------------------------------------------

    def _require_born(self) -> None:
        if not self._born:
            raise SessionStateError("no NBIRTH in this session yet: call birth() first")

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 256
        return self._seq

    def _take_alias(self) -> int:
        alias = self._next_alias
        self._next_alias += 1
        return alias

    def _declare(
        self, dev: _Device, name: str, datatype: DataType, unit: str = "", *, born: bool = True
    ) -> MetricState:
        m = dev.metrics.get(name)
        if m is None:
            m = dev.metrics[name] = MetricState(name[:MAX_NAME], self._take_alias(), datatype, unit)
            dev.undeclared |= not born
        return m

    def _declare_alarm(self, dev: _Device, folder: str, *, born: bool = True) -> list[MetricState]:
        dev.alarm_kinds.add(folder)
        base = f"Alarms/{folder[:MAX_NAME]}"
        return [self._declare(dev, f"{base}/{f}", dt, born=born) for f, dt in ALARM_FIELDS]

    def _device(self, device_id: str) -> _Device | None:
        dev = self._devices.get(device_id)
        if dev is None:
            if len(self._devices) >= self.max_devices or not device_id or any(c in device_id for c in "/+#"):
                return None
            dev = self._devices[device_id] = _Device(device_id)
            dev.online = False  # not born yet: the caller births it
        return dev

    def _target(self, device_id: str) -> _Device | None:
        if device_id in ("", self.edge_node_id) and device_id not in self._devices:
            return self._node
        return self._device(device_id)

    def _reading_metrics(self, dev: _Device, rec: Reading) -> list[tuple[MetricState, Value]] | None:
        m = dev.metrics.get(rec.point)
        if m is None:
            if len(dev.metrics) >= self.max_metrics_per_device or not rec.point:
                return None
            m = self._declare(dev, rec.point, datatype_of_value(rec.value), rec.unit, born=False)
        elif rec.value is not None and metric_value(m.datatype, rec.value).field is None:
            # A value its datatype cannot hold (a fractional value of an integer point, a string of
            # a number point): the metric takes the value's datatype and its owner is born again
            # with it, rather than the value being lost. Datatypes only widen, so this settles.
            m.datatype = datatype_of_value(rec.value)
            if metric_value(m.datatype, rec.value).field is None:
                m.datatype = DataType.DOUBLE  # an integer past 64 bits
            dev.undeclared = True
        return [(m, rec.value)]

    def _event_metrics(self, dev: _Device, ev: Event) -> list[tuple[MetricState, Value]]:
        """The metrics of `ev`: in its subject's folder `Alarms/<kind>/<subject>`, or in its kind's
        folder `Alarms/<kind>` when it has no subject, the subject "*", or a subject the device's
        metric budget has no room for (its Message then starts with the subject). A kind's folder is
        declared even past the budget: kinds are a small set (the gateway's rules and drivers),
        subjects come from the field. A clear of "*" clears every subject of the kind."""
        raised = ev.state is EventState.RAISED
        subjects = [""] if ev.subject in ("", "*") else [ev.subject]
        if ev.subject == "*" and not raised:
            subjects += sorted(f.split("/", 1)[1] for f in dev.alarm_kinds if f.startswith(f"{ev.kind}/"))
            dev.held.pop(ev.kind, None)
        out: list[tuple[MetricState, Value]] = []
        for subject in subjects:
            folder, text, active = f"{ev.kind}/{subject}" if subject else ev.kind, ev.message, raised
            full = len(dev.metrics) + len(ALARM_FIELDS) > self.max_metrics_per_device
            if subject and folder not in dev.alarm_kinds and full:
                folder, text = ev.kind, subject_message(subject, ev.message)
            if folder == ev.kind and not ev.one_shot:
                held = dev.held.setdefault(ev.kind, set())
                if raised:
                    held.add(subject)
                else:
                    held.discard(subject)
                active = bool(held)
                if not held:
                    del dev.held[ev.kind]
            m_active, severity, rule, message, event_id = self._declare_alarm(dev, folder, born=False)
            if not ev.one_shot:
                out.append((m_active, active))
            out += [(severity, int(ev.severity)), (rule, ev.rule), (message, text), (event_id, ev.id)]
        return out

    def _device_birth(self, dev: _Device, now_ms: int) -> SparkplugMessage:
        self._behind.discard(dev)
        payload = Payload(timestamp=now_ms, seq=self._next_seq())
        for m in dev.metrics.values():
            birth_metric(payload, m, now_ms)
        dev.undeclared = False
        return SparkplugMessage(
            self.topic(Verb.DBIRTH, dev.device_id),
            payload.SerializeToString(),
            self.data_qos,
            False,
            Verb.DBIRTH,
            dev.device_id,
            payload.seq,
        )

    def _data_message(self, dev: _Device, entries: list[Entry], now_ms: int) -> SparkplugMessage:
        payload = Payload(timestamp=now_ms, seq=self._next_seq())
        add_data_metrics(payload, entries)
        if dev is self._node:
            return SparkplugMessage(
                self.topic(Verb.NDATA),
                payload.SerializeToString(),
                self.data_qos,
                False,
                Verb.NDATA,
                None,
                payload.seq,
            )
        return SparkplugMessage(
            self.topic(Verb.DDATA, dev.device_id),
            payload.SerializeToString(),
            self.data_qos,
            False,
            Verb.DDATA,
            dev.device_id,
            payload.seq,
        )
