"""Kept nonces and command outcomes cost each command its own rows, not a rewrite of every kept
one: a platform polling at 2 commands/s made the gateway write about 178 kB per command (all 10,000
nonces and 2,000 outcomes as one value, twice), 60 GB a day on an SD card. The guarantees stay:
after a restart a replayed nonce is refused and a repeated id gets its first outcome, also for
what a version before the rows stored in its single value.

Real outbox, real signer and processor; the clocks are the test's (test_command_outcomes.MovedClock)."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

import pytest

from citynerve.gateway.api import Reading
from citynerve.gateway.store import AsyncOutbox, StoreBusyError
from citynerve.gateway.uplink import (
    CommandOutcome,
    CommandProcessor,
    JsonV1Encoding,
    NonceCache,
    RejectReason,
)
from citynerve.gateway.uplink.command_ids import CommandOutcomes
from citynerve.gateway.uplink.signing import CommandVerifier
from tests.uplink.test_command_outcomes import LIFETIME, SKEW, MovedClock, OutboxProxy
from tests.uplink.test_commands import GW, KEY, NOW, SIGNER, BuildingTarget


class CountingTarget(BuildingTarget):
    """Counts reads: a repeat answered from the kept outcome does not read again."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def read_point(self, device_id: str, point: str) -> Reading:
        self.reads += 1
        return await super().read_point(device_id, point)


class CountingState(OutboxProxy):
    """The outbox, counting the bytes of what each call asks it to store."""

    def __init__(self, outbox: AsyncOutbox) -> None:
        super().__init__(outbox)
        self.stored = 0

    async def put(self, key: str, value: str) -> None:
        self.stored += len(key) + len(value)
        await super().put(key, value)

    async def keep(
        self,
        kind: str,
        put: Mapping[str, str],
        forget: Collection[str] = (),
        *,
        state: Mapping[str, str | None] | None = None,
    ) -> None:
        self.stored += sum(len(k) + len(v) for k, v in put.items())
        self.stored += sum(len(k) + len(v or "") for k, v in (state or {}).items())
        await super().keep(kind, put, forget, state=state)


def gateway(state: Any, clock: MovedClock, target: CountingTarget, **kw: Any) -> CommandProcessor:
    async def resend() -> None:
        return None

    return CommandProcessor(
        gateway_id=GW,
        target=target,
        verifier=CommandVerifier.hmac(KEY),
        nonces=NonceCache(state, max_keep_s=LIFETIME + 2 * SKEW, clock=clock, **kw),
        outcomes=CommandOutcomes(state, keep_s=LIFETIME + 2 * SKEW, clock=clock, **kw),
        decode=JsonV1Encoding(topic_prefix="citynerve", gateway_id=GW).decode_command,
        resend_inventory=resend,
        enabled=True,
        clock=clock.wall,
        max_clock_skew_s=SKEW,
        max_lifetime_s=LIFETIME,
    )


def read(i: int, **kw: Any) -> bytes:
    args = {"device_id": "wm-1", "point": "flow"}
    return json.dumps(SIGNER.command(GW, "read_point", args, command_id=f"poll-{i}", **kw)).encode()


def nonce(payload: bytes) -> str:
    return str(json.loads(payload)["nonce"])


async def test_a_command_stores_its_own_rows_whatever_is_kept(outbox: AsyncOutbox) -> None:
    clock, target, state = MovedClock(), CountingTarget(), CountingState(outbox)
    p = gateway(state, clock, target)
    for i in range(300):  # a platform polling: 300 commands, all within their lifetime
        assert (await p.handle(read(i, now=clock.wall_s))).outcome is CommandOutcome.OK
        clock.passes(0.5)
    before = state.stored
    for i in range(300, 310):
        assert (await p.handle(read(i, now=clock.wall_s))).outcome is CommandOutcome.OK
        clock.passes(0.5)
    # Its nonce, its outcome and the clock floor: a few hundred bytes. It was every kept nonce and
    # outcome again (about 50 kB each here, 178 kB at 2 commands/s with the default bounds).
    assert (state.stored - before) / 10 < 1000


async def test_after_a_restart_a_replay_is_refused_and_a_repeat_gets_its_first_outcome(
    outbox: AsyncOutbox,
) -> None:
    clock, target = MovedClock(), CountingTarget()
    first_payloads = [read(i, now=NOW) for i in range(3)]
    p = gateway(outbox, clock, target)
    first = [await p.handle(b) for b in first_payloads]
    clock.passes(5)
    p = gateway(outbox, clock, target)  # restarted (same boot)
    assert [await p.handle(b) for b in first_payloads] == first
    replay = read(9, now=NOW, nonce=nonce(first_payloads[1]))  # a used nonce under a new id
    assert (await gateway(outbox, clock, target).handle(replay)).reason is RejectReason.REPLAYED
    assert target.reads == 3


async def test_after_a_reboot_each_kept_entry_is_kept_its_whole_span_again(outbox: AsyncOutbox) -> None:
    clock, target = MovedClock(), CountingTarget()
    payload = read(1, now=NOW, lifetime_s=60)
    first = await gateway(outbox, clock, target).handle(payload)
    # Another boot wrote the rows: their monotonic times mean nothing now (the clock restarted).
    for kind in ("uplink.nonces", "uplink.outcomes"):
        rows = await outbox.kept(kind)
        for key, raw in rows.items():
            row = json.loads(raw)
            row[1], row[2] = -1.0e9, "an-earlier-boot"  # monotonic keep-until, boot id
            await outbox.keep(kind, {key: json.dumps(row)})
    clock.mono_s = 5.0  # just booted
    clock.wall_s += 600  # and NTP stepped the clock a board without a real-time clock woke up with
    assert await gateway(outbox, clock, target).handle(payload) == first
    assert target.reads == 1


async def test_what_the_single_values_held_is_moved_into_rows(outbox: AsyncOutbox) -> None:
    """A version before the rows kept every nonce (and every outcome) in one state value: after
    the update its replay is still refused and its repeat answered, and the values are gone."""
    clock, target = MovedClock(), CountingTarget()
    payload = read(1, now=NOW)
    result = {"command_id": "poll-1", "action": "read_point", "outcome": "ok", "reason": None,
              "detail": "", "result": {"value": 7}}  # fmt: skip
    nonces = {"v": 2, "boot": "old", "floor": [NOW, 10.0], "seen": {nonce(payload): [NOW + 330, 340.0]}}
    outcomes = {"v": 2, "boot": "old", "done": {"poll-1": [NOW + 330, 340.0, 330.0, result]}}
    await outbox.put("uplink.command_nonces", json.dumps(nonces))
    await outbox.put("uplink.command_outcomes", json.dumps(outcomes))
    p = gateway(outbox, clock, target)
    r = await p.handle(payload)
    assert r.outcome is CommandOutcome.OK and r.result == {"value": 7} and target.reads == 0
    replay = read(2, now=NOW, nonce=nonce(payload))  # its nonce under a new id
    assert (await gateway(outbox, clock, target).handle(replay)).reason is RejectReason.REPLAYED
    assert await outbox.get("uplink.command_nonces") is None
    assert await outbox.get("uplink.command_outcomes") is None


async def test_the_bounds_hold_in_the_rows(outbox: AsyncOutbox) -> None:
    clock, target = MovedClock(), CountingTarget()
    p = gateway(outbox, clock, target, max_entries=20)
    for i in range(30):
        r = await p.handle(read(i, now=clock.wall_s))
        full = (CommandOutcome.REJECTED, RejectReason.REPLAYED)  # refusing beats forgetting a nonce
        assert (r.outcome, r.reason) == ((CommandOutcome.OK, None) if i < 20 else full)
        clock.passes(1)
    assert len(await outbox.kept("uplink.nonces")) == 20
    assert len(await outbox.kept("uplink.outcomes")) == 20
    clock.passes(LIFETIME + 2 * SKEW)  # all expired: the next command's rows replace them
    assert (await p.handle(read(99, now=clock.wall_s))).outcome is CommandOutcome.OK
    assert len(await outbox.kept("uplink.nonces")) == 1
    assert len(await outbox.kept("uplink.outcomes")) == 1


class BusyOnce(CountingState):
    """The outbox, busy (another writer holds it) the first time the kept nonces are read."""

    def __init__(self, outbox: AsyncOutbox) -> None:
        super().__init__(outbox)
        self.busy = True

    async def kept(self, kind: str) -> dict[str, str]:
        if self.busy and kind == "uplink.nonces":
            self.busy = False
            raise StoreBusyError("gw.db", "database is locked")
        return await super().kept(kind)


async def test_a_store_busy_at_the_first_read_after_a_restart_does_not_forget_the_nonces(
    outbox: AsyncOutbox,
) -> None:
    """The nonces are read again at the next command: marked read before reading, the cache ran
    empty for the whole run and a nonce used before the restart was accepted again."""
    clock, target = MovedClock(), CountingTarget()
    payload = read(1, now=NOW)
    assert (await gateway(outbox, clock, target).handle(payload)).outcome is CommandOutcome.OK
    clock.passes(5)
    p = gateway(BusyOnce(outbox), clock, target)  # restarted, its store busy at the first read
    replay = read(2, now=NOW, nonce=nonce(payload))  # the used nonce under a new id
    with pytest.raises(StoreBusyError):  # not run; the uplink logs it, the platform times out
        await p.handle(replay)
    assert (await p.handle(replay)).reason is RejectReason.REPLAYED  # its resend
    assert target.reads == 1
