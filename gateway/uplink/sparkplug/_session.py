"""A Sparkplug B session over aiomqtt: the `EdgeNode`'s messages on a real broker.

Connect with the NDEATH as will (bdSeq persisted first; on a full disk, from memory), subscribe
to NCMD and to the primary host's STATE, publish NBIRTH and DBIRTHs only once the host is online,
then NDATA/DDATA for the records from a queue. A STATE `online: false` ends the session the
Sparkplug 3.0 way (NDEATH, disconnect) and the next one waits for the host again; an NCMD rebirth
re-publishes every birth (at most once every REBIRTH_INTERVAL_S: the requests meanwhile are
answered by one rebirth after it). A bad STATE or NCMD is counted and logged at most once per
10 s (`JunkLimiter`).
Data goes out in a bounded window of batches: up to `window_batches` batches are published and
waiting for their PUBACKs while the next one is encoded (stop-and-wait paid a broker's delayed
PUBACK, Nagle's algorithm on its side, once per batch: about 8,500 readings/s). `on_sent` is called
for the batches in their order, each once all its messages are acknowledged; a batch stays in
`pending` until then, and the batches a lost connection cut go out again, first and in order, in
the next session (as historical data, they are older than that session). A catch-up pauses 2 ms
after every 5 ms of the loop (`BUSY_S`, `IDLE_S`): other threads, the outbox's first, need a loop
that is sometimes idle.

The brokers are tried in their failover order (the next one when a connect fails, the link drops
or, as Sparkplug 3.0 asks, the primary host goes offline on the current one; back to the first
after a stable session). Batches with historical data are paced by a `RateLimiter`
(`replay_max_msgs_per_s`, counted in MQTT messages like the JSON v1 uplink's replay).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import aiomqtt

from citynerve.gateway.api import GatewayError, stop_task, utc_now
from citynerve.gateway.backoff import Backoff
from citynerve.gateway.uplink._connection import (
    LINK_ERRORS,
    STABLE_SESSION_S,
    RateLimiter,
    UplinkClient,
    describe_link_error,
    mark_disconnect_seen,
)
from citynerve.gateway.uplink.config import BrokerUrl, parse_broker_url
from citynerve.gateway.uplink.junk import JunkLimiter
from citynerve.gateway.uplink.sparkplug._bdseq import BdSeqFile
from citynerve.gateway.uplink.sparkplug._inputs import SparkplugInputError
from citynerve.gateway.uplink.sparkplug._node import (
    Chain,
    EdgeNode,
    SparkplugMessage,
    StoredRecord,
    Verb,
)
from citynerve.gateway.uplink.sparkplug._sizes import record_bytes

log = logging.getLogger(__name__)


FAREWELL_S = 2.0  # how long a stopping session tries to publish its NDEATH


PART_RECORDS = 500
"""At most this many records are encoded at a time (one device's; about 5 ms of the loop)."""


def by_device(batch: Sequence[StoredRecord]) -> list[list[StoredRecord]]:
    """`batch` split per device, each device's records in their order, devices in order of first
    appearance, in parts of at most PART_RECORDS. The outbox seqs of a batch are acknowledged
    together, so the order across devices inside a batch is not a guarantee the store needs; per
    device it is kept."""
    parts: dict[str, list[StoredRecord]] = {}
    for stored in batch:
        parts.setdefault(stored.record.device_id, []).append(stored)
    return [part[i : i + PART_RECORDS] for part in parts.values() for i in range(0, len(part), PART_RECORDS)]


BUSY_S = 0.005
"""A catch-up takes the loop for about this long at most, then pauses IDLE_S. Yielding alone
(`sleep(0)`) left the loop no idle moment: the outbox's thread, which every destination's alarms go
through (their commit, the uplinks' reads), then waited for the interpreter lock, tens of ms per
call (docs/benchmarks.md, "2026-12-06 session 9"). In the pause the loop goes idle and it runs."""
IDLE_S = 0.002


REBIRTH_INTERVAL_S = 5.0
"""Rebirths asked by NCMD are at least this far apart. A request within this long of the last
rebirth, or while one waits, is answered by one rebirth once the interval is over: the host gets
a full birth at most this long after its last request. Each request used to be answered with a
full birth (NBIRTH and every DBIRTH): a flood of 500 gave 500 of them."""


class _HostOffline(Exception):
    """The primary host went offline: this session ended with an NDEATH."""


class _End(enum.Enum):
    """How a session ended."""

    FAILED = "no connection"
    LOST = "the link ended"
    HOST_OFFLINE = "the primary host went offline"


ClientFactory = Callable[[BrokerUrl, SparkplugMessage], UplinkClient]
"""An unconnected client for a broker, with a session's NDEATH as its will."""


def now_ms() -> int:
    return round(utc_now() * 1000)


class SparkplugSession:
    """Runs `node` against `brokers` (failover order), fed by `records`; an async context manager."""

    def __init__(
        self,
        node: EdgeNode,
        records: asyncio.Queue[StoredRecord],
        *,
        brokers: Sequence[str],
        connect: ClientFactory | None = None,
        primary_host_id: str | None = None,
        bd_seq_file: BdSeqFile | None = None,
        client_id: str | None = None,
        batch_records: int = 5000,
        window_batches: int = 4,
        max_inflight: int = 32,
        puback_timeout_s: float = 30.0,
        backoff: Backoff | None = None,
        replay: RateLimiter | None = None,
        on_sent: Callable[[Sequence[StoredRecord]], None] | None = None,
        drop: Callable[[StoredRecord], Awaitable[None]] | None = None,
        live_from: Callable[[], tuple[str, int]] | None = None,
        chain: Chain | None = None,
        confirm_pubacks: bool = False,
    ) -> None:
        self.node = node
        self.records = records
        self.brokers = [parse_broker_url(url) for url in brokers]  # failover order
        if not self.brokers:
            raise ValueError("a Sparkplug session needs at least one broker")
        self.broker = self.brokers[0]  # the one of the current (or last) session
        self.primary_host_id = primary_host_id
        self.bd_seq_file = bd_seq_file
        self.client_id = client_id or f"{node.group_id}.{node.edge_node_id}"
        self._connect = connect or self._plain_client
        self.batch_records = batch_records
        self.window_batches = max(1, window_batches)
        self.max_inflight = max_inflight
        self.puback_timeout_s = puback_timeout_s  # a broker that takes publishes and never answers
        self.backoff = backoff or Backoff(0.2, 10.0, 0.2)
        self.replay = replay  # paces the messages of batches with historical data (None: no limit)
        self.on_sent = on_sent
        # Drops a record too large for the broker's packet size limit from the outbox (announced);
        # without it such a record is sent, and the broker ends the session at it.
        self.drop = drop
        # The outbox's (epoch, next seq): taken at a session's first birth, the rows before it are
        # historical (`EdgeNode.historical`). None: only `StoredRecord.replayed` makes history.
        self.live_from = live_from
        # The records' chain (`prev_seq`) as of the last acknowledged batch: a session starts from
        # it, so what it sends again carries the links it had.
        self.settled_chain = chain or Chain()
        node.restore_chain(self.settled_chain)
        # MQTT 3.1.1: a PUBACK settles only once the broker sent another packet after it (as
        # `Uplink._confirm`): Mosquitto acknowledges a publish its ACL denies, then disconnects.
        self.confirm_pubacks = confirm_pubacks
        self.last_error: str | None = None
        self.pending: deque[list[StoredRecord]] = deque()  # batches taken, not yet acknowledged
        self.sessions = 0  # MQTT sessions started
        self.connect_failures = 0  # connects that failed
        self.births = 0  # NBIRTHs published
        self.sent_records = 0
        self.bad_inputs = 0  # STATE / NCMD messages refused (SparkplugInputError)
        self._refused = JunkLimiter()  # bad_inputs: one log line per interval, with counts
        self._rebirth_asked = asyncio.Event()
        self._rebirth_requests = 0  # NCMD rebirth requests not answered yet
        self._last_rebirth = -math.inf  # monotonic end of the last rebirth asked by NCMD
        self.bd_seq_unsaved = False  # the last save of the next bdSeq failed (a full disk)
        self.host_online = primary_host_id is None
        self.host_state_ts = -1  # timestamp of the STATE acted on last (older ones are ignored)
        self._online = asyncio.Event()
        self._born = asyncio.Event()
        self._lock = asyncio.Lock()  # births and data take seqs in publish order
        self._task: asyncio.Task[None] | None = None
        self._busy_since = 0.0  # monotonic end of the last pause (`_breathe`)
        if bd_seq_file is not None:
            node.next_bd_seq = bd_seq_file.load()

    def _plain_client(self, broker: BrokerUrl, will: SparkplugMessage) -> UplinkClient:
        """No credentials, no TLS, MQTT 3.1.1 (the destination passes `make_client` instead)."""
        return UplinkClient(
            broker.host,
            broker.port,
            identifier=self.client_id,
            will=aiomqtt.Will(will.topic, will.payload, will.qos, will.retain),
            clean_session=True,
            max_queued_outgoing_messages=0,
            max_inflight_messages=self.max_inflight,
        )

    async def __aenter__(self) -> SparkplugSession:
        self._task = asyncio.create_task(self._run(), name=f"sparkplug[{self.node.edge_node_id}]")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None

    async def wait_born(self, timeout_s: float = 30.0) -> None:
        """Until this session's NBIRTH is out (tests, and the lead's status)."""
        await asyncio.wait_for(self._born.wait(), timeout_s)

    # --- sessions ------------------------------------------------------------------------------

    async def _run(self) -> None:
        # The broker list in failover order, as the JSON v1 uplink walks it: the next broker when a
        # connect fails, the link drops or the primary host goes offline (Sparkplug 3.0); after a
        # stable session, back to the first; a backoff once the whole list is tried.
        while True:
            for broker in self.brokers:
                started = time.monotonic()
                try:
                    end = await self._session(broker)
                except Exception as err:  # a bug must not end the sessions for good (as JSON v1)
                    log.exception("sparkplug: session with %s failed", broker)
                    self.last_error = f"{broker}: {describe_link_error(err)}"  # the first error
                    end = _End.FAILED
                if end is not _End.FAILED and time.monotonic() - started >= STABLE_SESSION_S:
                    self.backoff.reset()
                    if end is _End.LOST:
                        break
            await asyncio.sleep(self.backoff.next_delay())

    async def _session(self, broker: BrokerUrl) -> _End:
        """One MQTT session with `broker`, until it ends (never raises but to be cancelled)."""
        will = self.node.start_session()
        if self.bd_seq_file is not None:
            await self._save_bd_seq(self.bd_seq_file)
        self.sessions += 1
        if broker != self.broker:  # STATE timestamps are compared with the same server's only
            self.host_state_ts = -1
        self.broker = broker
        self._born.clear()
        self._rebirth_asked.clear()  # a new session's birth is a full one
        self._rebirth_requests = 0
        self.host_online = self.primary_host_id is None
        if self.host_online:
            self._online.set()
        else:
            self._online.clear()
        end = _End.FAILED
        try:
            client = self._connect(broker, will)
            # A window of batches is deliberate; aiomqtt would log a warning per publish past 10.
            client.pending_calls_threshold = self.window_batches * self.batch_records + 64
            async with client:
                end = _End.LOST
                mark_disconnect_seen(client)
                try:
                    await self._connected(client)
                except asyncio.CancelledError:
                    await self._farewell(client)
                    raise
        except* _HostOffline:
            end = _End.HOST_OFFLINE
            log.warning(
                "sparkplug: primary host %s offline on %s: session ended", self.primary_host_id, broker
            )
        except* (*LINK_ERRORS, GatewayError) as group:  # GatewayError: credentials, TLS files
            error = f"{broker}: {describe_link_error(group)}"  # the first, out of nested groups
            if error != self.last_error:  # a broker down for hours: one line, as the JSON uplink
                log.warning("sparkplug: %s", error)
            self.last_error = error
        self._born.clear()
        if end is _End.FAILED:
            self.connect_failures += 1
        return end

    async def _save_bd_seq(self, file: BdSeqFile) -> None:
        """The next bdSeq to `file` before connecting. When it cannot be written (a full disk, a
        read-only file system) the session connects all the same with the bdSeq in memory and the
        next session tries again: being down is worse than a restart before a save reusing a bdSeq
        (docs/sparkplug.md, "Sessions"). One warning while it lasts."""
        try:
            await asyncio.to_thread(file.save, self.node.next_bd_seq)
        except OSError as err:
            if not self.bd_seq_unsaved:
                log.warning(
                    "sparkplug: cannot save the next bdSeq to %s (%s): connecting with the one in "
                    "memory, saved again at the next session",
                    file.path,
                    err.strerror or err,
                )
            self.bd_seq_unsaved = True
            return
        if self.bd_seq_unsaved:
            log.info("sparkplug: the next bdSeq is saved to %s again", file.path)
        self.bd_seq_unsaved = False

    async def _connected(self, client: UplinkClient) -> None:
        await client.subscribe(self.node.command_topic, qos=1)
        if self.primary_host_id is not None:
            await client.subscribe(self.node.state_topic(self.primary_host_id), qos=1)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._inbound(client), name=f"sparkplug[{self.node.edge_node_id}].inbound")
            tg.create_task(self._outbound(client), name=f"sparkplug[{self.node.edge_node_id}].outbound")
            tg.create_task(self._rebirths(client), name=f"sparkplug[{self.node.edge_node_id}].rebirths")

    async def _farewell(self, client: aiomqtt.Client) -> None:
        """Stopping: a clean DISCONNECT makes the broker drop the will, so say NDEATH ourselves
        (best effort, briefly: the session is being stopped)."""
        if not self.node.born:
            return
        death = self.node.death()
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(FAREWELL_S):
                await client.publish(death.topic, death.payload, qos=death.qos, retain=death.retain)

    async def _publish(self, client: aiomqtt.Client, messages: list[SparkplugMessage]) -> None:
        # All at once, then wait for every PUBACK: paho queues them in this order (the seqs stay in
        # order on the wire) and the round trips overlap instead of adding up.
        await asyncio.gather(
            *(client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain) for m in messages)
        )

    async def _inbound(self, client: aiomqtt.Client) -> None:
        state_topic = self.node.state_topic(self.primary_host_id) if self.primary_host_id else None
        async for message in client.messages:
            topic = str(message.topic)
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            try:
                if topic == state_topic and self.primary_host_id is not None:
                    state = self.node.host_state(topic, self.primary_host_id, payload)
                    if state.timestamp_ms < self.host_state_ts:
                        continue  # an older STATE than the one we act on (3.0: ignore it)
                    self.host_state_ts = state.timestamp_ms
                    if state.online:
                        self.host_online = True
                        self._online.set()
                    elif self.host_online:
                        self.host_online = False
                        self._online.clear()
                        async with self._lock:
                            if self.node.born:
                                await self._publish(client, [self.node.death()])
                        raise _HostOffline
                elif topic == self.node.command_topic and self.node.asks_rebirth(topic, payload):
                    self._rebirth_requests += 1
                    self._rebirth_asked.set()
            except SparkplugInputError as err:
                self.bad_inputs += 1
                summary = self._refused.admit("STATE" if topic == state_topic else "NCMD")
                if summary is not None:
                    log.warning("sparkplug: ignored: %s%s", err, f"; {summary}" if summary else "")

    async def _rebirths(self, client: aiomqtt.Client) -> None:
        """Answers the NCMD rebirth requests: at once, or REBIRTH_INTERVAL_S after the last rebirth,
        one rebirth for all the requests that came meanwhile."""
        while True:
            await self._rebirth_asked.wait()
            await asyncio.sleep(max(0.0, self._last_rebirth + REBIRTH_INTERVAL_S - time.monotonic()))
            self._rebirth_asked.clear()
            asked, self._rebirth_requests = self._rebirth_requests, 0
            async with self._lock:
                if not self.node.born:
                    continue  # the host is offline; its next birth is a full one
                log.info("sparkplug: rebirth asked by NCMD (%d requests)", asked)
                await self._publish(client, self.node.birth(now_ms()))
                self.births += 1
            self._last_rebirth = time.monotonic()

    async def _outbound(self, client: UplinkClient) -> None:
        resend = list(self.pending)  # cut by the last session's end: first, in order
        self.node.restore_chain(self.settled_chain)  # ... with the links they had
        window = asyncio.Semaphore(self.window_batches)
        previous: asyncio.Task[None] | None = None
        async with asyncio.TaskGroup() as tg:
            while True:
                await self._online.wait()
                async with self._lock:
                    if not self.node.born and self.host_online:
                        live_from = self.live_from() if self.live_from is not None else None
                        await self._publish(client, self.node.birth(now_ms(), live_from=live_from))
                        self.births += 1
                        self._born.set()
                if resend:
                    batch = resend.pop(0)
                else:
                    batch = await self._take_batch()
                    self.pending.append(batch)
                await window.acquire()
                async with self._lock:
                    if not self.node.born:  # the host went offline meanwhile: this batch waits
                        window.release()
                        resend.insert(0, batch)
                        continue
                    # Tasks created here, under the lock, start in this order: the seqs go out in order.
                    # No timer per publish (as much work as the rest of a publish): `_settle` gives
                    # the whole batch one. One device at a time: a device's records in one DDATA
                    # (not one per run of them between other devices' records), and the loop
                    # runs the other destinations' alarms between devices.
                    publishes: list[asyncio.Task[None]] = []
                    for records in by_device(batch):
                        room = client.room(self.node.topic(Verb.DDATA, records[0].record.device_id))
                        if room is not None and self.drop is not None:
                            records = self._fitting(records, room, tg, publishes)
                        for m in self.node.encode(records, now_ms(), max_bytes=room):
                            publish = client.publish(
                                m.topic, m.payload, qos=m.qos, retain=m.retain, timeout=math.inf
                            )
                            publishes.append(tg.create_task(publish))
                        await self._breathe()
                    if self.records.empty():  # the backlog is out: its changes become current
                        for m in self.node.present(now_ms()):
                            publish = client.publish(
                                m.topic, m.payload, qos=m.qos, retain=m.retain, timeout=math.inf
                            )
                            publishes.append(tg.create_task(publish))
                    chain = self.node.chain
                settle = self._settle(client, batch, publishes, previous, window, chain)
                previous = tg.create_task(settle)
                # Let this batch's publishes and everything else on the loop (the other
                # destinations' alarms) run before the next batch is encoded: without it a full
                # window (encoding and a few hundred publishes) ran as one block of the loop.
                # Historical data (a backlog) is paced: its messages are paid for after they
                # went out, so the wait is never taken under the lock (births, NCMD, STATE).
                await asyncio.sleep(self._replay_delay(batch, len(publishes)))

    async def _breathe(self) -> None:
        """Between device parts: the loop runs the others; after BUSY_S, a pause of IDLE_S."""
        if time.monotonic() - self._busy_since < BUSY_S:
            await asyncio.sleep(0)
            return
        await asyncio.sleep(IDLE_S)
        self._busy_since = time.monotonic()

    async def _settle(
        self,
        client: UplinkClient,
        batch: list[StoredRecord],
        publishes: list[asyncio.Task[None]],
        previous: asyncio.Task[None] | None,
        window: asyncio.Semaphore,
        chain: Chain,
    ) -> None:
        """Once `batch` is acknowledged and the batch before it settled: off `pending`, `on_sent`.
        Under MQTT 3.1.1 (`confirm_pubacks`) its last PUBACK counts once the broker sent another
        packet after it (a later PUBACK, a PINGRESP within the keepalive): one followed by the
        connection's end leaves the batch pending, sent again in the next session."""
        try:
            try:
                async with asyncio.timeout(self.puback_timeout_s):
                    await asyncio.gather(*publishes)
            except TimeoutError:
                raise aiomqtt.MqttError(f"no PUBACK within {self.puback_timeout_s:g} s") from None
            if self.confirm_pubacks:
                await client.heard_after(client.heard)  # packets read before this resumed: earlier
            if previous is not None:
                await previous
        finally:
            window.release()
        assert self.pending[0] is batch
        self.pending.popleft()
        self.settled_chain = chain
        self.sent_records += len(batch)
        if self.on_sent is not None:
            self.on_sent(batch)

    def _fitting(
        self,
        records: list[StoredRecord],
        room: int,
        tg: asyncio.TaskGroup,
        publishes: list[asyncio.Task[None]],
    ) -> list[StoredRecord]:
        """`records` without those that alone make a data message over `room` bytes (the broker's
        packet size limit): the broker would end every session at them, and the batch goes again
        first. They are dropped from the outbox (announced, `too_large`) by a task the batch's
        `_settle` waits for with its publishes, so its position passes them only once they are."""
        fit: list[StoredRecord] = []
        big: list[StoredRecord] = []
        for r in records:
            (big if record_bytes(r.record) > room else fit).append(r)
        if not big:
            return records
        for r in big:
            log.warning(
                "sparkplug: seq %d (%s) alone makes a data message over the broker's packet size limit "
                "(%d bytes for its payload): dropped from the outbox (too_large)",
                r.seq,
                r.record.device_id,
                room,
            )
        publishes.append(tg.create_task(self._drop_all(big)))
        return fit

    async def _drop_all(self, records: list[StoredRecord]) -> None:
        assert self.drop is not None
        for r in records:
            await self.drop(r)

    def _replay_delay(self, batch: Sequence[StoredRecord], messages: int) -> float:
        """How long to wait before the next batch: `messages` tokens of the replay limiter when
        `batch` holds historical data (`replay_max_msgs_per_s`), else 0."""
        if self.replay is None or not any(self.node.historical(r) for r in batch):
            return 0.0
        delay = 0.0
        for _ in range(messages):
            delay = self.replay.delay()
        return delay

    async def _take_batch(self) -> list[StoredRecord]:
        batch = [await self.records.get()]
        with contextlib.suppress(asyncio.QueueEmpty):
            while len(batch) < self.batch_records:
                batch.append(self.records.get_nowait())
        return batch
