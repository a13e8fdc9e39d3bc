"""Command replay protection survives the wall clock being set back (and forward, then back), also
across a restart of the gateway on the same outbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import (
    CommandOutcome,
    CommandProcessor,
    JsonV1Encoding,
    NonceCache,
    RejectReason,
)
from citynerve.gateway.uplink.signing import CommandVerifier
from tests.clock.clocks import SteppedClock
from tests.uplink.test_commands import GW, KEY, SIGNER, BuildingTarget

T = 1_790_000_000.0


def processor(outbox: AsyncOutbox, clock: SteppedClock) -> CommandProcessor:
    async def resend() -> None:
        return None

    return CommandProcessor(
        gateway_id=GW,
        target=BuildingTarget(),
        verifier=CommandVerifier.hmac(KEY),
        nonces=NonceCache(outbox, clock=clock),
        decode=JsonV1Encoding(topic_prefix="citynerve", gateway_id=GW).decode_command,
        resend_inventory=resend,
        enabled=True,
        clock=clock.wall,
    )


def signed(now: float, lifetime_s: float = 300.0) -> bytes:
    args: dict[str, Any] = {"device_id": "wm-1", "point": "valve", "value": True}
    return json.dumps(SIGNER.command(GW, "write_point", args, now=now, lifetime_s=lifetime_s)).encode()


async def test_replay_after_the_clock_is_set_back(tmp_path: Path) -> None:
    clock = SteppedClock(wall=T)
    async with AsyncOutbox(tmp_path / "o.sqlite") as ob:
        p = processor(ob, clock)
        captured = signed(T)
        assert (await p.handle(captured)).outcome is CommandOutcome.OK
        clock.advance(400)  # the command expired 100 s ago; a later one prunes its nonce
        assert (await p.handle(signed(T + 400))).outcome is CommandOutcome.OK
        assert (await p.handle(captured)).reason is RejectReason.EXPIRED
        # Someone sets the clock back 350 s: on the wall clock the captured command is within its
        # lifetime again and its nonce was pruned. An hour back: it looks issued in the future.
        clock.step(-350)
        assert (await p.handle(captured)).reason is RejectReason.EXPIRED
        clock.step(-3600)
        assert (await p.handle(captured)).reason is RejectReason.EXPIRED
    async with AsyncOutbox(tmp_path / "o.sqlite") as ob:  # and after a restart (same boot)
        assert (await processor(ob, clock).handle(captured)).reason is RejectReason.EXPIRED


async def test_replay_after_the_clock_goes_forward_then_back(tmp_path: Path) -> None:
    clock = SteppedClock(wall=T)
    async with AsyncOutbox(tmp_path / "o.sqlite") as ob:
        p = processor(ob, clock)
        captured = signed(T)
        assert (await p.handle(captured)).outcome is CommandOutcome.OK
        clock.step(2 * 86400)  # forward two days: every nonce looks expired on the wall clock
        clock.advance(5)
        # A command signed at the gateway's (wrong) time is accepted and prunes what the wall says.
        assert (await p.handle(signed(clock.wall()))).outcome is CommandOutcome.OK
        clock.step(-2 * 86400)  # back: the captured command is within its lifetime again
        clock.advance(5)
        r = await p.handle(captured)
        assert r.outcome is CommandOutcome.REJECTED and r.reason in (
            RejectReason.REPLAYED,
            RejectReason.EXPIRED,
        )


async def test_legitimate_commands_pass_after_a_step_back(tmp_path: Path) -> None:
    """The floor comes from signed commands only: a gateway whose clock is corrected back still
    takes fresh commands from a platform with the right time."""
    clock = SteppedClock(wall=T)
    async with AsyncOutbox(tmp_path / "o.sqlite") as ob:
        p = processor(ob, clock)
        assert (await p.handle(signed(T))).outcome is CommandOutcome.OK
        clock.step(-3600)
        clock.advance(10)
        assert (await p.handle(signed(T + 10))).outcome is CommandOutcome.OK
