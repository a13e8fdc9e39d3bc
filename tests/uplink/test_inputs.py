"""Hostile input on the uplink's inbound topics, against a real Mosquitto: nested and oversized
payloads never end the session, forged end-to-end acks delete nothing, junk commands are answered
and logged once per interval with counts. Plus the bounded JSON loader on its own."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from citynerve.gateway.payload import PayloadError, load_json, nesting_depth
from citynerve.gateway.store import AsyncOutbox, Lane
from citynerve.gateway.uplink import Uplink
from citynerve.gateway.uplink.junk import JunkLimiter
from citynerve.gateway.uplink.signing import sign_ed25519
from citynerve.hil.platform import CommandSigner, MosquittoBroker
from tests.uplink.conftest import (
    INVENTORY,
    PLATFORM_SIGNER,
    platform_key_file,
    readings,
    upstream,
    wait_for,
)
from tests.uplink.test_commands import BuildingTarget

GW = "gw-inputs"
DEEP = (b"[" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000, b"[" * 3000 + b"]" * 3000)


# ---------------------------------------------------------------- the loader


def test_deep_payload_refused_before_parsing() -> None:
    started = time.perf_counter()
    with pytest.raises(PayloadError) as exc:
        load_json(b"[" * 100_000, where="uplink.cmd", max_bytes=1 << 20)
    assert exc.value.where == "uplink.cmd" and "deeper" in exc.value.reason
    assert time.perf_counter() - started < 1.0


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{", "b": ['x\\"[[[[']})
    assert load_json(text, where="t", max_bytes=4096, max_depth=2)["b"] == ['x\\"[[[[']
    assert nesting_depth(b'[[1], {"k": [2]}]', 10) == 3


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"x" * 5000, "larger than"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"a": NaN}', "not JSON"),
        (b'{"a": 1e999}', "1e999 is out of range"),  # valid JSON text, but inf as a float
        (b"[-1E400]", "not finite"),
        (b"{", "not JSON"),
        (b"[" * 17 + b"]" * 17, "deeper"),
    ],
)
def test_every_refusal_is_one_typed_error(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        load_json(payload, where="uplink.ack", max_bytes=4096)


def test_junk_limiter_counts_what_it_holds_back() -> None:
    now = [100.0]
    lim = JunkLimiter(10.0, clock=lambda: now[0])
    assert lim.admit("malformed") == ""
    assert [lim.admit("bad_signature") for _ in range(5)] == [None] * 5
    now[0] += 10.0
    summary = lim.admit("malformed")
    assert summary is not None and "5 more" in summary and "bad_signature=5" in summary
    assert lim.suppressed == 5


# ---------------------------------------------------------------- over a real broker


async def _up(up: Uplink) -> bool:
    return up.snapshot().connected


async def _rows(outbox: AsyncOutbox, lane: Lane) -> int:
    return next(s.rows for s in (await outbox.stats()).lanes if s.lane is lane)


async def test_nested_payloads_never_end_the_session(
    broker: MosquittoBroker, outbox: AsyncOutbox, tmp_path: Path
) -> None:
    target = BuildingTarget()
    cfg = upstream(
        broker,
        e2e_ack=True,
        commands={"enabled": True, "hmac_key_file": str(platform_key_file())},
    )
    async with (
        Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=target.inventory, commands=target) as up,
        aiomqtt.Client(broker.host, broker.port) as attacker,
    ):
        await wait_for(lambda: _up(up))
        await attacker.subscribe(f"citynerve/{GW}/cmd/result", qos=1)
        for topic in ("ack", "cmd"):
            for payload in DEEP:
                await attacker.publish(f"citynerve/{GW}/{topic}", payload, qos=1)
        # The session is the same one and still carries commands: a signed command is answered.
        good = PLATFORM_SIGNER.command(GW, "read_point", {"device_id": "wm-1", "point": "flow"})
        await attacker.publish(f"citynerve/{GW}/cmd", CommandSigner.payload(good), qos=1)
        async with asyncio.timeout(20):
            async for msg in attacker.messages:
                body = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                if body["command_id"] == good["id"]:
                    assert body["outcome"] == "ok"
                    break
        snap = up.snapshot()
        assert snap.reconnects == 0 and snap.connected
        assert snap.extra["acks_refused"] == len(DEEP)


async def test_forged_acks_delete_nothing(broker: MosquittoBroker, outbox: AsyncOutbox) -> None:
    await outbox.append(readings(50), [])
    cfg = upstream(broker, e2e_ack=True)
    ack = {"schema": "citynerve.ack/1", "gateway_id": GW, "lane": "telemetry", "seq": 50, "ts_ms": 1}
    other_key = CommandSigner(hmac_key=b"not-the-platform-key-0123456789ab")
    forged: list[dict[str, Any]] = [
        ack,  # unsigned
        other_key.sign_ack(ack),  # signed with another key
        PLATFORM_SIGNER.sign(ack),  # the platform's key, but a command's signing context
        {**PLATFORM_SIGNER.sign_ack(ack), "seq": 51},  # a valid signature over another seq
        sign_ed25519(ack, Ed25519PrivateKey.generate()),  # another algorithm
    ]
    async with (
        Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up,
        aiomqtt.Client(broker.host, broker.port) as attacker,
    ):
        await wait_for(lambda: _up(up))

        async def all_sent() -> bool:
            return up.snapshot().sent_seq["telemetry"] == 50

        await wait_for(all_sent)
        for body in forged:
            await attacker.publish(f"citynerve/{GW}/ack", json.dumps(body), qos=1)

        async def refused() -> bool:
            return up.snapshot().extra["acks_refused"] == len(forged)

        await wait_for(refused)
        await asyncio.sleep(0.3)  # > the ack loop's interval: a wrongly accepted ack would have run
        assert await _rows(outbox, Lane.TELEMETRY) == 50
        assert up.snapshot().ack_seq["telemetry"] == 0
        assert up.snapshot().extra["platform_clock_skew_s"] is None  # a forged ack tells no time
        # The platform's signed ack does delete (the test can tell the difference).
        await attacker.publish(f"citynerve/{GW}/ack", json.dumps(PLATFORM_SIGNER.sign_ack(ack)), qos=1)

        async def deleted() -> bool:
            return await _rows(outbox, Lane.TELEMETRY) == 0

        await wait_for(deleted)
        # Its `ts_ms` (1970 here) is the platform's clock: the time-and-trust view shows the skew.
        skew = up.snapshot().extra["platform_clock_skew_s"]
        assert skew is not None and skew < -1.6e9
        assert up.platform_skew_s == skew


async def test_e2e_without_a_key_falls_back_to_puback(
    broker: MosquittoBroker, outbox: AsyncOutbox, caplog: pytest.LogCaptureFixture
) -> None:
    """An old config (e2e_ack, no key) keeps working: acks cannot be authenticated, so rows leave on
    PUBACK as without e2e, and the log says so."""
    await outbox.append(readings(20), [])
    cfg = upstream(broker, e2e_ack=True, commands={})
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=lambda: INVENTORY) as up:

        async def deleted() -> bool:
            return await _rows(outbox, Lane.TELEMETRY) == 0

        await wait_for(deleted)
        assert up.snapshot().e2e is False
    assert any("acks cannot be authenticated" in r.getMessage() for r in caplog.records)


async def test_junk_command_flood_is_answered_once_per_interval(
    broker: MosquittoBroker, outbox: AsyncOutbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    target = BuildingTarget()
    cfg = upstream(broker, commands={"enabled": True, "hmac_key_file": str(platform_key_file())})
    n = 500
    async with (
        Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=target.inventory, commands=target) as up,
        aiomqtt.Client(broker.host, broker.port) as attacker,
    ):
        await wait_for(lambda: _up(up))
        await attacker.subscribe(f"citynerve/{GW}/cmd/result", qos=1)
        junk = [b"rm -rf /", b"{}", json.dumps({"schema": "citynerve.command/1", "id": "x1"}).encode()]
        forged = CommandSigner(hmac_key=b"guessed-key-guessed-key-guessed!").command(GW, "restart_bus")
        junk.append(CommandSigner.payload(forged))
        for i in range(n):
            await attacker.publish(f"citynerve/{GW}/cmd", junk[i % len(junk)], qos=0)

        async def counted() -> bool:
            return up.snapshot().commands_rejected == n

        await wait_for(counted, timeout_s=60)
        good = PLATFORM_SIGNER.command(GW, "read_point", {"device_id": "wm-1", "point": "flow"})
        await attacker.publish(f"citynerve/{GW}/cmd", CommandSigner.payload(good), qos=1)
        answers = []
        async with asyncio.timeout(20):
            async for msg in attacker.messages:
                body = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                answers.append(body)
                if body["command_id"] == good["id"]:
                    break
        snap = up.snapshot()
    assert answers[-1]["outcome"] == "ok"  # the platform's own command still gets through
    assert len(answers) - 1 <= 3, [a["reason"] for a in answers]  # one per 10 s interval
    assert snap.extra["commands_unanswered"] >= n - 3
    assert not target.restarted
    lines = [r for r in caplog.records if r.name == "citynerve.gateway.uplink.commands"]
    assert len(lines) <= 3, len(lines)


async def test_a_result_that_cannot_be_encoded_never_ends_the_session(
    broker: MosquittoBroker, outbox: AsyncOutbox
) -> None:
    """A lone surrogate (valid JSON `\\ud800`, not encodable as UTF-8) in an unauthenticated
    command's id and action: the answer echoes neither (null), the session goes on. A result that
    still cannot be encoded (a device's text value with a lone surrogate) is not answered, counted
    (`inbound_refused`), and ends nothing either."""
    target = BuildingTarget()
    target.values[("wm-1", "label")] = "caf\udce9"  # bytes decoded with surrogateescape
    cfg = upstream(broker, commands={"enabled": True, "hmac_key_file": str(platform_key_file())})
    async with (
        Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=target.inventory, commands=target) as up,
        aiomqtt.Client(broker.host, broker.port) as attacker,
    ):
        await wait_for(lambda: _up(up))
        await attacker.subscribe(f"citynerve/{GW}/cmd/result", qos=1)
        junk = b'{"schema":"x","id":"\\ud800","action":"\\udfff"}'
        await attacker.publish(f"citynerve/{GW}/cmd", junk, qos=1)
        bad = PLATFORM_SIGNER.command(GW, "read_point", {"device_id": "wm-1", "point": "label"})
        await attacker.publish(f"citynerve/{GW}/cmd", CommandSigner.payload(bad), qos=1)
        good = PLATFORM_SIGNER.command(GW, "read_point", {"device_id": "wm-1", "point": "flow"})

        async def unanswerable_counted() -> bool:
            return up.snapshot().extra["inbound_refused"] == 1

        await wait_for(unanswerable_counted)
        await attacker.publish(f"citynerve/{GW}/cmd", CommandSigner.payload(good), qos=1)
        answers = []
        async with asyncio.timeout(20):
            async for msg in attacker.messages:
                body = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                answers.append(body)
                if body["command_id"] == good["id"]:
                    break
        snap = up.snapshot()
    assert [(a["command_id"], a["action"], a["outcome"]) for a in answers] == [
        (None, None, "rejected"),
        (good["id"], "read_point", "ok"),
    ]
    assert snap.reconnects == 0 and snap.connected
