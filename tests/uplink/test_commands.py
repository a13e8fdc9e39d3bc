"""Signed platform commands: every rejection reason, replay across restarts, the canonical form,
fuzzed payloads, and the round trip over a real broker with results validated against the schema."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citynerve.gateway.api import Clock, DeviceTimeoutError, Reading, Value, WriteRejectedError
from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import (
    CommandOutcome,
    CommandProcessor,
    JsonV1Encoding,
    NonceCache,
    PointInfo,
    RejectReason,
    Uplink,
)
from citynerve.gateway.uplink.command_ids import CommandOutcomes
from citynerve.gateway.uplink.commands import domain_problem
from citynerve.gateway.uplink.signing import CommandVerifier, canonical_bytes
from citynerve.hil.platform import CommandSigner, MosquittoBroker, PlatformConsumer
from tests.uplink.conftest import INVENTORY, upstream, validate_message, wait_for

GW = "gw-cmd"
KEY = bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
NOW = 1_790_000_000.0


class BuildingTarget:
    """A CommandTarget over an in-memory building (the runtime is the lead's; this has no peer)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], Value] = {("wm-1", "flow"): 12.5, ("wm-1", "valve"): False}
        self.writable = {("wm-1", "valve")}
        self.restarted: list[str] = []
        self.fail: Exception | None = None

    async def read_point(self, device_id: str, point: str) -> Reading:
        if self.fail:
            raise self.fail
        return Reading(device_id, point, self.values[(device_id, point)], "m3/h", NOW)

    async def write_point(self, device_id: str, point: str, value: Value) -> None:
        if self.fail:
            raise self.fail
        self.values[(device_id, point)] = value

    async def restart_bus(self, bus_id: str) -> None:
        self.restarted.append(bus_id)

    def inventory(self) -> list[dict[str, Any]]:
        return INVENTORY

    def point_info(self, device_id: str, point: str) -> PointInfo | None:
        if device_id != "wm-1":
            return None
        return PointInfo((device_id, point) in self.values, (device_id, point) in self.writable)

    def bus_ids(self) -> Collection[str]:
        return ("rs485-1",)


@pytest.fixture
def target() -> BuildingTarget:
    return BuildingTarget()


def processor(
    target: BuildingTarget,
    outbox: AsyncOutbox,
    *,
    verifier: CommandVerifier | None = None,
    enabled: bool = True,
    outcomes: CommandOutcomes | None = None,
    now: float = NOW,
) -> CommandProcessor:
    enc = JsonV1Encoding(topic_prefix="citynerve", gateway_id=GW)
    resent: list[int] = []

    async def resend() -> None:
        resent.append(1)

    return CommandProcessor(
        gateway_id=GW,
        target=target,
        verifier=verifier or CommandVerifier.hmac(KEY),
        nonces=NonceCache(outbox),
        decode=enc.decode_command,
        resend_inventory=resend,
        enabled=enabled,
        clock=lambda: now,
        outcomes=outcomes,
    )


SIGNER = CommandSigner(hmac_key=KEY)


def cmd(action: str, args: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return SIGNER.command(GW, action, args, now=kw.pop("now", NOW), **kw)


def raw(c: dict[str, Any]) -> bytes:
    return json.dumps(c).encode()


async def test_read_and_write_and_restart(target: BuildingTarget, outbox: AsyncOutbox) -> None:
    p = processor(target, outbox)
    r = await p.handle(raw(cmd("read_point", {"device_id": "wm-1", "point": "flow"})))
    assert r.outcome is CommandOutcome.OK and r.result is not None and r.result["value"] == 12.5
    r = await p.handle(raw(cmd("write_point", {"device_id": "wm-1", "point": "valve", "value": True})))
    assert r.outcome is CommandOutcome.OK and target.values[("wm-1", "valve")] is True
    r = await p.handle(raw(cmd("restart_bus", {"bus_id": "rs485-1"})))
    assert r.outcome is CommandOutcome.OK and target.restarted == ["rs485-1"]
    r = await p.handle(raw(cmd("resend_inventory")))
    assert r.outcome is CommandOutcome.OK


async def test_ed25519(target: BuildingTarget, outbox: AsyncOutbox) -> None:
    key = Ed25519PrivateKey.generate()
    p = processor(target, outbox, verifier=CommandVerifier.ed25519(key.public_key()))
    signer = CommandSigner(ed25519_key=key)
    good = signer.command(GW, "read_point", {"device_id": "wm-1", "point": "flow"}, now=NOW)
    assert (await p.handle(raw(good))).outcome is CommandOutcome.OK
    other = CommandSigner(ed25519_key=Ed25519PrivateKey.generate())
    bad = other.command(GW, "read_point", {"device_id": "wm-1", "point": "flow"}, now=NOW)
    assert (await p.handle(raw(bad))).reason is RejectReason.BAD_SIGNATURE
    # an HMAC-signed command is not accepted by an Ed25519 gateway
    assert (await p.handle(raw(cmd("read_point", {"device_id": "wm-1", "point": "flow"})))).reason is (
        RejectReason.BAD_SIGNATURE
    )


def _tampered() -> dict[str, Any]:
    c = cmd("write_point", {"device_id": "wm-1", "point": "valve", "value": True})
    c["args"]["value"] = False  # changed after signing
    return c


def _unsigned() -> dict[str, Any]:
    c = cmd("read_point", {"device_id": "wm-1", "point": "flow"})
    del c["sig"]
    return c


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_unsigned, RejectReason.UNSIGNED),
        (_tampered, RejectReason.BAD_SIGNATURE),
        (
            lambda: CommandSigner(hmac_key=b"another key of 16+ bytes").command(
                GW, "resend_inventory", now=NOW
            ),
            RejectReason.BAD_SIGNATURE,
        ),
        (lambda: cmd("resend_inventory", now=NOW - 3600), RejectReason.EXPIRED),
        (lambda: cmd("resend_inventory", now=NOW + 3600), RejectReason.NOT_YET_VALID),
        (lambda: cmd("resend_inventory", lifetime_s=86400), RejectReason.LIFETIME_TOO_LONG),
        (lambda: cmd("shell", {"cmd": "rm -rf /"}), RejectReason.UNKNOWN_COMMAND),
        (lambda: cmd("read_point", {"device_id": "nope", "point": "flow"}), RejectReason.UNKNOWN_DEVICE),
        (lambda: cmd("read_point", {"device_id": "wm-1", "point": "nope"}), RejectReason.UNKNOWN_POINT),
        (
            lambda: cmd("write_point", {"device_id": "wm-1", "point": "flow", "value": 1}),
            RejectReason.NOT_WRITABLE,
        ),
        (
            lambda: cmd("write_point", {"device_id": "wm-1", "point": "valve", "value": [1]}),
            RejectReason.BAD_VALUE,
        ),
        (lambda: cmd("restart_bus", {"bus_id": "nope"}), RejectReason.UNKNOWN_BUS),
        (lambda: cmd("read_point", {"device_id": 3}), RejectReason.MALFORMED),
        (lambda: SIGNER.command("other-gw", "resend_inventory", now=NOW), RejectReason.WRONG_GATEWAY),
        (lambda: {**cmd("resend_inventory"), "schema": "citynerve.command/0"}, RejectReason.MALFORMED),
    ],
)
async def test_rejections(
    target: BuildingTarget, outbox: AsyncOutbox, make: Any, reason: RejectReason
) -> None:
    r = await processor(target, outbox).handle(raw(make()))
    assert r.outcome is CommandOutcome.REJECTED
    assert r.reason is reason
    assert target.values[("wm-1", "valve")] is False and not target.restarted


@pytest.mark.parametrize("payload", [b"", b"\xff\xfe", b"[]", b'"x"', b"{", b"NaN", b"{}" + b" " * 20000])
async def test_malformed_payloads(target: BuildingTarget, outbox: AsyncOutbox, payload: bytes) -> None:
    r = await processor(target, outbox).handle(payload)
    assert (r.outcome, r.reason) == (CommandOutcome.REJECTED, RejectReason.MALFORMED)


async def test_disabled(target: BuildingTarget, outbox: AsyncOutbox) -> None:
    r = await processor(target, outbox, enabled=False).handle(raw(cmd("resend_inventory")))
    assert r.reason is RejectReason.DISABLED


async def test_replay_rejected_also_after_restart(target: BuildingTarget, tmp_path: Path) -> None:
    c = raw(cmd("write_point", {"device_id": "wm-1", "point": "valve", "value": True}))
    async with AsyncOutbox(tmp_path / "o.sqlite") as ob:
        p = processor(target, ob)
        assert (await p.handle(c)).outcome is CommandOutcome.OK
        assert (await p.handle(c)).reason is RejectReason.REPLAYED
    async with AsyncOutbox(tmp_path / "o.sqlite") as ob:  # a restarted gateway remembers the nonce
        assert (await processor(target, ob).handle(c)).reason is RejectReason.REPLAYED


class CountingTarget(BuildingTarget):
    """Counts writes; a write takes a while, so a second copy arrives while the first runs."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    async def write_point(self, device_id: str, point: str, value: Value) -> None:
        self.writes += 1
        await asyncio.sleep(0.05)
        await super().write_point(device_id, point, value)


class LaterClock(Clock):
    """The system clocks, `ahead_s` seconds later on both (time that really passed)."""

    def __init__(self, ahead_s: float) -> None:
        self.ahead_s = ahead_s

    def monotonic(self) -> float:
        return super().monotonic() + self.ahead_s

    def wall(self) -> float:
        return super().wall() + self.ahead_s


async def test_a_reused_command_id_runs_once_and_returns_the_first_outcome(tmp_path: Path) -> None:
    target = CountingTarget()
    c = cmd("write_point", {"device_id": "wm-1", "point": "valve", "value": True})
    async with AsyncOutbox(tmp_path / "o.sqlite") as ob:
        p = processor(target, ob, outcomes=CommandOutcomes(ob, keep_s=330))
        first, second = await asyncio.gather(p.handle(raw(c)), p.handle(raw(c)))  # concurrent copies
        third = await p.handle(raw(c))
        assert first == second == third and first.outcome is CommandOutcome.OK
        assert target.writes == 1
        failed = cmd("read_point", {"device_id": "wm-1", "point": "nope"})
        assert (await p.handle(raw(failed))).reason is RejectReason.UNKNOWN_POINT
        target.values[("wm-1", "nope")] = 1  # a repeat gets the first outcome, even a rejection
        assert (await p.handle(raw(failed))).reason is RejectReason.UNKNOWN_POINT
    async with AsyncOutbox(tmp_path / "o.sqlite") as ob:  # persisted: a restart does not run it again
        p = processor(target, ob, outcomes=CommandOutcomes(ob, keep_s=330))
        assert await p.handle(raw(c)) == first
        assert target.writes == 1
        # Bounded: once the window has passed on both clocks an id is forgotten (the expiry check
        # then refuses the replay). tests/uplink/test_command_outcomes.py: a wall clock step alone.
        later = LaterClock(400.0)
        late = processor(target, ob, outcomes=CommandOutcomes(ob, keep_s=330, clock=later), now=NOW + 400)
        assert (await late.handle(raw(c))).reason is RejectReason.EXPIRED
    forged = {**c, "args": {**c["args"], "value": False}}  # same id, not signed by the platform
    async with AsyncOutbox(tmp_path / "o.sqlite") as ob:
        r = await processor(target, ob, outcomes=CommandOutcomes(ob, keep_s=330)).handle(raw(forged))
        assert r.reason is RejectReason.BAD_SIGNATURE


async def test_device_failures_are_failed_not_crashes(target: BuildingTarget, outbox: AsyncOutbox) -> None:
    p = processor(target, outbox)
    for err, reason in [
        (DeviceTimeoutError("wm-1", ("flow",), 1.0), RejectReason.TIMEOUT),
        (WriteRejectedError("wm-1", "valve", "out of range"), RejectReason.BAD_VALUE),
        (RuntimeError("bug"), RejectReason.INTERNAL),
    ]:
        target.fail = err
        r = await p.handle(raw(cmd("write_point", {"device_id": "wm-1", "point": "valve", "value": True})))
        assert r.reason is reason
        assert r.outcome is (
            CommandOutcome.REJECTED if reason is RejectReason.BAD_VALUE else CommandOutcome.FAILED
        )


def test_canonical_form_golden() -> None:
    """The documented canonical form, recomputed by hand: sorted keys, no spaces, UTF-8, prefix."""
    c = {
        "schema": "citynerve.command/1",
        "id": "c1",
        "gateway_id": "gw-1",
        "action": "read_point",
        "args": {"point": "flow", "device_id": "wm-1"},
        "issued_at_ms": 1790000000000,
        "expires_at_ms": 1790000060000,
        "nonce": "abcdefghijklmnop",
        "alg": "hmac-sha256",
    }
    text = (
        'citynerve-command-v1\n{"action":"read_point","alg":"hmac-sha256","args":{"device_id":"wm-1",'
        '"point":"flow"},"expires_at_ms":1790000060000,"gateway_id":"gw-1","id":"c1",'
        '"issued_at_ms":1790000000000,"nonce":"abcdefghijklmnop","schema":"citynerve.command/1"}'
    )
    assert canonical_bytes(c) == text.encode()
    signed = CommandSigner(hmac_key=KEY).sign(c)
    assert signed["sig"] == base64.b64encode(hmac.new(KEY, text.encode(), hashlib.sha256).digest()).decode()
    validate_message("cmd", signed)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        st.dictionaries(
            st.sampled_from(
                [
                    "schema",
                    "id",
                    "gateway_id",
                    "action",
                    "args",
                    "issued_at_ms",
                    "expires_at_ms",
                    "nonce",
                    "alg",
                    "sig",
                ]
            ),
            st.one_of(
                st.none(),
                st.integers(),
                st.text(max_size=20),
                st.booleans(),
                st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
            ),
        ).map(lambda d: json.dumps(d).encode()),
    )
)
async def test_fuzzed_commands_never_crash_and_never_run(
    target: BuildingTarget, outbox: AsyncOutbox, payload: bytes
) -> None:
    r = await processor(target, outbox).handle(payload)
    assert r.outcome is CommandOutcome.REJECTED
    assert not target.restarted and target.values[("wm-1", "valve")] is False


async def test_commands_over_mqtt(
    broker: MosquittoBroker,
    outbox: AsyncOutbox,
    consumer: PlatformConsumer,
    target: BuildingTarget,
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "cmd.key"
    key_file.write_text(KEY.hex())
    cfg = upstream(broker, commands={"enabled": True, "hmac_key_file": str(key_file)})
    topic = f"citynerve/{GW}/cmd"
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=target.inventory, commands=target) as up:
        await wait_for(lambda: _connected(up))
        await consumer.wait_connected()
        good = SIGNER.command(GW, "write_point", {"device_id": "wm-1", "point": "valve", "value": True})
        await consumer.publish(topic, CommandSigner.payload(good))
        await consumer.publish(topic, CommandSigner.payload(good))  # the same command again
        replay = SIGNER.sign({**good, "id": "another-id"})  # a new id on a used nonce
        await consumer.publish(topic, CommandSigner.payload(replay))
        await consumer.publish(topic, b"rm -rf /")
        await wait_for(lambda: _results(consumer, 4))
        results = await consumer.query(lambda s: s.results(GW))
        assert up.snapshot().commands_accepted == 1
    by = [(r["command_id"], r["outcome"], r["reason"]) for r in results]
    assert by.count((good["id"], "ok", None)) == 2  # idempotent by id: run once, first outcome twice
    assert ("another-id", "rejected", "replayed") in by
    assert (None, "rejected", "malformed") in by
    assert target.values[("wm-1", "valve")] is True


async def _connected(up: Uplink) -> bool:
    return up.snapshot().connected


async def _results(consumer: PlatformConsumer, n: int) -> bool:
    return len(await consumer.query(lambda s: s.results(GW))) >= n


def _cli_command(broker: MosquittoBroker, key_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "citynerve.hil.platform",
            "command",
            "--broker",
            broker.url,
            "--gateway",
            GW,
            "--hmac-key-file",
            str(key_file),
            *args,
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_platform_cli_command(
    broker: MosquittoBroker, outbox: AsyncOutbox, target: BuildingTarget, tmp_path: Path
) -> None:
    key_file = tmp_path / "cmd.key"
    key_file.write_text(KEY.hex())
    cfg = upstream(broker, commands={"enabled": True, "hmac_key_file": str(key_file)})
    async with Uplink(cfg, gateway_id=GW, outbox=outbox, inventory=target.inventory, commands=target) as up:
        await wait_for(lambda: _connected(up))
        ok = await asyncio.to_thread(
            _cli_command, broker, key_file, "read_point", "device_id=wm-1", "point=flow"
        )
        bad = await asyncio.to_thread(
            _cli_command, broker, key_file, "read_point", "device_id=wm-1", "point=x"
        )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["result"]["value"] == 12.5
    assert bad.returncode == 1 and json.loads(bad.stdout)["reason"] == "unknown_point"


@pytest.mark.parametrize(
    ("domain", "value", "ok"),
    [
        ({"type": "integer", "min": -32768, "max": 32767}, 215, True),
        ({"type": "integer", "min": -32768, "max": 32767}, 40000, False),
        ({"type": "integer", "min": 0, "max": 10}, 2.5, False),
        ({"type": "integer", "min": 0, "max": 10}, True, False),
        ({"type": "boolean"}, False, True),
        ({"type": "boolean"}, 0, False),
        ({"type": "number", "min": -1.5, "max": 1.5}, 1.5, True),
        ({"type": "number", "min": -1.5, "max": 1.5}, -1.6, False),
        ({"type": "string", "enum": ["open", "close"]}, "open", True),
        ({"type": "string", "enum": ["open", "close"]}, "ajar", False),
        ({"type": "string", "max_length": 4}, "abcde", False),
    ],
)
def test_value_domain_check(domain: dict[str, Any], value: Value, ok: bool) -> None:
    assert (domain_problem(domain, value) is None) is ok


def test_value_domain_problems_read_as_english() -> None:
    # A signed write of True or "12" to a uint16 point was answered "a integer is required".
    integer = {"type": "integer", "min": 0, "max": 65535}
    assert domain_problem(integer, True) == domain_problem(integer, "12") == "a whole number is required"
    assert domain_problem({"type": "number"}, "1.5") == "a number is required"


async def test_a_write_outside_the_domain_is_bad_value(outbox: AsyncOutbox) -> None:
    class DomainTarget(BuildingTarget):
        def point_info(self, device_id: str, point: str) -> PointInfo | None:
            info = super().point_info(device_id, point)
            return info and PointInfo(info.exists, info.writable, {"type": "boolean"})

    target = DomainTarget()
    r = await processor(target, outbox).handle(
        raw(cmd("write_point", {"device_id": "wm-1", "point": "valve", "value": 7}))
    )
    assert r.reason is RejectReason.BAD_VALUE and "boolean" in r.detail
    assert target.values[("wm-1", "valve")] is False
