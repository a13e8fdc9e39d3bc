"""A command-key rotation acts on the keys of the destination that carries commands, and only
when it comes through that destination: an in-process gateway with two JSON v1 destinations on a
real Mosquitto (`legacy` first: it carries commands; `city`, where the fleet client talks), each
with its own key under the same id `ops-centre`.

`rotate_command_key` through `city`, signed with `city`'s key, rotated `legacy`'s key of that id:
`legacy`'s platform lost its commands (its key was replaced by one it never had) and `city` kept
its old key, although its platform was told "ok". A key id unknown to the command destination
ended in an untyped internal error (StopIteration)."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from citynerve.gateway.config import load_config
from citynerve.gateway.runtime import Gateway
from citynerve.gateway.uplink import Uplink
from citynerve.hil.platform import CommandSigner, MosquittoBroker
from citynerve.hil.platform.fleet import FleetClient
from citynerve.hil.sim.modbus import ModbusBuilding
from tests.fieldtools.conftest import gateway_toml, run_gateway, wait_for
from tests.fleet.test_remoteconfig_destinations import destinations

GW = "gw-test-0001"
LEGACY_KEY = bytes.fromhex("42" * 32)
CITY_KEY = bytes.fromhex("43" * 32)
NEW_KEY = bytes.fromhex("44" * 32)


def _key(path: Path, key: bytes) -> Path:
    path.write_text(key.hex())
    path.chmod(0o600)
    return path


def platform(broker: MosquittoBroker, key: bytes, prefix: str = "citynerve") -> FleetClient:
    """A destination's platform: its own key (id `ops-centre`), its own topic prefix."""
    return FleetClient(
        broker.host, broker.port, CommandSigner(hmac_key=key), key_id="ops-centre", prefix=prefix
    )


ROTATE = {"alg": "hmac-sha256", "key": base64.b64encode(NEW_KEY).decode(), "overlap_s": 0}


@contextlib.asynccontextmanager
async def _two_centres(
    short_dir: Path, *, legacy_commands: bool = True
) -> AsyncIterator[tuple[Gateway, MosquittoBroker]]:
    """The gateway running with `legacy` then `city`, each its own key, both connected."""
    broker = MosquittoBroker(workdir=short_dir)
    broker.start()
    legacy_key = _key(short_dir / "legacy.key", LEGACY_KEY)
    city_key = _key(short_dir / "city.key", CITY_KEY)
    try:
        async with ModbusBuilding() as building:
            host, port = building.endpoint
            extra = destinations(broker, legacy_key, legacy=True, city=True, city_key=city_key)
            if not legacy_commands:
                extra = extra.replace(
                    "[upstream.commands]\nenabled = true", "[upstream.commands]\nenabled = false", 1
                )
            path = short_dir / "gateway.toml"
            path.write_text(gateway_toml(host, port, extra=extra))
            async with run_gateway(load_config(path)) as gw:
                await wait_for(
                    lambda: len(gw.uplinks) == 2 and all(u.snapshot().connected for u in gw.uplinks),
                    timeout_s=20,
                )
                yield gw, broker
    finally:
        broker.close()


async def test_a_key_rotation_through_another_destination_is_refused_and_rotates_nothing(
    short_dir: Path,
) -> None:
    async with (
        _two_centres(short_dir) as (gw, broker),
        platform(broker, CITY_KEY) as city,
        platform(broker, LEGACY_KEY, prefix="legacy") as legacy,
    ):
        assert gw.uplink is not None and gw.uplink.destination == "legacy"
        uplinks = {u.destination: u for u in gw.uplinks if isinstance(u, Uplink)}
        assert (await city.send(GW, "diag_certs"))["outcome"] == "ok"  # city's key is city's own

        out = await city.send(GW, "rotate_command_key", ROTATE)
        assert out["outcome"] == "rejected" and out["reason"] == "not_permitted", out
        assert "through destination 'legacy'" in out["detail"], out

        # nothing rotated: each platform's key still commands through its own destination
        assert (await legacy.send(GW, "diag_certs"))["outcome"] == "ok"
        assert (await city.send(GW, "diag_certs"))["outcome"] == "ok"
        ring = uplinks["legacy"].key_ring
        assert ring is not None and [k.id for k in ring.keys] == ["ops-centre"]

        # through the command destination, with its own key: rotated there
        out = await legacy.send(GW, "rotate_command_key", ROTATE)
        assert out["outcome"] == "ok", out
        legacy.signer = CommandSigner(hmac_key=NEW_KEY)
        assert (await legacy.send(GW, "diag_certs"))["outcome"] == "ok"
        assert (await city.send(GW, "diag_certs"))["outcome"] == "ok"  # city's key untouched


async def test_a_first_destination_with_commands_off_does_not_hold_the_keys(short_dir: Path) -> None:
    # `legacy` first but with commands off: it was the command destination all the same, so every
    # key rotation (and update) through `city`, the only platform that can send commands, was
    # refused "through destination 'legacy'", which takes none.
    async with (
        _two_centres(short_dir, legacy_commands=False) as (gw, broker),
        platform(broker, CITY_KEY) as city,
    ):
        assert gw.uplink is not None and gw.uplink.destination == "city"
        assert (await city.send(GW, "rotate_command_key", ROTATE))["outcome"] == "ok"
        city.signer = CommandSigner(hmac_key=NEW_KEY)
        assert (await city.send(GW, "diag_certs"))["outcome"] == "ok"
