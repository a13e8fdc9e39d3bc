"""Permission classes per command key, the allowlisted diagnostics, the bounded log level, the
chunked log tail and the reboot hook (a test double subclassing the real HostControl: a test never
reboots the machine). Commands are real HMAC-signed commands through the real CommandProcessor."""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.alarms import ActiveAlarms
from citynerve.gateway.api import ConfigError
from citynerve.gateway.fleet import CHUNK_BYTES, HostControl, LogLevel, LogRing, remote_actions
from citynerve.gateway.operator import OperatorControls
from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import (
    CommandOutcome,
    CommandProcessor,
    JsonV1Encoding,
    NonceCache,
    RejectReason,
)
from citynerve.gateway.uplink.config import CommandsConfig
from citynerve.gateway.uplink.keys import load_key_ring
from citynerve.gateway.uplink.permissions import LEGACY_PERMISSIONS, Permission
from citynerve.hil.platform import CommandSigner
from tests.rules.conftest import dev, engine
from tests.uplink.conftest import wait_for
from tests.uplink.test_commands import BuildingTarget

GW = "gw-perm"
OPS_KEY = bytes.fromhex("11" * 32)
CENTRE_KEY = bytes.fromhex("22" * 32)


class RecordingHost(HostControl):
    """The real interface with the machine left alone: records the reboot it was asked for."""

    def __init__(self) -> None:
        super().__init__(("true",))
        self.reboots = 0

    def reboot(self) -> None:
        self.reboots += 1


class Runtime:
    """The few figures diagnostics read, as the runtime answers them (citynerve.gateway.fleet.Diagnosable)."""

    def __init__(self, outbox: AsyncOutbox) -> None:
        self.outbox = outbox
        self.restarts: list[float] = []

    async def store_stats(self) -> dict[str, Any]:
        return (await self.outbox.stats()).to_dict()

    def bus_stats(self) -> list[dict[str, Any]]:
        return [
            {
                "id": "rs485-1",
                "counters": {"transactions": 10, "errors": 2},
                "devices": [
                    {"id": "m1", "online": True, "errors": 0, "last_error": None},
                    {"id": "m2", "online": False, "errors": 2, "last_error": "timeout", "last_error_ts": 1.0},
                ],
            }
        ]

    def uplink_state(self) -> dict[str, Any] | None:
        return None

    async def uplink_probe(self, destination: str | None = None) -> list[dict[str, Any]]:
        return []

    def request_restart(self, delay_s: float) -> None:
        self.restarts.append(delay_s)


def key_files(tmp_path: Path) -> CommandsConfig:
    (tmp_path / "ops.key").write_text(OPS_KEY.hex())
    (tmp_path / "centre.key").write_text(CENTRE_KEY.hex())
    for f in ("ops.key", "centre.key"):
        (tmp_path / f).chmod(0o600)
    return CommandsConfig.model_validate(
        {
            "enabled": True,
            "keys": [
                {
                    "id": "district-ops",
                    "hmac_key_file": str(tmp_path / "ops.key"),
                    "classes": ["read", "operate"],
                },
                {
                    "id": "ops-centre",
                    "hmac_key_file": str(tmp_path / "centre.key"),
                    "classes": ["read", "operate", "configure", "reboot"],
                },
            ],
        }
    )


async def setup(
    tmp_path: Path, outbox: AsyncOutbox
) -> tuple[CommandProcessor, RecordingHost, LogRing, Runtime]:
    rules = engine([], [dev("d1")])
    ops = OperatorControls(
        store=outbox,
        alarms=ActiveAlarms(),
        events=lambda e: None,
        devices=lambda: rules.devices,
        rules=lambda: rules,
        action_ids=set,
    )
    host, ring, runtime = RecordingHost(), LogRing(), Runtime(outbox)
    actions = remote_actions(operator=ops, gateway=runtime, ring=ring, level=LogLevel(), host=host)
    proc = CommandProcessor(
        gateway_id=GW,
        target=BuildingTarget(),
        verifier=load_key_ring(key_files(tmp_path)),
        nonces=NonceCache(outbox),
        decode=JsonV1Encoding(topic_prefix="citynerve", gateway_id=GW).decode_command,
        resend_inventory=_nothing,
        enabled=True,
        extra_actions=actions,
    )
    return proc, host, ring, runtime


async def _now(value: bool) -> bool:
    return value


async def _nothing() -> None:
    return None


OPS = CommandSigner(hmac_key=OPS_KEY)
CENTRE = CommandSigner(hmac_key=CENTRE_KEY)


async def send(
    proc: CommandProcessor, signer: CommandSigner, action: str, args: dict[str, Any] | None = None
) -> Any:
    return await proc.handle(CommandSigner.payload(signer.command(GW, action, args or {})))


async def test_a_district_operators_key_cannot_configure_and_the_answer_says_why(tmp_path: Path) -> None:
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        proc, host, _, _ = await setup(tmp_path, outbox)
        r = await send(proc, OPS, "set_log_level", {"level": "debug", "for_s": 60})
        assert (r.outcome, r.reason) == (CommandOutcome.REJECTED, RejectReason.NOT_PERMITTED)
        assert (
            r.detail
            == "set_log_level needs the configure permission; key 'district-ops' grants operate, read"
        )
        r = await send(proc, OPS, "reboot")
        assert r.reason is RejectReason.NOT_PERMITTED and "reboot permission" in r.detail
        # operate and read are granted
        assert (await send(proc, OPS, "set_away", {"device_id": "d1"})).outcome is CommandOutcome.OK
        assert (await send(proc, OPS, "read_point", {"device_id": "wm-1", "point": "flow"})).outcome is (
            CommandOutcome.OK
        )
        # the same command with the ops centre's key is carried out
        r = await send(proc, CENTRE, "set_log_level", {"level": "debug", "for_s": 60})
        assert r.outcome is CommandOutcome.OK and r.result["reverts_to"]
        logging.getLogger().setLevel(logging.WARNING)
        assert host.reboots == 0


async def test_key_id_picks_the_key_and_a_wrong_key_id_does_not_verify(tmp_path: Path) -> None:
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        proc, _, _, _ = await setup(tmp_path, outbox)
        named = OPS.command(GW, "diag_store", key_id="district-ops")
        assert (await proc.handle(CommandSigner.payload(named))).outcome is CommandOutcome.OK
        lying = OPS.command(GW, "diag_store", key_id="ops-centre")  # signed by ops, names the centre
        assert (await proc.handle(CommandSigner.payload(lying))).reason is RejectReason.BAD_SIGNATURE


async def test_reboot_behind_its_own_permission_runs_the_hook_after_the_answer(tmp_path: Path) -> None:
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        proc, host, _, runtime = await setup(tmp_path, outbox)
        r = await send(proc, CENTRE, "reboot")
        assert r.outcome is CommandOutcome.OK and host.reboots == 0  # answered first
        await wait_for(lambda: _now(host.reboots == 1))
        assert (await send(proc, OPS, "restart_service")).outcome is CommandOutcome.OK
        assert runtime.restarts == [1.0]


async def test_diagnostics_answer_on_the_result(tmp_path: Path) -> None:
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        proc, _, _, _ = await setup(tmp_path, outbox)
        store = await send(proc, OPS, "diag_store")
        assert "lanes" in store.result
        buses = await send(proc, OPS, "diag_buses")
        assert buses.result == {"buses": [{"id": "rs485-1", "counters": {"transactions": 10, "errors": 2}}]}
        errors = await send(proc, OPS, "diag_errors")
        assert [d["id"] for d in errors.result["devices"]] == ["m2"]
        assert errors.result["devices"][0]["last_error"] == "timeout"


async def test_log_tail_is_chunked_with_the_hash_of_the_whole(tmp_path: Path) -> None:
    async with AsyncOutbox(tmp_path / "o.db") as outbox:
        proc, _, ring, _ = await setup(tmp_path, outbox)
        lg = logging.getLogger("citynerve.test.tail")
        lg.addHandler(ring)
        try:
            for i in range(400):
                lg.warning("line %d password=hunter2 %s", i, "x" * 60)
        finally:
            lg.removeHandler(ring)
        r = await send(proc, OPS, "log_tail", {"max_bytes": 20_000})
        assert r.outcome is CommandOutcome.OK
        assert len(r.parts) == r.result["count"] == -(-20_000 // CHUNK_BYTES)
        data = b"".join(base64.b64decode(p["data"]) for p in r.parts)
        assert len(data) == r.result["bytes"] == 20_000
        assert hashlib.sha256(data).hexdigest() == r.result["sha256"]
        assert b"line 399" in data
        bad = await send(proc, OPS, "log_tail", {"max_bytes": 10**9})  # bounded
        assert bad.reason is RejectReason.BAD_VALUE


async def test_raised_log_level_reverts_by_itself() -> None:
    root = logging.getLogger()
    before = root.level
    level = LogLevel()
    level.raise_for("debug", 0.2)
    assert root.level == logging.DEBUG
    await wait_for(lambda: _now(root.level == before))


def test_single_key_configs_keep_every_class_but_reboot(tmp_path: Path) -> None:
    (tmp_path / "k").write_text(OPS_KEY.hex())
    (tmp_path / "k").chmod(0o600)
    ring = load_key_ring(
        CommandsConfig.model_validate({"enabled": True, "hmac_key_file": str(tmp_path / "k")})
    )
    assert [(k.id, k.classes) for k in ring.keys] == [("platform", LEGACY_PERMISSIONS)]
    assert Permission.REBOOT not in LEGACY_PERMISSIONS
    granted = CommandsConfig.model_validate(
        {"enabled": True, "hmac_key_file": str(tmp_path / "k"), "classes": ["read", "reboot"]}
    )
    assert load_key_ring(granted).keys[0].classes == {Permission.READ, Permission.REBOOT}


@pytest.mark.parametrize(
    "table",
    [
        {"enabled": True, "keys": [{"id": "a", "classes": ["read"]}]},  # no key file
        {"enabled": True, "keys": [{"id": "a", "hmac_key_file": "/k", "classes": []}]},  # no class
        {"enabled": True, "keys": [{"id": "a", "hmac_key_file": "/k", "classes": ["admin"]}]},
        {
            "enabled": True,
            "hmac_key_file": "/k",
            "keys": [{"id": "platform", "hmac_key_file": "/k2", "classes": ["read"]}],
        },
    ],
)
def test_bad_key_tables_are_config_errors(table: dict[str, Any]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        CommandsConfig.model_validate(table)


def test_unreadable_key_file_names_its_key_path(tmp_path: Path) -> None:
    cfg = CommandsConfig.model_validate(
        {
            "enabled": True,
            "keys": [{"id": "a", "hmac_key_file": str(tmp_path / "missing"), "classes": ["read"]}],
        }
    )
    with pytest.raises(ConfigError) as err:
        load_key_ring(cfg)
    issue = err.value.issues[0]
    assert (issue.path, issue.subject) == ("upstream.commands.keys[0].hmac_key_file", "a")
