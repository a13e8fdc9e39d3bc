"""Platform side of fleet operations: send signed operator, diagnostic and service commands to a
gateway and collect the answer, reassembling chunked uploads (log tails) and checking their hash.

    async with FleetClient(host, port, signer, key_id="district-ops") as fleet:
        result = await fleet.send("gw-1", "set_away", {"device_id": "wm-12", "for_s": 86400})
        log_text = await fleet.fetch_upload("gw-1", "log_tail", {"max_bytes": 65536})
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import aiomqtt

from citynerve.hil.platform.commands import CommandSigner


class UploadError(Exception):
    """A chunked upload arrived incomplete or its SHA-256 does not match."""


class FleetClient:
    """One MQTT connection for sending commands to many gateways and receiving their results."""

    def __init__(
        self,
        host: str,
        port: int,
        signer: CommandSigner,
        *,
        key_id: str | None = None,
        prefix: str = "citynerve",
        timeout_s: float = 20.0,
    ) -> None:
        self.host, self.port, self.signer, self.key_id = host, port, signer, key_id
        self.prefix, self.timeout_s = prefix, timeout_s
        self._client: aiomqtt.Client | None = None
        self._results: dict[str, list[dict[str, Any]]] = {}
        self._arrived = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FleetClient:
        self._client = aiomqtt.Client(self.host, self.port)
        await self._client.__aenter__()
        await self._client.subscribe(f"{self.prefix}/+/cmd/result", qos=1)
        self._task = asyncio.create_task(self._receive())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    async def _receive(self) -> None:
        assert self._client is not None
        async for m in self._client.messages:
            try:
                body = json.loads(bytes(m.payload))  # type: ignore[arg-type]
            except ValueError:
                continue
            cid = body.get("command_id")
            if isinstance(cid, str):
                async with self._arrived:
                    self._results.setdefault(cid, []).append(body)
                    self._arrived.notify_all()

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish raw bytes (software update chunks) at QoS 1."""
        assert self._client is not None
        await self._client.publish(topic, payload, qos=1)

    async def send_all(
        self, gateway_id: str, action: str, args: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Send one command; return every result message of it (chunks, then the final one)."""
        assert self._client is not None
        cmd = self.signer.command(gateway_id, action, args, key_id=self.key_id)
        await self._client.publish(f"{self.prefix}/{gateway_id}/cmd", CommandSigner.payload(cmd), qos=1)

        def final() -> bool:
            got = self._results.get(cmd["id"], [])
            return any(
                "upload" not in (r.get("result") or {}) or "index" not in (r.get("result") or {}) for r in got
            )

        async with asyncio.timeout(self.timeout_s), self._arrived:
            await self._arrived.wait_for(final)
        return self._results.pop(cmd["id"])

    async def send(
        self, gateway_id: str, action: str, args: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Send one command; return its final result message."""
        return (await self.send_all(gateway_id, action, args))[-1]

    async def fetch_upload(
        self, gateway_id: str, action: str, args: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, Any], bytes]:
        """A chunked upload (log_tail): the final result and the reassembled, hash-checked bytes."""
        results = await self.send_all(gateway_id, action, args)
        final = results[-1]
        if final.get("outcome") != "ok":
            return final, b""
        summary = final["result"]
        chunks = {r["result"]["index"]: r["result"]["data"] for r in results[:-1]}
        if sorted(chunks) != list(range(summary["count"])):
            raise UploadError(f"chunks {sorted(chunks)} of {summary['count']}")
        data = b"".join(base64.b64decode(chunks[i]) for i in range(summary["count"]))
        if hashlib.sha256(data).hexdigest() != summary["sha256"] or len(data) != summary["bytes"]:
            raise UploadError("sha256 or size does not match")
        return final, data
