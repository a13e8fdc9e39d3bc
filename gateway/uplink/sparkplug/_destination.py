"""A destination with `encoding = "sparkplug-b"`: the outbox's rows for it, through a Sparkplug session.

The outbox keeps this destination's position per lane like any other's. A feeder reads the rows
after that position (events first), keeps the ones the destination's filter wants and queues them
as `StoredRecord`s (epoch and seq travel as metric properties); the session publishes them with
QoS 1 (a few batches in flight) and, once a batch's publishes are acknowledged by the broker (and
the batches before it), the position advances to the last seq of each lane in the batch. Rows
published but not acknowledged when the process dies are sent again after the restart (as
historical data, with the same epoch and seq): a duplicate a platform recognises, never a gap.
Rows the filter leaves out are settled like the JSON v1 uplink's (`_settled`). The edge node has
the devices the filter wants; those offline in the gateway (`offline`, the registry's active
device_offline alarms) start dead. When the filter leaves the device_offline events out, the
feeder tells the node the changes of that set instead (`_follow_offline`). The connection
follows the JSON v1 uplink too: its client (`make_client`), the broker list in failover order with
`backoff`, `replay_max_msgs_per_s` for the backlog; `enabled = false` starts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

from citynerve.gateway.api import ConfigError, ConfigIssue, DeviceConfig, Event, EventState, Reading
from citynerve.gateway.backoff import Backoff
from citynerve.gateway.bus.events import OFFLINE
from citynerve.gateway.store import AsyncOutbox, Lane, position_key
from citynerve.gateway.store._epoch import KIND_DROPPED, KIND_NEW_EPOCH
from citynerve.gateway.uplink._connection import RateLimiter, UplinkClient, make_client
from citynerve.gateway.uplink.config import BrokerUrl, UpstreamConfig
from citynerve.gateway.uplink.destinations import DestinationFilter
from citynerve.gateway.uplink.encoding import MqttMessage
from citynerve.gateway.uplink.sparkplug._bdseq import BdSeqFile
from citynerve.gateway.uplink.sparkplug._devices import device_spec
from citynerve.gateway.uplink.sparkplug._node import Chain, EdgeNode, SparkplugMessage, StoredRecord
from citynerve.gateway.uplink.sparkplug._session import SparkplugSession
from citynerve.gateway.uplink.state import LinkState, UplinkState

log = logging.getLogger(__name__)

NOTICE_KINDS = (KIND_DROPPED, KIND_NEW_EPOCH)
QUEUE_RECORDS = 5_000
"""Records read ahead of the session (bounded: the outbox is the buffer, not memory)."""
READ_READINGS = 2_000


class SparkplugUplink:
    """One Sparkplug B destination. `run()` until cancelled; `snapshot()` for status and metrics."""

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        gateway_id: str,
        outbox: AsyncOutbox,
        devices: Mapping[str, DeviceConfig],
        state_dir: Path,
        offline: Callable[[], AbstractSet[str]] = frozenset,
        alarm_kinds: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """`offline`: the devices whose device_offline alarm is active now (the gateway's registry);
        `alarm_kinds`: per device, the event kinds its rules can raise (declared in its DBIRTH)."""
        self.config = config
        self.destination = config.id
        self._outbox = outbox
        self._filter = f = DestinationFilter.of(config)
        sp = config.sparkplug
        kinds = alarm_kinds or {}
        enabled = [d for d in devices.values() if d.enabled and f.wants_device(d.id)]
        wanted = [device_spec(d, kinds.get(d.id, ())) for d in enabled]
        self._offline = offline
        self._device_ids = frozenset(d.device_id for d in wanted)
        self._told_offline = offline() & self._device_ids  # the offline devices the node knows of
        self.node = EdgeNode(
            group_id=sp.group_id,
            edge_node_id=gateway_id,
            devices=wanted,
            offline=self._told_offline,
            node_alarm_kinds=NOTICE_KINDS,  # the outbox's notices, which every filter passes
            data_qos=sp.data_qos,
        )
        # The device_offline rows give the DDEATH, in order with the device's data, when the
        # destination takes them; else the gateway's offline set does (`_follow_offline`).
        self._rows_tell_offline = Lane.EVENT in f.lanes and f.wants_kind(OFFLINE.kind, OFFLINE.severity)
        self._queue: asyncio.Queue[StoredRecord] = asyncio.Queue(QUEUE_RECORDS)
        self._client_id = config.effective_client_id(gateway_id)
        b = config.backoff
        self.session = SparkplugSession(
            self.node,
            self._queue,
            brokers=config.brokers,
            connect=self._client,
            primary_host_id=sp.primary_host_id,
            bd_seq_file=BdSeqFile(state_dir / f"sparkplug-{config.id}.bdseq"),
            client_id=self._client_id,
            batch_records=sp.batch_records,
            max_inflight=config.max_inflight,
            backoff=Backoff(b.initial_s, b.max_s, b.jitter),
            replay=RateLimiter(config.replay_max_msgs_per_s, config.replay_burst),
            on_sent=self._sent,
            drop=self._drop_too_large,
            live_from=lambda: (outbox.epoch, outbox.next_seq),
            confirm_pubacks=config.protocol == "3.1.1" and sp.data_qos == 1,  # QoS 0: no PUBACK
        )
        self._read = {lane: 0 for lane in Lane}  # read up to this seq (its wanted rows queued)
        self._queued = {lane: 0 for lane in Lane}  # the last seq queued
        self._delivered = {lane: 0 for lane in Lane}  # the last seq the broker acknowledged
        self._acked = {lane: 0 for lane in Lane}  # the destination's position in the outbox
        self._replay_until = 0
        self._ack_wake = asyncio.Event()
        self._rows = asyncio.Event()  # the outbox committed rows (its on_commit)
        self._published = 0
        self._running = False

    def _client(self, broker: BrokerUrl, will: SparkplugMessage) -> UplinkClient:
        """The session's MQTT client, built like the JSON v1 uplink's (`make_client`): protocol,
        credentials read now, TLS for mqtts://, connect timeout; a clean session, as Sparkplug asks."""
        try:
            return make_client(
                self.config,
                broker,
                client_id=self._client_id,
                will=MqttMessage(will.topic, will.payload, will.qos, will.retain),
            )
        except (OSError, ValueError) as err:  # TLS files unreadable or bad
            issue = ConfigIssue("<config>", "upstream.tls", f"{self.destination}: cannot set up TLS: {err}")
            raise ConfigError([issue]) from err

    async def run(self) -> None:
        """Publish until cancelled. With `enabled = false` it returns at once, as the JSON v1
        uplink does (the outbox does not wait for a disabled destination)."""
        if not self.config.enabled:
            log.info("sparkplug[%s]: disabled in [[upstream]]; not started", self.destination)
            return
        chain = {lane: 0 for lane in Lane}
        for lane in Lane:
            with contextlib.suppress(ValueError, TypeError):
                raw = await self._outbox.get(position_key(self.destination, lane))
                self._acked[lane] = self._read[lane] = int(raw) if raw else 0
                stored = await self._outbox.get(self._chain_key(lane))
                chain[lane] = int(stored) if stored else self._acked[lane]
        # The records' prev_seq goes on from the last one the host was sent before the restart.
        self.session.settled_chain = Chain(self._outbox.epoch, chain[Lane.EVENT], chain[Lane.TELEMETRY])
        self._replay_until = self._outbox.next_seq - 1
        self._outbox.on_commit(self._on_commit)
        self._running = True
        try:
            async with self.session, asyncio.TaskGroup() as tg:
                tg.create_task(self._acks(), name=f"sparkplug[{self.destination}].acks")
                await self._feed()
        finally:
            self._running = False
            self._outbox.remove_on_commit(self._on_commit)

    def _chain_key(self, lane: Lane) -> str:
        return f"sparkplug.chain.{lane.name.lower()}.{self.destination}"

    def _on_commit(self, lane: Lane, seq: int) -> None:
        self._rows.set()

    def _sent(self, records: Sequence[StoredRecord]) -> None:
        """The session's publishes of `records` are acknowledged: the positions may advance."""
        for rec in records:
            if rec.state_only:  # no outbox row
                continue
            self._published += 1
            lane = Lane.EVENT if isinstance(rec.record, Event) else Lane.TELEMETRY
            self._delivered[lane] = max(self._delivered[lane], rec.seq)
        self._ack_wake.set()

    async def _drop_too_large(self, stored: StoredRecord) -> None:
        """The session found `stored` too large for the broker's packet size limit: out of the
        outbox (`too_large`, announced to every destination that wanted it) before its batch settles."""
        if stored.epoch == self._outbox.epoch:  # else its file is gone, and its seq is another row's
            lane = Lane.EVENT if isinstance(stored.record, Event) else Lane.TELEMETRY
            await self._outbox.drop_too_large(lane, stored.seq)

    def _settled(self, lane: Lane) -> int:
        """The seq up to which every row of `lane` is acknowledged or left out by the filter. The
        JSON v1 uplink's rule (`_skipped` in gateway/uplink/_uplink.py): rows left out after the
        last record queued are settled once everything queued is acknowledged."""
        if self._queued[lane] > self._delivered[lane]:
            return self._delivered[lane]  # covers the left-out rows before it
        return max(self._delivered[lane], self._read[lane])

    async def _acks(self) -> None:
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            chain = self.session.settled_chain
            for lane in self._filter.lanes:
                upto = self._settled(lane)
                if upto > self._acked[lane]:
                    # The chain with the position, in one commit: a restart's first prev_seq.
                    last = chain.event if lane is Lane.EVENT else chain.telemetry
                    state = (self._chain_key(lane), str(last)) if chain.epoch == self._outbox.epoch else None
                    await self._outbox.ack(lane, upto, destination=self.destination, state=state)
                    self._acked[lane] = upto

    async def _feed(self) -> None:
        epoch = self._outbox.epoch
        while True:
            self._rows.clear()  # before reading: a commit from here on wakes the wait below
            if epoch != self._outbox.epoch:  # a new store epoch: its seqs start again
                epoch = self._outbox.epoch
                self._read = {lane: 0 for lane in Lane}
            if not self._rows_tell_offline:
                await self._follow_offline(epoch)
            queued = 0
            if Lane.EVENT in self._filter.lanes:
                rows = await self._outbox.peek(Lane.EVENT, after_seq=self._read[Lane.EVENT], limit=500)
                if rows:
                    for row in self._filter.events(rows, self.destination):
                        await self._put(epoch, row.seq, row.record)
                        queued += 1
                    self._read[Lane.EVENT] = rows[-1].seq  # after the puts: see `_settled`
                    self._ack_wake.set()
                    continue  # events first, always
            if Lane.TELEMETRY in self._filter.lanes:
                blocks = await self._outbox.peek_telemetry_blocks(
                    after_seq=self._read[Lane.TELEMETRY], max_readings=READ_READINGS
                )
                if blocks:
                    for block in self._filter.blocks(blocks):
                        for seq, reading in block.readings():
                            await self._put(epoch, seq, reading)
                            queued += 1
                        await asyncio.sleep(0)  # a block at a time: the loop is shared
                    self._read[Lane.TELEMETRY] = blocks[-1].last_seq
                    self._ack_wake.set()
                    queued += 1  # read something: look again before waiting
            if not queued:
                await self._rows.wait()

    async def _follow_offline(self, epoch: str) -> None:
        """The changes of the gateway's offline set since the last call, as `state_only` records.
        Read before each round of rows: a device_offline event is in the registry before its row
        (and the readings put with it) is committed, and that commit wakes the feeder, so a device
        coming back is born before its first reading goes out. Data of a dead device read anyway
        (older than its DDEATH) births it again and, while the gateway holds it offline, the node
        kills it again after that data (`EdgeNode.encode`): the host ends with the gateway's state."""
        now = self._offline() & self._device_ids
        for device_id in sorted(now ^ self._told_offline):
            state = EventState.RAISED if device_id in now else EventState.CLEARED
            event = Event(device_id, OFFLINE.kind, state, OFFLINE.severity, time.time(), OFFLINE.rule)
            await self._queue.put(StoredRecord(epoch, 0, event, state_only=True))
        self._told_offline = now

    async def _put(self, epoch: str, seq: int, record: Reading | Event) -> None:
        await self._queue.put(StoredRecord(epoch, seq, record, replayed=seq <= self._replay_until))
        self._queued[Lane.EVENT if isinstance(record, Event) else Lane.TELEMETRY] = seq

    def snapshot(self) -> UplinkState:
        born = self.node.born and self._running
        state = LinkState.CONNECTED if born else LinkState.CONNECTING
        return UplinkState(
            state=state if self._running else LinkState.STOPPED,
            connected=born,
            broker=str(self.session.broker),
            connected_since=None,
            published_msgs=self.session.births,
            published_rows={"records": self._published},
            acked_rows={},
            ack_seq={lane.name.lower(): seq for lane, seq in self._acked.items()},
            sent_seq={lane.name.lower(): seq for lane, seq in self._read.items()},
            reconnects=max(0, self.session.sessions - 1),
            connect_failures=self.session.connect_failures,
            last_error=self.session.last_error,
            last_error_ts=None,
            commands_accepted=0,
            commands_rejected=self.session.bad_inputs,
            e2e=False,
            replaying=born and self._read[Lane.TELEMETRY] < self._replay_until,
            extra=self._extra(),
        )

    def _extra(self) -> dict[str, Any]:
        return {
            "encoding": "sparkplug-b",
            "bd_seq": self.node.bd_seq,
            "host_online": self.session.host_online,
            "skipped_records": self.node.skipped,
            # The last save of the next bdSeq failed (a full disk): a restart now may reuse one.
            "bd_seq_unsaved": self.session.bd_seq_unsaved,
        }
