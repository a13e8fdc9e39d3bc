"""A remote config change may not take away the platform's own command key, on a real `citynerve
run`, a real Mosquitto and the reference platform. Until 2026-12-07 a change that dropped the sending
key's `configure` class, removed the key, pointed it at a key file the platform does not hold,
turned commands off on its destination or renamed that destination was confirmed "healthy" (the
destination still connected); afterwards every change back was `not_permitted` or
`bad_signature`, and the box needed a site visit. Now it is refused up front (`bad_value`, naming
the key, the destination and what the change would do), nothing is written, and the platform sends
a change afterwards. A key moved to another file holding the same key, and a rotation in two steps
(add the new key, then remove the old one signed with the new one), are confirmed."""

from __future__ import annotations

import asyncio
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from citynerve.hil.platform import CommandSigner, MosquittoBroker
from citynerve.hil.platform.fleet import FleetClient
from tests.integration.conftest import GatewayProcess
from tests.integration.test_run_fleet import CENTRE_KEY, socket_up, status, until
from tests.integration.test_run_remoteconfig import CONFIRM_S, GW, NEW_DEVICE, connected, write_config

NEW_KEY = bytes.fromhex("66" * 32)


def _keys(tmp: Path, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys[1]["classes"] = ["read", "operate"]
    return keys


def _other_file(tmp: Path, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (tmp / "other.key").write_text("55" * 32)
    (tmp / "other.key").chmod(0o600)
    keys[1]["hmac_key_file"] = str(tmp / "other.key")
    return keys


Patch = Callable[[Path, dict[str, Any]], dict[str, Any]]


def _commands_keys(change: Callable[[Path, list[dict[str, Any]]], list[dict[str, Any]]]) -> Patch:
    def patch(tmp: Path, upstream: dict[str, Any]) -> dict[str, Any]:
        return {"upstream": {"commands": {"keys": change(tmp, upstream["commands"]["keys"])}}}

    return patch


CASES: dict[str, tuple[Patch, str]] = {
    "configure-dropped": (
        _commands_keys(_keys),
        "takes the configure class from key 'ops-centre' (it would grant read, operate)",
    ),
    "key-removed": (_commands_keys(lambda tmp, keys: keys[:1]), "removes key 'ops-centre'"),
    "key-file-elsewhere": (
        _commands_keys(_other_file),
        "points key 'ops-centre' at a file with another key",
    ),
    "commands-off": (
        lambda tmp, up: {"upstream": {"commands": {"enabled": False}}},
        "turns commands off on destination 'default'",
    ),
    "destination-renamed": (
        lambda tmp, up: {"upstream": {"id": "city"}},
        "removes (or renames) destination 'default'",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_change_that_takes_the_senders_key_away_is_refused_and_a_change_back_goes_through(
    case: str, tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    make_patch, what = CASES[case]
    with MosquittoBroker() as broker:
        config = write_config(tmp_path, modbus_peer, broker)
        original = config.read_text()

        async def scenario() -> None:
            gw = gateway_process(config)
            gw.start()
            await until(lambda: socket_up(tmp_path))
            await until(lambda: connected(config))
            async with FleetClient(
                broker.host, broker.port, CommandSigner(hmac_key=CENTRE_KEY), key_id="ops-centre"
            ) as centre:
                patch = json.dumps(make_patch(tmp_path, tomllib.loads(original)["upstream"]))
                out = await centre.apply_config(
                    GW, patch, version="v-lock", mode="patch", confirm_s=CONFIRM_S
                )
                answer = out["answer"]
                assert (out["outcome"], answer["reason"]) == ("rejected", "bad_value"), out
                detail = answer["detail"]
                assert what in detail, detail
                assert "key 'ops-centre' sent it through destination 'default'" in detail, detail
                assert config.read_text() == original
                assert status(config)["config"]["version"] == "local"

                # the platform still configures the gateway: a real change, confirmed
                devices = tomllib.loads(original + NEW_DEVICE)["devices"]
                back = json.dumps({"devices": devices})
                out = await centre.apply_config(GW, back, version="v-back", mode="patch", confirm_s=CONFIRM_S)
                assert out["outcome"] == "confirmed", out
                assert status(config)["config"]["version"] == "v-back"

        asyncio.run(scenario())


def test_a_key_moved_to_its_own_copy_and_a_rotation_in_two_steps_are_confirmed(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    with MosquittoBroker() as broker:
        config = write_config(tmp_path, modbus_peer, broker)
        keys = tomllib.loads(config.read_text())["upstream"]["commands"]["keys"]
        for name, key in (("centre-copy.key", CENTRE_KEY), ("centre-new.key", NEW_KEY)):
            (tmp_path / name).write_text(key.hex())
            (tmp_path / name).chmod(0o600)

        def patch(*entries: dict[str, Any]) -> str:
            return json.dumps({"upstream": {"commands": {"keys": list(entries)}}})

        async def scenario() -> None:
            gateway_process(config).start()
            await until(lambda: socket_up(tmp_path))
            await until(lambda: connected(config))
            old, new = CommandSigner(hmac_key=CENTRE_KEY), CommandSigner(hmac_key=NEW_KEY)
            async with (
                FleetClient(broker.host, broker.port, old, key_id="ops-centre") as centre,
                FleetClient(broker.host, broker.port, new, key_id="ops-centre-2") as rotated,
            ):
                # the same key in another file: the same key material, confirmed
                moved = {**keys[1], "hmac_key_file": str(tmp_path / "centre-copy.key")}
                out = await centre.apply_config(
                    GW, patch(keys[0], moved), version="v-moved", mode="patch", confirm_s=CONFIRM_S
                )
                assert out["outcome"] == "confirmed", out

                # a rotation: the new key first (signed with the old one) ...
                second = {
                    "id": "ops-centre-2",
                    "hmac_key_file": str(tmp_path / "centre-new.key"),
                    "classes": ["read", "operate", "configure"],
                }
                out = await centre.apply_config(
                    GW, patch(keys[0], moved, second), version="v-add", mode="patch", confirm_s=CONFIRM_S
                )
                assert out["outcome"] == "confirmed", out
                # ... then the old one away, signed with the new one
                out = await rotated.apply_config(
                    GW, patch(keys[0], second), version="v-drop", mode="patch", confirm_s=CONFIRM_S
                )
                assert out["outcome"] == "confirmed", out
                devices = json.dumps({"devices": tomllib.loads(config.read_text() + NEW_DEVICE)["devices"]})
                r = await centre.push_config(GW, devices, version="v-old", mode="patch", confirm_s=CONFIRM_S)
                assert r["outcome"] == "rejected", r  # the old key is gone
                out = await rotated.apply_config(
                    GW, devices, version="v-new", mode="patch", confirm_s=CONFIRM_S
                )
                assert out["outcome"] == "confirmed", out

        asyncio.run(scenario())
