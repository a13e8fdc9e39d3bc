"""Rotation of a command-verification key: announced by a command signed with the current key,
both verify during the overlap window, then the old one retires; kept across a restart (new ring
from the same config, rotation applied from the store); the same ring verifies end-to-end acks.
Real HMAC-signed commands through the real CommandProcessor and a real outbox."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.api import Event
from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import (
    CommandOutcome,
    CommandProcessor,
    JsonV1Encoding,
    NonceCache,
    RejectReason,
)
from citynerve.gateway.uplink.commands import Caller, RemoteAction
from citynerve.gateway.uplink.keyrotation import MAX_OVERLAP_S, CommandKeyRotation
from citynerve.gateway.uplink.keys import load_key_ring
from citynerve.gateway.uplink.permissions import RETIRING_PERMISSIONS, KeyRing, Permission
from citynerve.gateway.uplink.signing import ACK_SIGNING_CONTEXT
from citynerve.hil.platform import CommandSigner
from tests.fleet.test_permissions import CENTRE, GW, OPS, key_files
from tests.uplink.conftest import wait_for
from tests.uplink.test_commands import BuildingTarget

NEW_KEY = bytes.fromhex("77" * 32)
NEW = CommandSigner(hmac_key=NEW_KEY)


async def _nothing() -> None:
    return None


async def setup(
    tmp_path: Path, outbox: AsyncOutbox, more: dict[str, RemoteAction] | None = None
) -> tuple[CommandProcessor, KeyRing, list[Event]]:
    cfg = key_files(tmp_path)
    ring = load_key_ring(cfg)
    events: list[Event] = []
    rotation = CommandKeyRotation(
        state=outbox,
        directory=tmp_path / "credentials",
        gateway_id=GW,
        config=lambda: cfg,
        events=events.append,
    )
    await rotation.load()
    rotation.attach(ring)
    proc = CommandProcessor(
        gateway_id=GW,
        target=BuildingTarget(),
        verifier=ring,
        nonces=NonceCache(outbox),
        decode=JsonV1Encoding(topic_prefix="citynerve", gateway_id=GW).decode_command,
        resend_inventory=_nothing,
        enabled=True,
        extra_actions={
            "rotate_command_key": RemoteAction(Permission.CONFIGURE, rotation.rotate),
            **(more or {}),
        },
    )
    return proc, ring, events


async def send(
    proc: CommandProcessor, signer: CommandSigner, action: str, args: dict[str, Any] | None = None
) -> Any:
    return await proc.handle(
        CommandSigner.payload(signer.command(GW, action, args or {}, key_id="ops-centre"))
    )


def rotate_args(key: bytes, overlap_s: float) -> dict[str, Any]:
    return {"alg": "hmac-sha256", "key": base64.b64encode(key).decode(), "overlap_s": overlap_s}


async def test_new_key_verifies_old_one_too_until_the_overlap_ends_then_retires(tmp_path: Path) -> None:
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        proc, ring, events = await setup(tmp_path, outbox)
        r = await send(proc, CENTRE, "rotate_command_key", rotate_args(NEW_KEY, 1.5))
        assert r.outcome is CommandOutcome.OK, r
        assert r.result["key_id"] == "ops-centre" and "key" not in r.result  # the secret is never echoed
        assert (await send(proc, NEW, "resend_inventory")).outcome is CommandOutcome.OK
        assert (await send(proc, CENTRE, "resend_inventory")).outcome is CommandOutcome.OK  # overlap
        # end-to-end acks verify with the same ring: the new key signs them too
        ack = NEW.sign_ack({"gateway_id": GW, "lane": "events", "seq": 3, "ts_ms": 1})
        assert ring.verify(ack, context=ACK_SIGNING_CONTEXT)

        async def old_retired() -> bool:
            return (await send(proc, CENTRE, "resend_inventory")).reason is RejectReason.BAD_SIGNATURE

        await wait_for(old_retired, timeout_s=30)
        assert (await send(proc, NEW, "resend_inventory")).outcome is CommandOutcome.OK
        # the other key of the ring is untouched
        ops = await proc.handle(CommandSigner.payload(OPS.command(GW, "resend_inventory", {})))
        assert ops.outcome is CommandOutcome.OK
        audit = [e for e in events if e.kind == "credentials"]
        assert [e.attrs["what"] for e in audit] == ["command_key_rotation"]
        assert audit[0].attrs["who"] == "platform key ops-centre"
        key_file = tmp_path / "credentials" / "command-ops-centre.key"
        assert key_file.stat().st_mode & 0o077 == 0


async def test_a_restart_keeps_the_new_key_and_what_is_left_of_the_overlap(tmp_path: Path) -> None:
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        proc, _, _ = await setup(tmp_path, outbox)
        r = await send(proc, CENTRE, "rotate_command_key", rotate_args(NEW_KEY, 3600))
        assert r.outcome is CommandOutcome.OK
    async with AsyncOutbox(tmp_path / "o.db") as outbox:  # the gateway again, ring made from config
        proc, ring, _ = await setup(tmp_path, outbox)
        assert (await send(proc, NEW, "resend_inventory")).outcome is CommandOutcome.OK
        assert (await send(proc, CENTRE, "resend_inventory")).outcome is CommandOutcome.OK
        left = ring.retiring()["ops-centre"] - time.monotonic()
        assert 3500 < left <= 3600
    # provisioned again on site (the configured key file changed): the rotation is dropped
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        cfg = key_files(tmp_path)
        (tmp_path / "centre.key").write_text("88" * 32)
        ring = load_key_ring(cfg)
        rotation = CommandKeyRotation(
            state=outbox,
            directory=tmp_path / "credentials",
            gateway_id=GW,
            config=lambda: cfg,
            events=[].append,
        )
        await rotation.load()
        rotation.attach(ring)
        fresh = CommandSigner(hmac_key=bytes.fromhex("88" * 32)).command(GW, "resend_inventory", {})
        assert ring.verify(fresh) and not ring.verify(NEW.command(GW, "resend_inventory", {}))


async def test_bad_rotations_are_refused(tmp_path: Path) -> None:
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        proc, _, _ = await setup(tmp_path, outbox)
        r = await send(proc, CENTRE, "rotate_command_key", rotate_args(b"short", 60))
        assert r.reason is RejectReason.BAD_VALUE and "16 bytes" in r.detail
        r = await send(proc, CENTRE, "rotate_command_key", {**rotate_args(NEW_KEY, 60), "alg": "ed25519"})
        assert r.reason is RejectReason.BAD_VALUE
        r = await send(proc, CENTRE, "rotate_command_key", rotate_args(NEW_KEY, 40 * 86400))
        assert r.reason is RejectReason.BAD_VALUE and "overlap_s" in r.detail
        # a district operator's key lacks configure: it cannot rotate even its own key
        cmd = OPS.command(GW, "rotate_command_key", rotate_args(NEW_KEY, 60), key_id="district-ops")
        r = await proc.handle(CommandSigner.payload(cmd))
        assert r.reason is RejectReason.NOT_PERMITTED
        assert (await send(proc, CENTRE, "resend_inventory")).outcome is CommandOutcome.OK


async def test_an_ed25519_key_rotates_with_its_public_key_only(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from citynerve.gateway.uplink.config import CommandsConfig

    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    (tmp_path / "noc.pub").write_bytes(old.public_key().public_bytes(*raw))
    cfg = CommandsConfig.model_validate(
        {
            "enabled": True,
            "keys": [
                {"id": "noc", "ed25519_public_key_file": str(tmp_path / "noc.pub"), "classes": ["configure"]}
            ],
        }
    )
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        ring = load_key_ring(cfg)
        rotation = CommandKeyRotation(
            state=outbox,
            directory=tmp_path / "credentials",
            gateway_id=GW,
            config=lambda: cfg,
            events=[].append,
        )
        await rotation.load()
        rotation.attach(ring)
        proc = CommandProcessor(
            gateway_id=GW,
            target=BuildingTarget(),
            verifier=ring,
            nonces=NonceCache(outbox),
            decode=JsonV1Encoding(topic_prefix="citynerve", gateway_id=GW).decode_command,
            resend_inventory=_nothing,
            enabled=True,
            extra_actions={"rotate_command_key": RemoteAction(Permission.CONFIGURE, rotation.rotate)},
        )
        old_signer, new_signer = CommandSigner(ed25519_key=old), CommandSigner(ed25519_key=new)
        public = base64.b64encode(new.public_key().public_bytes(*raw)).decode()
        args = {"alg": "ed25519", "key": public, "overlap_s": 0}
        r = await proc.handle(CommandSigner.payload(old_signer.command(GW, "rotate_command_key", args)))
        assert r.outcome is CommandOutcome.OK, r
        # overlap 0: the old key retires at once, the new one verifies commands and acks
        ok = await proc.handle(CommandSigner.payload(new_signer.command(GW, "rotate_command_key", args)))
        assert ok.outcome is CommandOutcome.OK
        stale = await proc.handle(CommandSigner.payload(old_signer.command(GW, "rotate_command_key", args)))
        assert stale.reason is RejectReason.BAD_SIGNATURE
        assert ring.verify(new_signer.sign_ack({"gateway_id": GW, "seq": 1}), context=ACK_SIGNING_CONTEXT)


async def test_the_retiring_key_may_look_and_operate_but_never_configure_update_or_reboot(
    tmp_path: Path,
) -> None:
    """Whoever still holds the old key during the overlap cannot rotate the platform's new key
    away (or change, update or reboot the gateway): `retiring_key`. Reads, writes and acks go on."""
    ran: list[str] = []

    def action(name: str, permission: Permission) -> RemoteAction:
        async def handler(args: dict[str, Any], caller: Any) -> dict[str, Any]:
            ran.append(name)
            return {}

        return RemoteAction(permission, handler)

    # What the ops-centre key grants beyond reading and operating (update it lacks: not_permitted).
    classes = {f"try_{p.value}": p for p in (Permission.CONFIGURE, Permission.REBOOT)}
    assert {Permission.READ, Permission.OPERATE} == RETIRING_PERMISSIONS
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        proc, ring, _ = await setup(tmp_path, outbox, {n: action(n, p) for n, p in classes.items()})
        evil = bytes.fromhex("33" * 32)
        assert (await send(proc, CENTRE, "rotate_command_key", rotate_args(NEW_KEY, 3600))).outcome is (
            CommandOutcome.OK
        )
        r = await send(proc, CENTRE, "rotate_command_key", rotate_args(evil, 0))
        assert r.reason is RejectReason.RETIRING_KEY and "sign with its new key" in r.detail, r
        for name in classes:
            assert (await send(proc, CENTRE, name)).reason is RejectReason.RETIRING_KEY, name
        assert ran == []
        # The platform's new key is still the key, and may do all of it.
        assert (await send(proc, NEW, "resend_inventory")).outcome is CommandOutcome.OK
        for name in classes:
            assert (await send(proc, NEW, name)).outcome is CommandOutcome.OK, name
        assert sorted(ran) == sorted(classes)
        # The old key still reads, operates and signs acks until the overlap ends.
        assert (await send(proc, CENTRE, "resend_inventory")).outcome is CommandOutcome.OK
        write = {"device_id": "wm-1", "point": "valve", "value": True}
        assert (await send(proc, CENTRE, "write_point", write)).outcome is CommandOutcome.OK
        ack = CENTRE.sign_ack({"gateway_id": GW, "lane": "events", "seq": 3, "ts_ms": 1})
        assert ring.verify(ack, context=ACK_SIGNING_CONTEXT)
        assert not ring.verify(CommandSigner(hmac_key=evil).command(GW, "resend_inventory", {}))


# -- a box without RTC: the rotation restored before NTP has set the wall clock -------------------

T_REAL = 1_767_000_000.0  # the real time of the rotation


@pytest.mark.parametrize(
    ("boot_wall", "synced_wall", "left_after_sync"),
    [
        (0.0, T_REAL + 86400, None),  # booted in 1970; a day later by the real clock: over
        (T_REAL + 60, T_REAL + 1800, 1800.0),  # fake-hwclock's saved time; half an hour later
    ],
)
async def test_an_overlap_restored_before_the_clock_is_synced_is_capped_then_follows_its_wall_end(
    tmp_path: Path, boot_wall: float, synced_wall: float, left_after_sync: float | None
) -> None:
    cfg = key_files(tmp_path)
    wall = [T_REAL]

    async def started(outbox: AsyncOutbox) -> tuple[CommandKeyRotation, KeyRing]:
        rotation = CommandKeyRotation(
            state=outbox,
            directory=tmp_path / "credentials",
            gateway_id=GW,
            config=lambda: cfg,
            events=[].append,
            wall=lambda: wall[0],
        )
        await rotation.load()
        ring = load_key_ring(cfg)
        rotation.attach(ring)
        return rotation, ring

    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        rotation, _ = await started(outbox)
        await rotation.rotate(rotate_args(NEW_KEY, 3600), Caller("ops-centre", "c1"))
    wall[0] = boot_wall  # the restart, before NTP
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        rotation, ring = await started(outbox)
        old_signed = CENTRE.command(GW, "write_point", {}, key_id="ops-centre")
        left = ring.retiring()["ops-centre"] - time.monotonic()
        assert left <= MAX_OVERLAP_S  # never 56 years
        wall[0] = synced_wall  # NTP stepped the clock; the runtime learns it is synchronised
        rotation.rearm()
        key = ring.identify(old_signed)
        if left_after_sync is None:
            assert ring.retiring() == {} and key is None  # the old key writes no more
            assert rotation.status()["ops-centre"]["overlap_left_s"] == 0.0
        else:
            assert key is not None and key.retiring
            left = ring.retiring()["ops-centre"] - time.monotonic()
            assert left_after_sync - 60 < left <= left_after_sync
        assert ring.identify(NEW.command(GW, "write_point", {}, key_id="ops-centre")) is not None
