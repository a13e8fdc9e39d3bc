"""Ack and resend bookkeeping of `Uplink` (gateway/uplink/_uplink.py), kept apart so each module
stays small: messages settled on PUBACK, end-to-end acks from the platform, the delete commits that
move a destination's position, and the e2e rewind that sends a lane again. A mixin; the attributes
below are the Uplink's."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

from citynerve.gateway.store import DEFAULT_DESTINATION, AsyncOutbox, Lane, position_key
from citynerve.gateway.uplink._connection import UplinkClient
from citynerve.gateway.uplink.config import UpstreamConfig
from citynerve.gateway.uplink.destinations import DestinationFilter
from citynerve.gateway.uplink.encoding import PlatformAck, RowBatch
from citynerve.gateway.uplink.json_v1 import LANE_NAMES

LANES = (Lane.EVENT, Lane.TELEMETRY)
CHAIN_KEY = "uplink.ack_seq.{lane}.chain"  # + ".<destination>" but for the default one


@dataclass(slots=True)
class _InFlight:
    batch: RowBatch
    sent: float  # time.monotonic() when handed to the client
    done: bool = False  # PUBACKed (MQTT 3.1.1: and the connection lived on after it), or left out
    puback: int | None = None  # the client's `heard` when its PUBACK was taken


class UplinkAcks:
    """Which rows of each lane are sent, PUBACKed, acknowledged by the platform and deleted."""

    config: UpstreamConfig
    destination: str
    _log: logging.LoggerAdapter[logging.Logger]
    _outbox: AsyncOutbox
    _filter: DestinationFilter
    _e2e: bool
    _confirm_pubacks: bool  # MQTT 3.1.1 without e2e acks: `_confirm`
    _ack_wake: asyncio.Event
    _events_clear: int
    _ack_seq: dict[Lane, int]
    _sent_seq: dict[Lane, int]
    _puback_seq: dict[Lane, int]
    _prev: dict[Lane, int]
    _puback_chain: dict[Lane, int]
    _chain: dict[Lane, int]
    _platform_seq: dict[Lane, int]
    _inflight: dict[Lane, deque[_InFlight]]
    _acked_rows: dict[Lane, int]
    _ack_progress_t: dict[Lane, float]
    _rewinds: int
    _status_soon: asyncio.Event
    _behind_status_t: float
    _bogus_ack_t: float

    def _maybe_rewind(self) -> None:
        """e2e mode: the platform stopped acknowledging a lane (it may have missed messages while it
        was away from the broker, or lost one); send that lane again from its last ack. Each lane
        has its own timer. Duplicates are dropped by seq there."""
        if not self._e2e:
            return
        now = time.monotonic()
        for lane in LANES:
            if self._platform_has_all(lane):
                self._ack_progress_t[lane] = now  # nothing outstanding: nothing to wait for
                continue
            if now - self._ack_progress_t[lane] < self.config.e2e_resend_after_s:
                continue
            self._log.info(
                "no e2e ack for %s since %.0f s; resending from seq %d",
                LANE_NAMES[lane],
                self.config.e2e_resend_after_s,
                self._platform_seq[lane],
            )
            self._sent_seq[lane] = max(self._platform_seq[lane], self._ack_seq[lane])
            self._prev[lane] = max(self._platform_seq[lane], self._chain[lane])
            self._rewinds += 1
            if lane is Lane.EVENT:
                self._events_clear = -1
            self._ack_progress_t[lane] = now

    def _settle(self, lane: Lane) -> None:
        """Messages PUBACKed (and rows left out) at the head of the lane's queue are settled."""
        q = self._inflight[lane]
        while q and q[0].done:
            batch = q.popleft().batch
            self._puback_seq[lane] = batch.last_seq
            if batch.message is not None:
                self._puback_chain[lane] = batch.last_seq
        if not self._e2e:
            self._ack_wake.set()

    def _confirm(self, client: UplinkClient) -> None:
        """MQTT 3.1.1: a PUBACK the broker followed with another packet (a later PUBACK; a PINGRESP
        within `keepalive_s` of quiet) settles its message; one followed by the connection's end
        does not: sent again. (Packets read before the message's task resumed count as earlier.)"""
        if not self._confirm_pubacks:
            return
        for lane in LANES:
            confirmed = False
            for entry in self._inflight[lane]:
                if entry.done:
                    continue
                if entry.puback is None or entry.puback >= client.heard:
                    break
                entry.done = confirmed = True
            if confirmed:
                self._settle(lane)

    # ------------------------------------------------------------------ acks
    def _platform_has_all(self, lane: Lane) -> bool:
        """e2e mode: the platform acknowledged every row a message of this session carried (the
        rows sent after the last of them, if any, were left out by the filter)."""
        return self._platform_seq[lane] >= self._prev[lane]

    def _ack_target(self, lane: Lane) -> int:
        if self._e2e:
            sent = max(self._sent_seq[lane], self._ack_seq[lane])
            if self._platform_has_all(lane):
                # Rows the filter left out after the last carried one are settled with it: no
                # platform acks them (it never gets them), and they must not wait for the next
                # wanted row, which may be days away (an events-only fire centre).
                return sent
            # Never beyond what we published in this run: a stale ack from before a restart could
            # otherwise name rows the platform has not got.
            return min(self._platform_seq[lane], sent)
        return self._puback_seq[lane]

    async def _ack_loop(self) -> None:
        # One delete commit at a time; the acks that arrive while it runs are applied together by
        # the next. A crash loses at most that much ack progress: those rows are sent again
        # (dedupe by seq). Acks commit without an fsync (`Outbox.ack`).
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            await self._apply_acks()

    async def _apply_acks(self) -> None:
        for lane in LANES:
            target = self._ack_target(lane)
            if target > self._ack_seq[lane] and lane in self._filter.lanes:
                # The position and the chain (last seq a message carried: the next session's
                # prev_seq) are stored in one commit with the delete.
                chain = min(self._platform_seq[lane] if self._e2e else self._puback_chain[lane], target)
                n = await self._outbox.ack(
                    lane, target, destination=self.destination, state=(self._chain_key(lane), str(chain))
                )
                self._acked_rows[lane] += n
                self._ack_seq[lane] = target
                self._chain[lane] = chain

    def _chain_key(self, lane: Lane) -> str:
        key = CHAIN_KEY.format(lane=LANE_NAMES[lane])
        return key if self.destination == DEFAULT_DESTINATION else f"{key}.{self.destination}"

    async def _load_positions(self) -> None:
        for lane in LANES:
            raw = await self._outbox.get(position_key(self.destination, lane))
            chain = await self._outbox.get(self._chain_key(lane))
            try:
                self._ack_seq[lane] = int(raw) if raw else 0
                self._chain[lane] = int(chain) if chain else self._ack_seq[lane]
            except ValueError:
                self._ack_seq[lane] = self._chain[lane] = 0
            self._sent_seq[lane] = self._puback_seq[lane] = self._ack_seq[lane]
            self._prev[lane] = self._puback_chain[lane] = self._chain[lane]
            self._platform_seq[lane] = self._ack_seq[lane]

    def _on_platform_ack(self, ack: PlatformAck) -> None:
        if ack.epoch is not None and ack.epoch != self._outbox.epoch:
            self._log.info(
                "ignored an e2e ack for store epoch %r (ours is %s)",
                ack.epoch[:32],
                self._outbox.epoch,
            )
            return
        if ack.seq >= self._outbox.next_seq:
            # No row of this epoch has that seq yet: the ack cannot be true (a platform fault, or a
            # copy of this outbox in another gateway), and taken it would delete rows sent but not
            # received. Ignored, logged at most once per resend period.
            now = time.monotonic()
            if now - self._bogus_ack_t >= self.config.e2e_resend_after_s:
                self._bogus_ack_t = now
                self._log.warning(
                    "ignored an e2e ack for %s seq %d: this outbox's seqs are all below %d",
                    LANE_NAMES[ack.lane],
                    ack.seq,
                    self._outbox.next_seq,
                )
            return
        if ack.seq > self._platform_seq[ack.lane]:
            self._platform_seq[ack.lane] = ack.seq
            self._ack_progress_t[ack.lane] = time.monotonic()
            self._ack_wake.set()
            # Held by the platform from now on: a size-cap trim before our delete does not count
            # them as dropped (status `dropped`, `outbox_dropped`).
            self._outbox.note_delivered(ack.lane, self._ack_target(ack.lane), destination=self.destination)
        elif ack.seq < self._ack_seq[ack.lane]:
            now = time.monotonic()
            if now - self._behind_status_t >= self.config.e2e_resend_after_s:
                self._behind_status_t = now
                self._status_soon.set()


def ack_key(lane: Lane, destination: str = DEFAULT_DESTINATION) -> str:
    """The outbox state key that holds a destination's acknowledged position for `lane`."""
    return position_key(destination, lane)
