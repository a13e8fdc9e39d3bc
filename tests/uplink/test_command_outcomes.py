"""A command's first outcome is kept as long as the command itself can be accepted, whatever the
wall clock does: the broker's redelivery of a write that ran gets `ok` again, never `replayed` or
`expired` (which would tell the platform that a write that happened did not).

Real outbox (its kept rows), real signer; the clocks are a `Clock` subclass whose wall and
monotonic times the test moves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Mapping
from typing import Any

from citynerve.gateway.api import Clock, KeptStore
from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import (
    CommandOutcome,
    CommandProcessor,
    JsonV1Encoding,
    NonceCache,
    RejectReason,
)
from citynerve.gateway.uplink.command_ids import OUTCOMES, OUTCOMES_KEY, CommandOutcomes
from citynerve.gateway.uplink.signing import CommandVerifier
from tests.uplink.test_commands import GW, KEY, NOW, SIGNER, CountingTarget

SKEW, LIFETIME = 30.0, 300.0


class MovedClock(Clock):
    """Wall and monotonic times the test sets apart: a step of the wall clock moves `wall` only."""

    def __init__(self) -> None:
        self.wall_s = NOW
        self.mono_s = 1000.0

    def wall(self) -> float:
        return self.wall_s

    def monotonic(self) -> float:
        return self.mono_s

    def passes(self, seconds: float) -> None:
        self.wall_s += seconds
        self.mono_s += seconds


def gateway(
    outbox: AsyncOutbox, clock: MovedClock, target: CountingTarget, state: KeptStore | None = None
) -> CommandProcessor:
    async def resend() -> None:
        return None

    return CommandProcessor(
        gateway_id=GW,
        target=target,
        verifier=CommandVerifier.hmac(KEY),
        nonces=NonceCache(outbox, max_keep_s=LIFETIME + 2 * SKEW, clock=clock),
        # As the uplink builds it (_messages.py).
        outcomes=CommandOutcomes(state or outbox, keep_s=LIFETIME + 2 * SKEW, clock=clock),
        decode=JsonV1Encoding(topic_prefix="citynerve", gateway_id=GW).decode_command,
        resend_inventory=resend,
        enabled=True,
        clock=clock.wall,
        max_clock_skew_s=SKEW,
        max_lifetime_s=LIFETIME,
    )


def write(**kw: Any) -> bytes:
    args = {"device_id": "wm-1", "point": "valve", "value": True}
    return json.dumps(SIGNER.command(GW, "write_point", args, command_id="cmd-1", **kw)).encode()


async def test_a_platform_clock_ahead_keeps_the_outcome_until_the_command_expires(
    outbox: AsyncOutbox,
) -> None:
    clock, target = MovedClock(), CountingTarget()
    p = gateway(outbox, clock, target)
    # Signed 29 s ahead of the gateway's clock, lifetime 300 s: acceptable until NOW + 359.
    payload = write(now=NOW + 29, lifetime_s=300)
    first = await p.handle(payload)
    assert first.outcome is CommandOutcome.OK
    clock.passes(340)  # past lifetime + skew from the first delivery, before the command expires
    assert await p.handle(payload) == first
    clock.passes(18)  # NOW + 358: the last second the command could be accepted
    assert await p.handle(payload) == first
    assert target.writes == 1
    clock.passes(2)  # expired on both clocks: forgotten, and the expiry check refuses it
    assert (await p.handle(payload)).reason is RejectReason.EXPIRED


async def test_a_wall_clock_step_forward_does_not_forget_an_outcome(outbox: AsyncOutbox) -> None:
    clock, target = MovedClock(), CountingTarget()
    payload = write(now=NOW, lifetime_s=60)
    first = await gateway(outbox, clock, target).handle(payload)
    assert first.outcome is CommandOutcome.OK
    clock.passes(5)
    clock.wall_s += 600  # NTP steps the wall clock ten minutes forward
    assert await gateway(outbox, clock, target).handle(payload) == first  # a restart too (same boot)
    assert target.writes == 1
    clock.mono_s += 90  # the command's 60 s + 30 s skew have passed on the monotonic clock too
    assert (await gateway(outbox, clock, target).handle(payload)).reason is RejectReason.EXPIRED


async def test_after_a_reboot_each_outcome_is_kept_its_whole_span_again(outbox: AsyncOutbox) -> None:
    clock, target = MovedClock(), CountingTarget()
    payload = write(now=NOW, lifetime_s=60)
    first = await gateway(outbox, clock, target).handle(payload)
    # Another boot wrote the state: its monotonic times mean nothing now (the clock restarted).
    wall_until, _, _, span, result = json.loads((await outbox.kept(OUTCOMES))["cmd-1"])
    assert span == 90.0  # expiry + skew - now
    row = [wall_until, -1.0e9, "an-earlier-boot", span, result]  # monotonic keep-until, boot id
    await outbox.keep(OUTCOMES, {"cmd-1": json.dumps(row)})
    clock.mono_s = 5.0  # just booted
    clock.wall_s += 600  # and NTP stepped the clock a board without a real-time clock woke up with
    assert await gateway(outbox, clock, target).handle(payload) == first
    assert target.writes == 1


async def test_outcomes_stored_by_the_previous_version_are_read(outbox: AsyncOutbox) -> None:
    clock, target = MovedClock(), CountingTarget()
    old = {"cmd-1": [NOW + 330, {"command_id": "cmd-1", "action": "write_point", "outcome": "ok",
                                 "reason": None, "detail": "", "result": {"v": 1}}]}  # fmt: skip
    await outbox.put(OUTCOMES_KEY, json.dumps(old))
    r = await gateway(outbox, clock, target).handle(write(now=NOW, lifetime_s=60))
    assert r.outcome is CommandOutcome.OK and r.result == {"v": 1} and target.writes == 0


class OutboxProxy:
    """The real outbox's state and kept sets, passed through: a test subclass changes one call."""

    def __init__(self, outbox: AsyncOutbox) -> None:
        self.outbox = outbox

    async def get(self, key: str) -> str | None:
        return await self.outbox.get(key)

    async def put(self, key: str, value: str) -> None:
        await self.outbox.put(key, value)

    async def kept(self, kind: str) -> dict[str, str]:
        return await self.outbox.kept(kind)

    async def keep(
        self,
        kind: str,
        put: Mapping[str, str],
        forget: Collection[str] = (),
        *,
        state: Mapping[str, str | None] | None = None,
    ) -> None:
        await self.outbox.keep(kind, put, forget, state=state)


class GatedOutcomesState(OutboxProxy):
    """The outbox, whose read of the stored outcomes waits until the test opens the gate: a
    restart's load that is slow (the store's thread is busy)."""

    def __init__(self, outbox: AsyncOutbox) -> None:
        super().__init__(outbox)
        self.reading = asyncio.Event()
        self.gate = asyncio.Event()

    async def kept(self, kind: str) -> dict[str, str]:
        if kind == OUTCOMES:
            self.reading.set()
            await self.gate.wait()
        return await super().kept(kind)


async def test_a_redelivery_during_the_load_after_a_restart_gets_its_first_outcome(
    outbox: AsyncOutbox,
) -> None:
    clock, target = MovedClock(), CountingTarget()
    payload = write(now=NOW, lifetime_s=60)
    first = await gateway(outbox, clock, target).handle(payload)
    assert first.outcome is CommandOutcome.OK
    # Restarted: another command starts the load of the stored outcomes; the write is delivered
    # again while that load waits. It used to run against an empty table: `replayed` (its nonce is
    # kept), which tells the platform that a write that happened did not.
    state = GatedOutcomesState(outbox)
    p = gateway(outbox, clock, target, state=state)
    read = SIGNER.command(GW, "read_point", {"device_id": "wm-1", "point": "flow"}, now=NOW)
    other = asyncio.create_task(p.handle(json.dumps(read).encode()))
    await asyncio.wait_for(state.reading.wait(), 20)
    again = asyncio.create_task(p.handle(payload))
    # The redelivery runs as far as it can while the load waits (done at once when it does not wait
    # for the load); the verdict does not depend on how long this is.
    await asyncio.wait({again}, timeout=0.5)
    state.gate.set()
    assert (await asyncio.wait_for(again, 20)) == first
    assert (await asyncio.wait_for(other, 20)).outcome is CommandOutcome.OK
    assert target.writes == 1
