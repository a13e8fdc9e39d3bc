"""Platform side of fleet operations: send signed operator, diagnostic and service commands to a
gateway and collect the answer, reassembling chunked uploads (log tails) and checking their hash.

    async with FleetClient(host, port, signer, key_id="district-ops") as fleet:
        result = await fleet.send("gw-1", "set_away", {"device_id": "wm-12", "for_s": 86400})
        log_text = await fleet.fetch_upload("gw-1", "log_tail", {"max_bytes": 65536})
        outcome = await fleet.apply_config("gw-1", toml_text, version="2026-12-04.1")
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

import aiomqtt

from citynerve.hil.platform.commands import CommandSigner


class UploadError(Exception):
    """A chunked upload arrived incomplete or its SHA-256 does not match."""


INLINE_DOCUMENT_BYTES = 8 * 1024  # bigger config documents go in chunks (config_chunk)
CHUNK_BYTES = 8 * 1024  # raw bytes per config_chunk (the gateway's MAX_CHUNK_BYTES)


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

    async def push_config(
        self,
        gateway_id: str,
        document: str,
        *,
        version: str,
        mode: str = "replace",
        confirm_s: float = 120.0,
    ) -> dict[str, Any]:
        """Send a config document (TOML for `replace`, a JSON merge patch for `patch`), in chunks
        when big; return the answer to `config_apply` (`state: pending` when accepted)."""
        data = document.encode("utf-8")
        args: dict[str, Any] = {
            "version": version,
            "mode": mode,
            "confirm_s": confirm_s,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        if len(data) <= INLINE_DOCUMENT_BYTES:
            args["document"] = document
        else:
            upload = uuid.uuid4().hex[:16]
            pieces = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
            for i, piece in enumerate(pieces):
                chunk = {
                    "upload": upload,
                    "index": i,
                    "count": len(pieces),
                    "data": base64.b64encode(piece).decode("ascii"),
                }
                r = await self.send(gateway_id, "config_chunk", chunk)
                if r.get("outcome") != "ok":
                    return r
            args["upload"] = upload
        return await self.send(gateway_id, "config_apply", args)

    async def wait_verdict(self, command_id: str, timeout_s: float) -> dict[str, Any]:
        """The later result of an accepted `config_apply`: `result.state` is `confirmed` or
        `reverted` (with `reason`)."""

        def verdict() -> bool:
            return any(
                (r.get("result") or {}).get("state") in ("confirmed", "reverted")
                for r in self._results.get(command_id, [])
            )

        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(verdict)
        got = self._results.pop(command_id)
        return next(r for r in got if (r.get("result") or {}).get("state") in ("confirmed", "reverted"))

    async def apply_config(
        self,
        gateway_id: str,
        document: str,
        *,
        version: str,
        mode: str = "replace",
        confirm_s: float = 120.0,
        verdict_timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Push a config and wait for its verdict. Returns `{"outcome": confirmed | reverted |
        rejected | unchanged | failed, "answer": ..., "verdict": ...}`."""
        answer = await self.push_config(gateway_id, document, version=version, mode=mode, confirm_s=confirm_s)
        state = (answer.get("result") or {}).get("state")
        if answer.get("outcome") != "ok":
            return {
                "outcome": "rejected" if answer.get("outcome") == "rejected" else "failed",
                "answer": answer,
            }
        if state != "pending":
            return {"outcome": str(state), "answer": answer}
        # A restart-needing change: the gateway restarts, reconnects, checks, then answers.
        wait = verdict_timeout_s if verdict_timeout_s is not None else confirm_s + 90.0
        try:
            final = await self.wait_verdict(answer["command_id"], wait)
        except TimeoutError:
            return {"outcome": "failed", "answer": answer, "verdict": None, "reason": "no verdict"}
        return {"outcome": final["result"]["state"], "answer": answer, "verdict": final}
