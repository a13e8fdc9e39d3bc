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
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import aiomqtt

from citynerve.gateway import __version__
from citynerve.gateway.api import ConfigError, ConfigIssue, GatewayError, stop_task
from citynerve.gateway.payload import PayloadError
from citynerve.gateway.store import AsyncOutbox, Lane, OutboxRow, TelemetryBlock
from citynerve.gateway.uplink._connection import Backoff, RateLimiter, make_client, mark_disconnect_seen
from citynerve.gateway.uplink._readahead import ReadAhead
from citynerve.gateway.uplink.command_ids import CommandOutcomes
from citynerve.gateway.uplink.commands import CommandProcessor, CommandTarget, NonceCache, RemoteAction
from citynerve.gateway.uplink.config import BrokerUrl, UpstreamConfig
from citynerve.gateway.uplink.encoding import (
    Encoding,
    MqttMessage,
    PlatformAck,
    RowBatch,
    TelemetryBlockEncoding,
)
from citynerve.gateway.uplink.json_v1 import LANE_NAMES, JsonV1Encoding
from citynerve.gateway.uplink.junk import JunkLimiter
from citynerve.gateway.uplink.keys import load_key_ring
from citynerve.gateway.uplink.permissions import KeyRing
from citynerve.gateway.uplink.signing import ACK_SIGNING_CONTEXT
from citynerve.gateway.uplink.state import LinkState, UplinkState

log = logging.getLogger(__name__)

LANES = (Lane.EVENT, Lane.TELEMETRY)
ACK_KEY = "uplink.ack_seq.{lane}"
ACK_INTERVAL_S = 0.05  # acks are applied at most this often while more are on the way
ACK_INTERVAL_REPLAY_S = 0.25  # ... and this often while a backlog is replayed
READ_AHEAD = 2  # telemetry reads queued ahead of the pump (each up to peek_rows readings)
PEEK_READINGS = 40_000  # readings per telemetry read of stored blocks (~5 MB of JSON fragments)
PEEK_ROWS = 10_000  # rows per telemetry read for encodings that take records, not blocks
EVENTS_PER_MESSAGE = 50
STABLE_SESSION_S = 5.0  # a session this long resets the backoff
PUBACK_TIMEOUT_MIN_S = 30.0  # no PUBACK for this long (or 2 x keepalive) and the link is dead


@dataclass(slots=True)
class _InFlight:
    batch: RowBatch
    sent: float  # time.monotonic() when handed to the client
    done: bool = False


class _SessionLost(Exception):
    """Internal: the broker connection ended; carries the reason for the log and the snapshot."""


class Uplink:
    """Publishes the outbox to the platform until cancelled. See the module docstring."""

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        gateway_id: str,
        outbox: AsyncOutbox,
        inventory: Callable[[], list[dict[str, Any]]],
        commands: CommandTarget | None = None,
        actions: Mapping[str, RemoteAction] | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
        encoding: Encoding | None = None,
        restamp: Callable[[OutboxRow], OutboxRow] | None = None,
        inbound: Mapping[str, Callable[[str, bytes], Awaitable[None]]] | None = None,
    ) -> None:
        self.config = config
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
        self._window_empty = asyncio.Event()  # set when the last message in flight is acknowledged
        self._high: dict[Lane, int] = {lane: 0 for lane in LANES}  # last seq committed per lane
        # The events lane held nothing unsent when _high[EVENT] was this (-1: look again): the pump
        # then skips reading it, which would queue behind telemetry work on the store's thread.
        self._events_clear = -1
        self._ack_seq: dict[Lane, int] = {lane: 0 for lane in LANES}  # acked + deleted
        self._sent_seq: dict[Lane, int] = {lane: 0 for lane in LANES}
        self._puback_seq: dict[Lane, int] = {lane: 0 for lane in LANES}  # contiguous PUBACKed
        self._platform_seq: dict[Lane, int] = {lane: 0 for lane in LANES}  # e2e acks received
        self._inflight: dict[Lane, deque[_InFlight]] = {lane: deque() for lane in LANES}
        self._published_msgs = 0
        self._published_rows = {lane: 0 for lane in LANES}
        self._acked_rows = {lane: 0 for lane in LANES}
        self._reconnects = 0
        self._connect_failures = 0
        self._sessions = 0
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
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._registered = False
        self._platform_key = self._load_platform_key()
        # End-to-end acks delete rows, so only acks signed with the platform's key count. Without a
        # key they cannot be authenticated: rows then leave on the broker's PUBACK (logged at start).
        self._e2e = config.e2e_ack and self._platform_key is not None
        self._acks_refused = 0
        # The platform's clock against ours, from the `ts_ms` of its last signed ack (MQTT brokers
        # publish no date of their own): shown in the time-and-trust view. None: no ack yet.
        self._platform_skew_s: float | None = None
        self._inbound_refused = 0
        # A platform acked below what is settled here (it starts its chain too low): a status with
        # `acked` goes out soon, at most once per e2e_resend_after_s, so it can close that gap.
        self._status_soon = asyncio.Event()
        self._behind_status_t = -math.inf
        self._actions = actions
        self._processor = self._make_processor(commands)

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
        # Acks the ack loop had not applied yet: fewer duplicates after a restart.
        with contextlib.suppress(GatewayError):
            await self._apply_acks()

    async def run(self) -> None:
        """Connect, publish, fail over and reconnect until cancelled. With `enabled = false` in
        [upstream] it returns at once: the outbox keeps everything for later."""
        if not self.config.enabled:
            log.info("uplink: disabled in [upstream]; readings stay in the outbox")
            return
        if self.config.e2e_ack and not self._e2e:
            log.error(
                "uplink: e2e_ack is on but no platform key is provisioned (upstream.commands."
                "hmac_key_file or ed25519_public_key_file): acks cannot be authenticated, so rows "
                "leave the outbox on the broker's PUBACK instead"
            )
        if not self._registered:
            self._outbox.on_commit(self._on_commit)
            self._registered = True
        await self._load_positions()
        try:
            while True:
                for broker in self._brokers:
                    started = time.monotonic()
                    try:
                        await self._session(broker)
                    except _SessionLost as err:
                        self._note_error(f"{broker}: {err}")
                    except GatewayError as err:  # config (credentials, TLS files) or store trouble
                        self._note_error(f"{broker}: {type(err).__name__}: {err}")
                    except Exception as err:  # a bug must not end store-and-forward for good
                        log.exception("uplink: session with %s failed", broker)
                        self._note_error(f"{broker}: {type(err).__name__}: {err}")
                    if self._sessions and time.monotonic() - started >= STABLE_SESSION_S:
                        self._backoff.reset()
                        break  # after a working session, go back to the preferred broker
                self._state = LinkState.BACKING_OFF
                delay = self._backoff.next_delay()
                log.info("uplink: no broker reachable; next attempt in %.1f s", delay)
                await asyncio.sleep(delay)
        finally:
            self._state = LinkState.STOPPED
            self._client = None

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
            online=False, seq=seq_now, details={"reason": "connection_lost", "will": True}
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
                self._state = LinkState.CONNECTED
                self._since = time.time()
                log.info("uplink: connected to %s", broker)
                try:
                    await self._run_session(client)
                except asyncio.CancelledError:
                    # Stopped by the runtime: a clean disconnect suppresses the will, so say
                    # "offline" ourselves or the retained status would stay "online".
                    self._stopping = True
                    await self._goodbye(client)
                    raise
        except _LINK_ERRORS as err:
            if self._state is not LinkState.CONNECTED:
                self._connect_failures += 1
            _drop_leaked_cancel(cancels_before)
            raise _SessionLost(_describe(err)) from None
        except BaseExceptionGroup as group:
            _drop_leaked_cancel(cancels_before)
            _, rest = group.split(_LINK_ERRORS)
            if rest is not None:
                raise
            raise _SessionLost(_describe(group)) from None
        finally:
            mark_disconnect_seen(client)
            if self._state is LinkState.CONNECTED and not self._stopping:
                log.warning("uplink: lost %s", broker)
            self._client = None
            self._since = None
            self._state = LinkState.CONNECTING

    async def _run_session(self, client: aiomqtt.Client) -> None:
        # Start over from what was acknowledged: anything in flight is sent again (at-least-once).
        for lane in LANES:
            self._inflight[lane].clear()
            self._sent_seq[lane] = self._ack_seq[lane]
            self._puback_seq[lane] = self._ack_seq[lane]
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

    async def _publish_inventory(self, client: aiomqtt.Client) -> None:
        try:
            devices = self._inventory()
        except Exception:  # the runtime's bug must not keep readings from leaving
            log.exception("uplink: inventory callback failed; inventory not published")
            return
        msg = self._enc.inventory(seq=self._outbox.next_seq - 1, devices=devices)
        await client.publish(msg.topic, msg.payload, qos=1, retain=True)

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError, GatewayError):
            async with asyncio.timeout(2):
                msg = await self._status_message(online=False, reason="shutdown")
                await client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)

    async def _status_message(self, *, online: bool, reason: str | None = None) -> MqttMessage:
        details: dict[str, Any] = {"version": __version__, "encoding": self._enc.name}
        if reason:
            details["reason"] = reason
        details["uplink"] = self.snapshot().to_dict()
        try:
            stats = await self._outbox.stats()
        except GatewayError:  # the outbox is closing: still say who we are and our state
            seq = 0
        else:
            seq = stats.next_seq - 1
            details["store"] = stats.to_dict()
            details["dropped"] = {LANE_NAMES[s.lane]: s.dropped for s in stats.lanes}
            details["backlog"] = {LANE_NAMES[s.lane]: s.rows for s in stats.lanes}
            # Where a new platform starts its chain: rows up to here are settled, never sent again.
            details["acked"] = {LANE_NAMES[lane]: self._ack_seq[lane] for lane in LANES}
        if self._status is not None:
            try:
                details["gateway"] = self._status()
            except Exception:  # the runtime's figures are a bonus; never fail a status for them
                log.exception("uplink: status callback failed")
        return self._enc.status(online=online, seq=seq, details=details)

    async def _status_loop(self, client: aiomqtt.Client) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.status_interval_s):
                    await self._status_soon.wait()
            self._status_soon.clear()
            msg = await self._status_message(online=True)
            await client.publish(msg.topic, msg.payload, qos=1, retain=True)

    # ------------------------------------------------------------------ outbound
    def _on_commit(self, lane: Lane, seq: int) -> None:
        if seq > self._high[lane]:
            self._high[lane] = seq
        self._wake.set()

    def _replaying(self) -> bool:
        return self._sent_seq[Lane.TELEMETRY] < self._replay_until and self._state is LinkState.CONNECTED

    def _events_waiting(self) -> bool:
        return self._high[Lane.EVENT] > self._sent_seq[Lane.EVENT]

    async def _pump(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        cfg = self.config
        window = asyncio.Semaphore(cfg.max_inflight)
        limiter = RateLimiter(cfg.replay_max_msgs_per_s, cfg.replay_burst)
        # Readings per read of the outbox: big reads, few trips to its thread (each trip takes the
        # GIL from the busy loop several times); about 5 MB of fragments per read in memory.
        peek_rows = max(cfg.max_batch_readings * 4, PEEK_READINGS)
        self._ack_progress_t = {lane: time.monotonic() for lane in LANES}
        # The next telemetry chunks are read (on the store's thread) while this one is published.
        ahead = ReadAhead(
            functools.partial(self._outbox.peek_telemetry_next, max_readings=peek_rows), READ_AHEAD
        )
        pending: deque[RowBatch] = deque()  # encoded telemetry not yet sent, continuing from:
        pending_after = 0
        try:
            while True:
                self._wake.clear()
                self._maybe_rewind()
                # Events first, always: every pass starts with the events lane (read when a commit
                # added events since it was last found empty).
                high = self._high[Lane.EVENT]
                rows = []
                if high > self._events_clear:
                    rows = await self._outbox.peek(
                        Lane.EVENT, after_seq=self._sent_seq[Lane.EVENT], limit=500
                    )
                    if not rows or rows[-1].seq >= high:
                        # Everything committed up to `high` is read: no second trip to find it empty.
                        self._events_clear = high
                if rows:
                    if self._restamp is not None:
                        rows = [self._restamp(r) for r in rows]
                    for batch in self._enc.rows(
                        Lane.EVENT,
                        rows,
                        prev_seq=self._sent_seq[Lane.EVENT],
                        max_rows=EVENTS_PER_MESSAGE,
                        max_bytes=cfg.max_batch_bytes,
                    ):
                        await self._send(client, tg, window, batch)
                    continue
                after = self._sent_seq[Lane.TELEMETRY]
                if pending and pending[0].first_seq > after and pending_after == after:
                    # The rest of a chunk an alarm interrupted: already read and encoded.
                    batches = pending
                else:
                    blocks = await ahead.take(after)
                    if blocks:
                        batches = deque(self._wrap_blocks(blocks, after))
                    else:  # nothing read ahead from here (start, rewind, caught up): read now
                        read, nxt = await self._read_telemetry(after, peek_rows)
                        if nxt is not None and isinstance(self._enc, TelemetryBlockEncoding):
                            ahead.start(nxt)  # more is likely waiting: read it meanwhile
                        batches = deque(read)
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

    async def _read_telemetry(self, after: int, peek_rows: int) -> tuple[list[RowBatch], int | None]:
        """Up to about `peek_rows` telemetry rows after `after`, encoded into messages; and the seq
        to read on from when the read was full (more is likely waiting), else None."""
        cfg = self.config
        enc = self._enc
        per = cfg.max_batch_readings
        if not isinstance(enc, TelemetryBlockEncoding):
            limit = min(peek_rows, max(per, PEEK_ROWS))  # records cost far more memory than blocks
            rows = await self._outbox.peek(Lane.TELEMETRY, after_seq=after, limit=limit)
            batches = enc.rows(
                Lane.TELEMETRY, rows, prev_seq=after, max_rows=per, max_bytes=cfg.max_batch_bytes
            )
            return batches, (rows[-1].seq if len(rows) == limit else None)
        blocks = await self._outbox.peek_telemetry_blocks(after_seq=after, max_readings=peek_rows)
        full = sum(b.count for b in blocks) >= peek_rows
        return self._wrap_blocks(blocks, after), (blocks[-1].last_seq if full else None)

    def _wrap_blocks(self, blocks: list[TelemetryBlock], after: int) -> list[RowBatch]:
        enc = self._enc
        assert isinstance(enc, TelemetryBlockEncoding)
        cfg = self.config
        return enc.telemetry_from_blocks(
            blocks, prev_seq=after, max_rows=cfg.max_batch_readings, max_bytes=cfg.max_batch_bytes
        )

    def _maybe_rewind(self) -> None:
        """e2e mode: the platform stopped acknowledging a lane (it may have missed messages while it
        was away from the broker, or lost one); send that lane again from its last ack. Each lane
        has its own timer. Duplicates are dropped by seq there."""
        if not self._e2e:
            return
        now = time.monotonic()
        for lane in LANES:
            if self._sent_seq[lane] <= self._platform_seq[lane]:
                self._ack_progress_t[lane] = now  # nothing outstanding: nothing to wait for
                continue
            if now - self._ack_progress_t[lane] < self.config.e2e_resend_after_s:
                continue
            log.info(
                "uplink: no e2e ack for %s since %.0f s; resending from seq %d",
                LANE_NAMES[lane],
                self.config.e2e_resend_after_s,
                self._platform_seq[lane],
            )
            self._sent_seq[lane] = max(self._platform_seq[lane], self._ack_seq[lane])
            self._rewinds += 1
            if lane is Lane.EVENT:
                self._events_clear = -1
            self._ack_progress_t[lane] = now

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
        self, client: aiomqtt.Client, tg: asyncio.TaskGroup, window: asyncio.Semaphore, batch: RowBatch
    ) -> None:
        await window.acquire()
        entry = _InFlight(batch, time.monotonic())
        self._inflight[batch.lane].append(entry)
        self._sent_seq[batch.lane] = batch.last_seq
        tg.create_task(self._publish(client, window, entry))

    async def _publish(self, client: aiomqtt.Client, window: asyncio.Semaphore, entry: _InFlight) -> None:
        msg = entry.batch.message
        try:
            # No timer per message (asyncio.wait_for's timer costs as much as the rest of a
            # publish): `_watchdog` watches the oldest message in flight instead.
            await client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain, timeout=math.inf)
        finally:
            window.release()
        entry.done = True
        lane = entry.batch.lane
        self._published_msgs += 1
        self._published_rows[lane] += entry.batch.count
        q = self._inflight[lane]
        while q and q[0].done:
            self._puback_seq[lane] = q.popleft().batch.last_seq
        if not q and not any(self._inflight.values()):
            self._window_empty.set()
        if not self._e2e:
            self._ack_wake.set()

    def _puback_timeout_s(self) -> float:
        return max(PUBACK_TIMEOUT_MIN_S, 2.0 * self.config.keepalive_s)

    async def _watchdog(self) -> None:
        """No PUBACK for the oldest message in flight within the timeout: the link is dead even if
        TCP has not noticed (a broker that hangs). Ends the session; everything unacknowledged is
        sent again on the next one."""
        limit = self._puback_timeout_s()
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            now = time.monotonic()
            for lane in LANES:
                q = self._inflight[lane]
                if q and now - q[0].sent > limit:
                    raise TimeoutError(
                        f"no PUBACK within {limit:g} s for {LANE_NAMES[lane]} seq {q[0].batch.last_seq}"
                    )

    # ------------------------------------------------------------------ acks
    def _ack_target(self, lane: Lane) -> int:
        if self._e2e:
            # Never beyond what we published in this run: a stale ack from before a restart could
            # otherwise name rows the platform has not got.
            return min(self._platform_seq[lane], max(self._sent_seq[lane], self._ack_seq[lane]))
        return self._puback_seq[lane]

    async def _ack_loop(self) -> None:
        # Acks are coalesced while messages are in flight: during a drain acks arrive for every
        # message, and each delete commit takes the store's thread (and the GIL, statement by
        # statement) from the reads and the loop. A crash loses at most that much ack progress:
        # those rows are sent again (dedupe by seq). With nothing left in flight (live traffic
        # trickling in, or the end of a drain) nothing more is coming soon: at once. Acks commit
        # without an fsync (`Outbox.ack`), so one per message at live rates costs little.
        while True:
            await self._ack_wake.wait()
            if any(self._inflight.values()):
                # ... but no longer than until the window empties (the last PUBACK of a drain).
                interval = ACK_INTERVAL_REPLAY_S if self._replaying() else ACK_INTERVAL_S
                self._window_empty.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self._window_empty.wait()
            self._ack_wake.clear()
            await self._apply_acks()

    async def _apply_acks(self) -> None:
        for lane in LANES:
            target = self._ack_target(lane)
            if target > self._ack_seq[lane]:
                # Delete and persist the position in one commit: the next session's prev_seq is
                # exactly the last row deleted.
                n = await self._outbox.ack(
                    lane, target, state=(ACK_KEY.format(lane=LANE_NAMES[lane]), str(target))
                )
                self._acked_rows[lane] += n
                self._ack_seq[lane] = target

    async def _load_positions(self) -> None:
        for lane in LANES:
            raw = await self._outbox.get(ACK_KEY.format(lane=LANE_NAMES[lane]))
            try:
                self._ack_seq[lane] = int(raw) if raw else 0
            except ValueError:
                self._ack_seq[lane] = 0
            self._sent_seq[lane] = self._puback_seq[lane] = self._ack_seq[lane]
            self._platform_seq[lane] = self._ack_seq[lane]

    def _on_platform_ack(self, ack: PlatformAck) -> None:
        if ack.epoch is not None and ack.epoch != self._outbox.epoch:
            log.info(
                "uplink: ignored an e2e ack for store epoch %r (ours is %s)",
                ack.epoch[:32],
                self._outbox.epoch,
            )
            return
        if ack.seq > self._platform_seq[ack.lane]:
            self._platform_seq[ack.lane] = ack.seq
            self._ack_progress_t[ack.lane] = time.monotonic()
            self._ack_wake.set()
            # Held by the platform from now on: a size-cap trim before our delete does not count
            # them as dropped (status `dropped`, `outbox_dropped`).
            self._outbox.note_delivered(ack.lane, self._ack_target(ack.lane))
        elif ack.seq < self._ack_seq[ack.lane]:
            now = time.monotonic()
            if now - self._behind_status_t >= self.config.e2e_resend_after_s:
                self._behind_status_t = now
                self._status_soon.set()

    # ------------------------------------------------------------------ inbound
    async def _receive(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        running = asyncio.Semaphore(4)  # commands run concurrently, but only a few
        refused = JunkLimiter()  # one log line per interval however many bad acks arrive
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            topic = str(message.topic)
            if topic == self._enc.ack_topic:
                try:
                    ack = self._enc.decode_ack(payload)
                    assert self._platform_key is not None  # subscribed only with a key
                    if not self._platform_key.verify(ack.body, context=ACK_SIGNING_CONTEXT):
                        raise PayloadError("uplink.ack", "not signed with the platform's key")
                    self._on_platform_ack(ack)
                    sent_ms = ack.body.get("ts_ms")
                    if isinstance(sent_ms, int) and not isinstance(sent_ms, bool):
                        self._platform_skew_s = round(sent_ms / 1000 - time.time(), 3)
                except Exception as err:  # no payload may end the session: refuse, count, go on
                    self._acks_refused += 1
                    summary = refused.admit("ack")
                    if summary is not None:
                        more = f"; {summary}" if summary else ""
                        log.warning("uplink: refused an e2e ack: %s%s", err, more)
            elif topic == self._enc.command_topic:
                if self._processor is None:
                    continue
                await running.acquire()
                tg.create_task(self._command(client, payload, running), name="uplink.command")
            else:
                for topic_filter, handler in self._inbound.items():
                    if message.topic.matches(topic_filter):
                        await handler(topic, payload)
                        break

    async def _command(self, client: aiomqtt.Client, payload: bytes, running: asyncio.Semaphore) -> None:
        try:
            assert self._processor is not None
            try:
                result = await self._processor.handle(payload)
            except Exception:  # a bug in a check must not end the session; the platform times out
                self._inbound_refused += 1
                log.exception("uplink: command handling failed")
                return
            if result.answer:
                for part in result.parts:  # chunks first, the summary last
                    msg = self._enc.command_result(
                        replace(result, result=part, parts=()), seq=self._outbox.next_seq - 1
                    )
                    await client.publish(msg.topic, msg.payload, qos=1)
                msg = self._enc.command_result(result, seq=self._outbox.next_seq - 1)
                await client.publish(msg.topic, msg.payload, qos=1)
        finally:
            running.release()

    def _make_processor(self, target: CommandTarget | None) -> CommandProcessor | None:
        if target is None:
            return None
        cfg = self.config.commands
        verifier = self._platform_key if cfg.enabled else None

        async def resend() -> None:
            if self._client is not None:
                await self._publish_inventory(self._client)

        return CommandProcessor(
            gateway_id=self.gateway_id,
            target=target,
            verifier=verifier,
            nonces=NonceCache(self._outbox, max_keep_s=cfg.max_lifetime_s + 2 * cfg.max_clock_skew_s),
            outcomes=CommandOutcomes(self._outbox, keep_s=cfg.max_lifetime_s + cfg.max_clock_skew_s),
            decode=self._enc.decode_command,
            resend_inventory=resend,
            enabled=cfg.enabled,
            max_clock_skew_s=cfg.max_clock_skew_s,
            max_lifetime_s=cfg.max_lifetime_s,
            extra_actions=self._actions,
        )

    def _load_platform_key(self) -> KeyRing | None:
        """The platform's keys (`[upstream.commands]`): they sign commands and end-to-end acks.
        Loaded when commands are enabled or acks are end-to-end; None when none is provisioned."""
        cfg = self.config.commands
        if not (cfg.enabled or self.config.e2e_ack) or not cfg.has_key:
            return None
        return load_key_ring(cfg)

    def _note_error(self, text: str) -> None:
        if text != self._last_error:
            log.warning("uplink: %s", text)
        self._last_error = text
        self._last_error_ts = time.time()


_LINK_ERRORS = (aiomqtt.MqttError, OSError, TimeoutError)


def _drop_leaked_cancel(before: int) -> None:
    """Python 3.11's TaskGroup leaves its parent's cancel request counted when a child fails while
    the parent waits in __aexit__ (fixed in 3.12); a later stop request must not find a stale count."""
    task = asyncio.current_task()
    if task is not None:
        while task.cancelling() > before:
            task.uncancel()


def _describe(err: BaseException) -> str:
    exc: BaseException = err
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def ack_key(lane: Lane) -> str:
    """The outbox state key that holds the uplink's acknowledged position for `lane`."""
    return ACK_KEY.format(lane=LANE_NAMES[lane])


__all__ = ["Uplink", "ack_key"]
