"""`Uplink`: store-and-forward from the SQLite outbox to the city platform's MQTT broker.

Per session (one broker connection): birth status, inventory, subscriptions, then three named tasks:
`uplink.pump` reads the outbox (events lane first, always) and publishes QoS 1 messages through a
window of in-flight messages; `uplink.acks` deletes outbox rows once the broker (or in end-to-end
mode the platform) has acknowledged them, contiguously per lane; `uplink.receive` handles commands
and end-to-end acks. Any broker error ends the session; `run` fails over to the next broker with
capped, jittered backoff and starts again from the last acknowledged row (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from citynerve.gateway.api import ConfigError, ConfigIssue, GatewayError, stop_task
from citynerve.gateway.backoff import Backoff
from citynerve.gateway.store import AsyncOutbox, Lane, OutboxRow
from citynerve.gateway.uplink._acks import LANES, UplinkAcks, _InFlight, ack_key
from citynerve.gateway.uplink._connection import (
    LINK_ERRORS,
    STABLE_SESSION_S,
    DestinationLog,
    RateLimiter,
    UplinkClient,
    describe_link_error,
    drop_leaked_cancel,
    make_client,
    mark_disconnect_seen,
)
from citynerve.gateway.uplink._messages import UplinkMessages
from citynerve.gateway.uplink._readahead import ReadAhead
from citynerve.gateway.uplink.commands import CommandTarget, RemoteAction
from citynerve.gateway.uplink.config import BrokerUrl, UpstreamConfig
from citynerve.gateway.uplink.destinations import DestinationFilter
from citynerve.gateway.uplink.encoding import Encoding, RowBatch
from citynerve.gateway.uplink.json_v1 import LANE_NAMES, JsonV1Encoding
from citynerve.gateway.uplink.permissions import KeyRing
from citynerve.gateway.uplink.state import LinkState, UplinkState

log = logging.getLogger(__name__)

# Readings per telemetry read: the loop renders a read at once (~5 ms for 4,000 in JSON v1), so an
# alarm that arrives meanwhile waits at most that long before the pump sees it (10,000 gave an
# alarm p99 of 163 ms in the drain benchmark, 4,000 35 ms at a higher drain rate).
PEEK_READINGS = 4_000
EVENTS_PER_MESSAGE = 50
EVENTS_PER_READ = 500
# How long a stopping uplink may take to write the acks its ack loop left (one delete commit).
STOP_ACKS_S = 2.0


class _SessionLost(Exception):
    """Internal: the broker connection ended; the reason for the log and the snapshot, and whether
    the broker refused a publish (MQTT 5)."""

    def __init__(self, reason: str, *, refused: bool) -> None:
        super().__init__(reason)
        self.refused = refused


class Uplink(UplinkAcks, UplinkMessages):
    """Publishes the outbox to the platform until cancelled. See the module docstring."""

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        gateway_id: str,
        outbox: AsyncOutbox,
        inventory: Callable[[], Iterable[Mapping[str, Any]]],
        commands: CommandTarget | None = None,
        actions: Mapping[str, RemoteAction] | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
        encoding: Encoding | None = None,
        restamp: Callable[[OutboxRow], OutboxRow] | None = None,
        inbound: Mapping[str, Callable[[str, bytes], Awaitable[None]]] | None = None,
    ) -> None:
        self.config = config
        self.destination = config.id
        self._log = DestinationLog(log, config.id)
        self._filter = DestinationFilter.of(config)
        # More topics from the platform (filter -> handler), e.g. software update chunks: the
        # handler checks every message itself and never raises.
        self._inbound = dict(inbound or {})
        # events stamped before the clock was synchronised (citynerve.gateway.timesync)
        self._restamp = restamp
        self.gateway_id = gateway_id
        self._outbox = outbox
        self._inventory = inventory
        self._status = status
        self._enc: Encoding = encoding or JsonV1Encoding(
            topic_prefix=config.topic_prefix, gateway_id=gateway_id, epoch=outbox.epoch
        )
        self._brokers = config.broker_urls()
        self._backoff = Backoff(config.backoff.initial_s, config.backoff.max_s, config.backoff.jitter)
        self._wake = asyncio.Event()
        self._ack_wake = asyncio.Event()
        self._high: dict[Lane, int] = {lane: 0 for lane in LANES}  # last seq committed per lane
        # The events lane held nothing unsent when _high[EVENT] was this (-1: look again): the pump
        # then skips reading it, which would queue behind telemetry work on the store's thread.
        self._events_clear = -1
        self._ack_seq: dict[Lane, int] = {lane: 0 for lane in LANES}  # acked + deleted
        self._sent_seq: dict[Lane, int] = {lane: 0 for lane in LANES}
        self._puback_seq: dict[Lane, int] = {lane: 0 for lane in LANES}  # contiguous PUBACKed
        # The last seq carried by a message (rows the filter leaves out are covered by positions
        # but carried by no message): the next message's prev_seq, so a platform sees no gap.
        self._prev: dict[Lane, int] = {lane: 0 for lane in LANES}  # sent in this session
        self._puback_chain: dict[Lane, int] = {lane: 0 for lane in LANES}  # ... and PUBACKed
        self._chain: dict[Lane, int] = {lane: 0 for lane in LANES}  # ... and stored with the position
        self._platform_seq: dict[Lane, int] = {lane: 0 for lane in LANES}  # e2e acks received
        self._inflight: dict[Lane, deque[_InFlight]] = {lane: deque() for lane in LANES}
        self._published_msgs = 0
        self._published_rows = {lane: 0 for lane in LANES}
        self._acked_rows = {lane: 0 for lane in LANES}
        self._reconnects = 0
        self._connect_failures = 0
        self._sessions = 0
        self._connected_at = 0.0  # monotonic time the current (or last) session connected
        self._last_error: str | None = None
        self._last_error_ts: float | None = None
        self._state = LinkState.STOPPED
        self._broker: BrokerUrl | None = None
        self._since: float | None = None
        self._replay_until = 0
        # e2e mode, per lane: when the platform's ack last advanced, or the lane had nothing
        # outstanding. One timer per lane: telemetry acks flowing never hide a lost alarm.
        self._ack_progress_t = {lane: time.monotonic() for lane in LANES}
        self._rewinds = 0
        self._stopping = False
        self._client: UplinkClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._platform_key = self._load_platform_key()
        # End-to-end acks delete rows, so only acks signed with the platform's key count. Without a
        # key they cannot be authenticated: rows then leave on the broker's PUBACK (logged at start).
        self._e2e = config.e2e_ack and self._platform_key is not None
        # MQTT 3.1.1 has no refusal in a PUBACK, and Mosquitto 2.0 acks a publish its ACL denies,
        # then closes the connection: a PUBACK settles rows only once the broker sent another
        # packet after it (`_confirm`). With e2e acks the platform's word settles them anyway.
        self._confirm_pubacks = config.protocol == "3.1.1" and not self._e2e
        self._acks_refused = 0
        # The platform's clock against ours, from the `ts_ms` of its last signed ack (MQTT brokers
        # publish no date of their own): shown in the time-and-trust view. None: no ack yet.
        self._platform_skew_s: float | None = None
        self._inbound_refused = 0
        # A platform acked below what is settled here (it starts its chain too low): a status with
        # `acked` goes out soon, at most once per e2e_resend_after_s, so it can close that gap.
        self._status_soon = asyncio.Event()
        self._behind_status_t = -math.inf
        self._bogus_ack_t = -math.inf  # last "ignored an impossible e2e ack" warning
        self._actions = actions
        self._processor = self._make_processor(commands)
        self._reconnect_reason: str | None = None

    @property
    def key_ring(self) -> KeyRing | None:
        """The platform's keys (commands and end-to-end acks); rotated in place (gateway/credentials)."""
        return self._platform_key

    def reconnect(self, reason: str) -> None:
        """End the current session soon; the next connect uses `config` as it is then (a rotated
        TLS client certificate). Nothing is lost: whatever was not acknowledged is sent again.
        Not connected: nothing to end, the next connect uses `config` anyway."""
        if self._state is LinkState.CONNECTED:
            self._reconnect_reason = reason

    # ------------------------------------------------------------------ public
    def snapshot(self) -> UplinkState:
        """The uplink's figures now (cheap, no I/O)."""
        names = LANE_NAMES
        return UplinkState(
            state=self._state,
            connected=self._state is LinkState.CONNECTED,
            broker=str(self._broker) if self._broker else None,
            connected_since=self._since,
            published_msgs=self._published_msgs,
            published_rows={names[k]: v for k, v in self._published_rows.items()},
            acked_rows={names[k]: v for k, v in self._acked_rows.items()},
            ack_seq={names[k]: v for k, v in self._ack_seq.items()},
            sent_seq={names[k]: v for k, v in self._sent_seq.items()},
            reconnects=self._reconnects,
            connect_failures=self._connect_failures,
            last_error=self._last_error,
            last_error_ts=self._last_error_ts,
            commands_accepted=self._processor.accepted if self._processor else 0,
            commands_rejected=self._processor.rejected if self._processor else 0,
            e2e=self._e2e,
            replaying=self._replaying(),
            extra={
                "destination": self.destination,
                "encoding": self._enc.name,
                "e2e_rewinds": self._rewinds,
                "acks_refused": self._acks_refused,
                "platform_clock_skew_s": self._platform_skew_s,
                "inbound_refused": self._inbound_refused,
                "commands_unanswered": self._processor.suppressed if self._processor else 0,
            },
        )

    @property
    def platform_skew_s(self) -> float | None:
        """The platform's clock minus the gateway's (s), from its last signed ack; None before one."""
        return self._platform_skew_s

    async def __aenter__(self) -> Uplink:
        self._task = asyncio.create_task(self.run(), name="uplink")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop the run task; a connected uplink says goodbye (retained offline status) first."""
        if self._task is None:
            return
        self._stopping = True
        task = self._task
        await stop_task(task, again_s=3.0)  # a cancel swallowed inside aiomqtt is repeated
        self._task = None
        self._stopping = False

    async def run(self) -> None:
        """Connect, publish, fail over and reconnect until cancelled. With `enabled = false` in
        [upstream] it returns at once: the outbox keeps everything for later."""
        if not self.config.enabled:
            self._log.info("disabled in [upstream]; readings stay in the outbox")
            return
        if self.config.e2e_ack and not self._e2e:
            self._log.error(
                "e2e_ack is on but no platform key is provisioned (upstream.commands."
                "hmac_key_file or ed25519_public_key_file): acks cannot be authenticated, so rows "
                "leave the outbox on the broker's PUBACK instead"
            )
        self._outbox.on_commit(self._on_commit)
        try:
            await self._load_positions()
            await self._serve()
        except asyncio.CancelledError:
            # Stopped (the runtime cancels run(); stop() too): the ack loop ended with the session,
            # so apply the acks it left, among them what the goodbye's PUBACK settled under MQTT
            # 3.1.1. Otherwise those rows stay and go again after the restart. Briefly: stopping.
            with contextlib.suppress(GatewayError, TimeoutError):
                async with asyncio.timeout(STOP_ACKS_S):
                    await self._apply_acks()
            raise
        finally:
            self._state = LinkState.STOPPED
            self._client = None
            self._outbox.remove_on_commit(self._on_commit)

    async def _serve(self) -> None:
        """Sessions with the brokers in failover order, with backoff between rounds, for ever."""
        while True:
            refused_by_config = 0  # brokers of this round not tried: the config is incomplete
            refused_by_broker = 0  # sessions of this round that ended at a refused publish
            round_sessions = self._sessions
            for broker in self._brokers:
                sessions = self._sessions
                try:
                    await self._session(broker)
                except _SessionLost as err:
                    refused_by_broker += err.refused
                    self._note_error(f"{broker}: {err}")
                except ConfigError as err:  # a password or key file missing: no broker was asked
                    refused_by_config += 1
                    self._note_error(f"{broker}: {type(err).__name__}: {err}")
                except GatewayError as err:  # store trouble
                    self._note_error(f"{broker}: {type(err).__name__}: {err}")
                except Exception as err:  # a bug must not end store-and-forward for good
                    self._log.exception("session with %s failed", broker)
                    self._note_error(f"{broker}: {type(err).__name__}: {err}")
                # Stable: this attempt connected, and stayed connected long enough (a connect
                # that only timed out after STABLE_SESSION_S is a failure, not a session).
                connected = self._sessions > sessions
                if connected and time.monotonic() - self._connected_at >= STABLE_SESSION_S:
                    self._backoff.reset()
                    break  # after a working session, go back to the preferred broker
            self._state = LinkState.BACKING_OFF
            delay = self._backoff.next_delay()
            tries = self._backoff.attempt  # failed rounds since the last working session
            if tries & (tries - 1) == 0:  # 1, 2, 4, 8, ...: a week's outage logs ~14 lines, not 10,000
                # Not "no broker reachable" when none was asked: the broker may well be reachable.
                if refused_by_config == len(self._brokers):
                    what = (
                        "not connecting: the upstream config is incomplete (see the error above; "
                        "`citynerve config check` names the key)"
                    )
                elif refused_by_broker:  # reached, and its ACL or limits said no
                    what = "broker refused a publish (see the error above)"
                elif self._sessions > round_sessions:
                    what = "connection lost soon after connecting (see the error above)"
                else:
                    what = "no broker reachable"
                self._log.info("%s (%d tries); next attempt in %.1f s", what, tries, delay)
            await asyncio.sleep(delay)

    # ------------------------------------------------------------------ session
    async def _session(self, broker: BrokerUrl) -> None:
        self._state = LinkState.CONNECTING
        self._broker = broker
        task = asyncio.current_task()
        cancels_before = task.cancelling() if task is not None else 0
        seq_now = self._outbox.next_seq - 1
        # The will is handed to the broker now and published by it when the connection dies, later
        # than any status of this session: `will: true` says its seq/ts are of this connect, so a
        # platform orders statuses by arrival, never by ts (docs/upstream-contract.md).
        will = self._enc.status(
            online=False,
            seq=seq_now,
            details={"reason": "connection_lost", "will": True, "destination": self.destination},
        )
        try:
            client = make_client(
                self.config, broker, client_id=self.config.effective_client_id(self.gateway_id), will=will
            )
        except ConfigError:
            raise
        except (OSError, ValueError) as err:  # TLS files unreadable or bad
            raise ConfigError([ConfigIssue("<config>", "upstream.tls", f"cannot set up TLS: {err}")]) from err
        try:
            async with client:
                mark_disconnect_seen(client)
                self._client = client
                if self._sessions:
                    self._reconnects += 1
                self._sessions += 1
                self._connected_at = time.monotonic()
                self._state = LinkState.CONNECTED
                self._since = time.time()
                self._log.info("connected to %s", broker)
                try:
                    await self._run_session(client)
                except asyncio.CancelledError:
                    # Stopped by the runtime: a clean disconnect suppresses the will, so say
                    # "offline" ourselves or the retained status would stay "online".
                    self._stopping = True
                    await self._goodbye(client)
                    self._confirm(client)  # the goodbye's PUBACK came after every other one
                    raise
        except LINK_ERRORS as err:
            if self._state is not LinkState.CONNECTED:
                self._connect_failures += 1
            drop_leaked_cancel(cancels_before)
            raise self._lost(client, describe_link_error(err)) from None
        except BaseExceptionGroup as group:
            drop_leaked_cancel(cancels_before)
            _, rest = group.split(LINK_ERRORS)
            if rest is not None:
                raise
            raise self._lost(client, describe_link_error(group)) from None
        finally:
            mark_disconnect_seen(client)
            if self._state is LinkState.CONNECTED and not self._stopping:
                self._log.warning("lost %s", broker)
            self._client = None
            self._since = None
            self._state = LinkState.CONNECTING

    async def _run_session(self, client: UplinkClient) -> None:
        # Start over from what was acknowledged: anything in flight is sent again (at-least-once).
        for lane in LANES:
            self._inflight[lane].clear()
            self._sent_seq[lane] = self._ack_seq[lane]
            self._puback_seq[lane] = self._ack_seq[lane]
            self._prev[lane] = self._puback_chain[lane] = self._chain[lane]
        self._events_clear = -1
        self._replay_until = self._outbox.next_seq - 1
        await client.subscribe(self._enc.command_topic, qos=1)
        for topic_filter in self._inbound:
            await client.subscribe(topic_filter, qos=1)
        if self._e2e:
            await client.subscribe(self._enc.ack_topic, qos=1)
        birth = await self._status_message(online=True)
        await client.publish(birth.topic, birth.payload, qos=1, retain=True)
        await self._publish_inventory(client)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._pump(client, tg), name="uplink.pump")
            tg.create_task(self._ack_loop(), name="uplink.acks")
            tg.create_task(self._receive(client, tg), name="uplink.receive")
            tg.create_task(self._status_loop(client), name="uplink.status")
            tg.create_task(self._watchdog(), name="uplink.watchdog")

    # ------------------------------------------------------------------ outbound
    def _on_commit(self, lane: Lane, seq: int) -> None:
        if seq > self._high[lane]:
            self._high[lane] = seq
        self._wake.set()

    def _replaying(self) -> bool:
        return self._sent_seq[Lane.TELEMETRY] < self._replay_until and self._state is LinkState.CONNECTED

    def _events_waiting(self) -> bool:
        return self._high[Lane.EVENT] > self._sent_seq[Lane.EVENT]

    async def _pump(self, client: UplinkClient, tg: asyncio.TaskGroup) -> None:
        cfg = self.config
        window = asyncio.Semaphore(cfg.max_inflight)
        limiter = RateLimiter(cfg.replay_max_msgs_per_s, cfg.replay_burst)
        peek_rows = max(cfg.max_batch_readings, PEEK_READINGS)
        self._ack_progress_t = {lane: time.monotonic() for lane in LANES}
        # The next telemetry chunk is read (on the store's thread) while this one is published.
        ahead = ReadAhead(
            lambda after: self._outbox.peek_telemetry_blocks(after_seq=after, max_readings=peek_rows)
        )
        pending: deque[RowBatch] = deque()  # encoded telemetry not yet sent, continuing from:
        pending_after = 0
        max_bytes = {lane: self._max_bytes(client, lane) for lane in LANES}
        try:
            while True:
                self._wake.clear()
                self._maybe_rewind()
                self._confirm(client)  # a PINGRESP after the last PUBACK of a quiet spell
                # Events first, always: every pass starts with the events lane (read when a commit
                # added events since it was last found empty).
                high = self._high[Lane.EVENT]
                rows = []
                if high > self._events_clear and Lane.EVENT in self._filter.lanes:
                    rows = await self._outbox.peek(
                        Lane.EVENT, after_seq=self._sent_seq[Lane.EVENT], limit=EVENTS_PER_READ
                    )
                    if len(rows) < EVENTS_PER_READ:
                        # Everything committed up to `high` is read: no second trip to find it empty.
                        # (Not `rows[-1].seq >= high`: `high` only knows this run's commits, not the
                        # backlog stored before a restart or sent again after a rewind.)
                        self._events_clear = high
                if rows:
                    end = rows[-1].seq
                    rows = self._filter.events(rows, self.destination)
                    if self._restamp is not None:
                        rows = [self._restamp(r) for r in rows]
                    event_batches = self._enc.rows(
                        Lane.EVENT,
                        rows,
                        prev_seq=self._prev[Lane.EVENT],
                        max_rows=EVENTS_PER_MESSAGE,
                        max_bytes=max_bytes[Lane.EVENT],
                    )
                    if await self._drop_too_large(client, event_batches):
                        self._events_clear = -1  # read the lane again: the row is gone
                        continue
                    for batch in event_batches:
                        await self._send(client, tg, window, batch)
                    if end > self._sent_seq[Lane.EVENT]:  # the rest was left out by the filter
                        await self._send(
                            client, tg, window, _skipped(Lane.EVENT, self._sent_seq[Lane.EVENT], end)
                        )
                    continue
                if Lane.TELEMETRY not in self._filter.lanes:  # an events-only destination: idle
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._wake.wait()
                    continue
                after = self._sent_seq[Lane.TELEMETRY]
                if pending and pending[0].first_seq > after and pending_after == after:
                    # The rest of a chunk an alarm interrupted: already read and encoded.
                    batches = pending
                else:
                    blocks = await ahead.take(after)
                    if blocks is None:  # nothing read ahead from here (start, rewind, caught up)
                        blocks = await self._outbox.peek_telemetry_blocks(
                            after_seq=after, max_readings=peek_rows
                        )
                    if sum(b.count for b in blocks) >= peek_rows:
                        ahead.start(blocks[-1].last_seq)  # more is likely waiting: read it meanwhile
                    batches = deque(
                        self._enc.telemetry(
                            self._filter.blocks(blocks),
                            prev_seq=self._prev[Lane.TELEMETRY],
                            max_rows=cfg.max_batch_readings,
                            max_bytes=max_bytes[Lane.TELEMETRY],
                        )
                    )
                    if await self._drop_too_large(client, batches):
                        continue  # read again: the reading is gone
                    covered = batches[-1].last_seq if batches else after
                    if blocks and blocks[-1].last_seq > covered:  # the rest was left out by the filter
                        batches.append(_skipped(Lane.TELEMETRY, covered, blocks[-1].last_seq))
                pending = deque()
                if batches:
                    while batches:
                        batch = batches.popleft()
                        if batch.first_seq <= self._replay_until:
                            delay = limiter.delay()
                            if delay > 0:
                                await self._sleep_unless_events(delay)
                        await self._send(client, tg, window, batch)
                        if batches and self._events_waiting():
                            # A live alarm goes ahead of the rest of this chunk; keep the rest.
                            pending, pending_after = batches, batch.last_seq
                            break
                    continue
                # Idle: wait for a commit; the timeout is a safety net, not the mechanism.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
        finally:
            ahead.cancel()

    def _max_bytes(self, client: UplinkClient, lane: Lane) -> int:
        """`max_batch_bytes`, or less: what the broker's Maximum Packet Size leaves a message of `lane`."""
        room = client.room(self._enc.topics[lane])
        return self.config.max_batch_bytes if room is None else min(self.config.max_batch_bytes, room)

    async def _drop_too_large(self, client: UplinkClient, batches: Iterable[RowBatch]) -> bool:
        """Drop from the outbox each row that alone makes a message over the broker's Maximum
        Packet Size (the encoding lets a row too big for `max_bytes` go alone): the broker would end
        every session at it, first in its lane, and nothing behind it would ever leave. Dropped as
        `too_large`, counted and announced (`outbox_dropped`). True when one was: the caller reads
        the lane again, so the chain (`prev_seq`) links over it. Messages of several rows are within
        `max_bytes` (`_max_bytes`), and without a known limit nothing is dropped."""
        dropped = False
        for batch in batches:
            msg = batch.message
            if msg is None or batch.count != 1 or client.fits(msg):
                continue
            self._log.warning(
                "%s seq %d alone makes a message of %d bytes, over the broker's maximum packet "
                "size of %s: dropped from the outbox (too_large)",
                LANE_NAMES[batch.lane],
                batch.first_seq,
                len(msg.payload),
                client.max_packet_size,
            )
            await self._outbox.drop_too_large(batch.lane, batch.first_seq)
            dropped = True
        return dropped

    async def _sleep_unless_events(self, delay: float) -> None:
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0 and not self._events_waiting():
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._wake.wait()
        # Events that arrived while we waited are sent by the pump's next pass (events first);
        # this telemetry message simply goes out before them, within the replay budget.

    async def _send(
        self, client: UplinkClient, tg: asyncio.TaskGroup, window: asyncio.Semaphore, batch: RowBatch
    ) -> None:
        lane = batch.lane
        if batch.message is None:  # left out by the filter: settled once what is before it is
            self._inflight[lane].append(_InFlight(batch, time.monotonic(), done=True))
            self._sent_seq[lane] = batch.last_seq
            self._settle(lane)
            if self._e2e:  # settled without a platform ack, once the carried rows are acked
                self._ack_wake.set()
            return
        await window.acquire()
        entry = _InFlight(batch, time.monotonic())
        self._inflight[lane].append(entry)
        self._sent_seq[lane] = self._prev[lane] = batch.last_seq
        tg.create_task(self._publish(client, window, entry))

    async def _publish(self, client: UplinkClient, window: asyncio.Semaphore, entry: _InFlight) -> None:
        msg = entry.batch.message
        assert msg is not None
        try:
            # No timer per message (asyncio.wait_for's timer costs as much as the rest of a
            # publish): `_watchdog` watches the oldest message in flight instead.
            await client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain, timeout=math.inf)
        finally:
            window.release()
        entry.puback = client.heard
        lane = entry.batch.lane
        self._published_msgs += 1
        self._published_rows[lane] += entry.batch.count
        if self._confirm_pubacks:
            self._confirm(client)
        else:
            entry.done = True
            self._settle(lane)

    def _lost(self, client: UplinkClient, reason: str) -> _SessionLost:
        if any(e.puback is not None and not e.done for q in self._inflight.values() for e in q):
            # Every session ending so at the same row: an ACL denying its topic (MQTT 3.1.1).
            reason += "; rows PUBACKed just before it are sent again (MQTT 3.1.1, docs/uplink.md)"
        return _SessionLost(reason, refused=client.refused is not None)

    def _note_error(self, text: str) -> None:
        if text != self._last_error:
            self._log.warning("%s", text)
        self._last_error = text
        self._last_error_ts = time.time()


def _skipped(lane: Lane, after: int, upto: int) -> RowBatch:
    """Rows after..upto that the destination's filter leaves out: settled, not published."""
    return RowBatch(None, lane, after + 1, upto, 0)


__all__ = ["Uplink", "ack_key"]
