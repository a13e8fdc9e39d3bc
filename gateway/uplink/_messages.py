"""The uplink's messages besides the outbox rows: status and inventory (retained), commands and
end-to-end acks from the platform. A mixin of `Uplink` (gateway/uplink/_uplink.py), kept apart so
each module stays small; the attributes below are the Uplink's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import aiomqtt

from citynerve.gateway import __version__
from citynerve.gateway.api import GatewayError
from citynerve.gateway.payload import PayloadError
from citynerve.gateway.store import AsyncOutbox, Lane
from citynerve.gateway.uplink._connection import UplinkClient
from citynerve.gateway.uplink.command_ids import CommandOutcomes
from citynerve.gateway.uplink.commands import CommandProcessor, CommandTarget, NonceCache, RemoteAction
from citynerve.gateway.uplink.config import UpstreamConfig
from citynerve.gateway.uplink.encoding import CommandResult, Encoding, MqttMessage, PlatformAck, RejectReason
from citynerve.gateway.uplink.errors import CommandRejectedError
from citynerve.gateway.uplink.json_v1 import LANE_NAMES
from citynerve.gateway.uplink.junk import JunkLimiter
from citynerve.gateway.uplink.keys import load_key_ring
from citynerve.gateway.uplink.permissions import KeyRing
from citynerve.gateway.uplink.signing import ACK_SIGNING_CONTEXT
from citynerve.gateway.uplink.state import LinkState, UplinkState

LANES = (Lane.EVENT, Lane.TELEMETRY)
PUBACK_TIMEOUT_MIN_S = 30.0  # no PUBACK for this long (or 2 x keepalive) and the link is dead


class UplinkMessages:
    """Status, inventory, commands and platform acks of one destination's uplink."""

    config: UpstreamConfig
    gateway_id: str
    destination: str
    _log: logging.LoggerAdapter[logging.Logger]
    _outbox: AsyncOutbox
    _enc: Encoding
    _inventory: Callable[[], Iterable[Mapping[str, Any]]]
    _status: Callable[[], dict[str, Any]] | None
    _actions: Mapping[str, RemoteAction] | None
    _client: UplinkClient | None
    _state: LinkState
    _reconnect_reason: str | None
    _inbound: dict[str, Callable[[str, bytes], Awaitable[None]]]
    _platform_key: KeyRing | None
    _processor: CommandProcessor | None
    _ack_seq: dict[Lane, int]
    _status_soon: asyncio.Event
    _acks_refused: int
    _inbound_refused: int
    _platform_skew_s: float | None
    _inflight: dict[Lane, deque[Any]]  # of _uplink._InFlight

    def snapshot(self) -> UplinkState:
        raise NotImplementedError

    def _on_platform_ack(self, ack: PlatformAck) -> None:
        raise NotImplementedError

    def _note_error(self, text: str) -> None:
        raise NotImplementedError

    async def _publish_inventory(self, client: UplinkClient) -> None:
        # At the start of a session an inventory that is not published is noted (status, log) and
        # the rows go on: the platform keeps the retained one from before.
        with contextlib.suppress(CommandRejectedError):
            await self._send_inventory(client)

    async def _send_inventory(self, client: UplinkClient) -> None:
        """Publish the retained inventory, or raise CommandRejectedError saying why it was not
        (`too_large`, `internal_error`): the `resend_inventory` command answers with it."""
        # The devices come one at a time (the runtime's iterator): each is rendered and dropped, so
        # only the document itself is alive when it is sent.
        try:
            msg = self._enc.inventory(seq=self._outbox.next_seq - 1, devices=self._inventory())
        except Exception as err:  # the runtime's bug must not keep readings from leaving
            self._log.exception("inventory callback failed; inventory not published")
            raise CommandRejectedError(
                RejectReason.INTERNAL, f"inventory not published: {type(err).__name__}"
            ) from err
        if not client.fits(msg):  # the broker would end the session at it, every session
            problem = (
                f"inventory not published: {len(msg.payload)} bytes, over the broker's maximum "
                f"packet size of {client.max_packet_size}"
            )
            self._note_error(problem)
            raise CommandRejectedError(RejectReason.TOO_LARGE, problem)
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
            with contextlib.suppress(GatewayError):
                mine = (await self._outbox.destination_stats()).get(self.destination)
                if mine is not None:  # what this destination has still to get, and lost
                    details["backlog"] = mine["backlog"]
                    details["dropped"] = mine["dropped"]
        details["destination"] = self.destination
        if self._status is not None:
            try:
                details["gateway"] = self._status()
            except Exception:  # the runtime's figures are a bonus; never fail a status for them
                self._log.exception("status callback failed")
        return self._enc.status(online=online, seq=seq, details=details)

    async def _status_loop(self, client: aiomqtt.Client) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.status_interval_s):
                    await self._status_soon.wait()
            self._status_soon.clear()
            msg = await self._status_message(online=True)
            await client.publish(msg.topic, msg.payload, qos=1, retain=True)

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
                        self._log.warning("refused an e2e ack: %s%s", err, more)
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
                self._log.exception("command handling failed")
                return
            if result.answer:
                try:
                    for part in result.parts:  # chunks first, the summary last
                        msg = self._enc.command_result(
                            replace(result, result=part, parts=()), seq=self._outbox.next_seq - 1
                        )
                        await client.publish(msg.topic, msg.payload, qos=1)
                    msg = self._enc.command_result(result, seq=self._outbox.next_seq - 1)
                    await client.publish(msg.topic, msg.payload, qos=1)
                except Exception:  # no result may end the session (a lost link ends it anyway)
                    self._inbound_refused += 1
                    self._log.exception("command result not published")
        finally:
            running.release()

    async def publish_result(self, result: CommandResult) -> bool:
        """Publish a result outside a command's own handling (a verdict that comes later, like a
        config change's health check); False when not connected."""
        client = self._client
        if client is None or self._state is not LinkState.CONNECTED:
            return False
        msg = self._enc.command_result(result, seq=self._outbox.next_seq - 1)
        await client.publish(msg.topic, msg.payload, qos=1)
        return True

    def _make_processor(self, target: CommandTarget | None) -> CommandProcessor | None:
        if target is None:
            return None
        cfg = self.config.commands
        verifier = self._platform_key if cfg.enabled else None

        async def resend() -> None:
            if self._client is not None:
                await self._send_inventory(self._client)

        return CommandProcessor(
            gateway_id=self.gateway_id,
            target=target,
            verifier=verifier,
            nonces=NonceCache(self._outbox, max_keep_s=cfg.max_lifetime_s + 2 * cfg.max_clock_skew_s),
            outcomes=CommandOutcomes(self._outbox, keep_s=cfg.max_lifetime_s + 2 * cfg.max_clock_skew_s),
            decode=self._enc.decode_command,
            resend_inventory=resend,
            enabled=cfg.enabled,
            max_clock_skew_s=cfg.max_clock_skew_s,
            max_lifetime_s=cfg.max_lifetime_s,
            extra_actions=self._actions,
            destination=self.destination,
        )

    def _load_platform_key(self) -> KeyRing | None:
        """The platform's keys (`[upstream.commands]`): they sign commands and end-to-end acks.
        Loaded when commands are enabled or acks are end-to-end; None when none is provisioned."""
        cfg = self.config.commands
        if not (cfg.enabled or self.config.e2e_ack) or not cfg.has_key:
            return None
        return load_key_ring(cfg)

    def _puback_timeout_s(self) -> float:
        return max(PUBACK_TIMEOUT_MIN_S, 2.0 * self.config.keepalive_s)

    async def _watchdog(self) -> None:
        """No PUBACK for the oldest message in flight within the timeout: the link is dead even if
        TCP has not noticed (a broker that hangs). Ends the session; everything unacknowledged is
        sent again on the next one."""
        limit = self._puback_timeout_s()
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            if self._reconnect_reason is not None:
                reason, self._reconnect_reason = self._reconnect_reason, None
                raise ConnectionResetError(f"reconnecting: {reason}")
            now = time.monotonic()
            for lane in LANES:
                # The oldest message without its PUBACK (MQTT 3.1.1: PUBACKed ones wait in the
                # queue for the next packet, a PINGRESP at the latest; paho's keepalive watches that).
                oldest = next((e for e in self._inflight[lane] if e.puback is None and not e.done), None)
                if oldest is not None and now - oldest.sent > limit:
                    raise TimeoutError(
                        f"no PUBACK within {limit:g} s for {LANE_NAMES[lane]} seq {oldest.batch.last_seq}"
                    )
