"""A chunked answer (config_get, log_tail, support_bundle) is not kept whole: its parts are gone once
sent. The same signed command delivered again (the platform resends after its answer was lost) used
to get `ok` with the summary (`count: N`, a sha256) and none of the N chunks; it is now rejected
`repeat_chunked`, saying to send a new id.

Real Mosquitto, real outbox, the real uplink and processor; the action is the test's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiomqtt

from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import Uplink
from citynerve.gateway.uplink.commands import Caller, Chunked, RemoteAction
from citynerve.gateway.uplink.permissions import Permission
from citynerve.hil.platform import CommandSigner, MosquittoBroker
from tests.uplink.conftest import (
    INVENTORY,
    PLATFORM_SIGNER,
    platform_key_file,
    upstream,
    validate_message,
    wait_for,
)
from tests.uplink.test_commands import BuildingTarget

GW = "gw-chunks"


async def bundle(args: dict[str, Any], caller: Caller) -> Chunked:
    parts = tuple({"upload": caller.command_id, "index": i, "data": f"part {i}"} for i in range(3))
    return Chunked({"upload": caller.command_id, "count": 3}, parts)


async def answers(platform: aiomqtt.Client, command_id: str) -> list[dict[str, Any]]:
    """The results of one delivery: its chunks, then its final answer (the one without `index`)."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        async for msg in platform.messages:
            body = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
            if body["command_id"] == command_id:
                validate_message("cmd/result", body)
                got.append(body)
                if "index" not in (body["result"] or {}):
                    return got
    raise AssertionError("unreachable")


async def test_a_repeat_of_a_chunked_command_is_rejected_not_answered_without_its_chunks(
    broker: MosquittoBroker, outbox: AsyncOutbox
) -> None:
    cfg = upstream(broker, commands={"enabled": True, "hmac_key_file": str(platform_key_file())})
    actions: Mapping[str, RemoteAction] = {"bundle": RemoteAction(Permission.READ, bundle)}
    async with (
        Uplink(
            cfg,
            gateway_id=GW,
            outbox=outbox,
            inventory=lambda: INVENTORY,
            commands=BuildingTarget(),
            actions=actions,
        ) as up,  # fmt: skip
        aiomqtt.Client(broker.host, broker.port) as platform,
    ):
        await wait_for(lambda: _connected(up))
        await platform.subscribe(f"citynerve/{GW}/cmd/result", qos=1)
        command = PLATFORM_SIGNER.command(GW, "bundle")
        await platform.publish(f"citynerve/{GW}/cmd", CommandSigner.payload(command), qos=1)
        first = await answers(platform, command["id"])
        await platform.publish(f"citynerve/{GW}/cmd", CommandSigner.payload(command), qos=1)  # resent
        second = await answers(platform, command["id"])
    assert [m["result"]["index"] for m in first[:-1]] == [0, 1, 2]
    assert (first[-1]["outcome"], first[-1]["result"]) == ("ok", {"upload": command["id"], "count": 3})
    (repeat,) = second  # no chunks, and no summary that promises them
    assert (repeat["outcome"], repeat["reason"], repeat["result"]) == ("rejected", "repeat_chunked", None)
    assert "send a new id" in repeat["detail"]


async def _connected(up: Uplink) -> bool:
    return up.snapshot().connected
